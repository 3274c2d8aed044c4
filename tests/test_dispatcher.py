"""Delivery workers: hand-off without a claim, the bound on unrecorded outcomes, and no
second send of a delivery whose outcome is still being recorded.

The destination here is an in-memory fake (our own scheduling logic is under test);
tests/e2e runs the same paths against a real HTTP peer and real processes.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

from radbridge.engine.adapters import SendResult
from radbridge.engine.dispatcher import PREFETCH, DeliveryWorker
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.outbox import DeliveryResult, OutboundDelivery, Outcome
from radbridge.engine.receiver import Inbound
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from tests.engine_harness import channel, harness


class Recorder:
    """A destination that accepts at once and remembers what it got."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        self.sent.append(delivery.delivery_id)
        return SendResult()

    async def close(self) -> None:
        return None


class StalledWriter:
    """An outbox writer whose commits never finish (a store that hangs)."""

    def __init__(self) -> None:
        self.results: list[DeliveryResult] = []
        self.hurried = 0

    def hurry(self) -> None:
        self.hurried += 1

    def record(self, result: DeliveryResult) -> Future[None]:
        self.results.append(result)
        return Future()

    async def recorded(self, result: DeliveryResult) -> None:
        self.results.append(result)
        await asyncio.get_running_loop().create_future()  # never done


async def settle(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


async def test_unrecorded_outcomes_are_bounded_when_the_store_stalls(database, tmp_path):
    config = channel()
    with harness(database, tmp_path, [config]) as h:
        for i in range(40):
            h.receive(str(i).encode())
        h.process_all()
        recorder, writer = Recorder(), StalledWriter()
        worker = DeliveryWorker("lab", config.destinations[0], recorder, h.outbox, writer,
                                poll_interval=0.05)
        task = asyncio.create_task(worker.run())
        await settle(lambda: len(recorder.sent) >= PREFETCH)
        await asyncio.sleep(0.3)
        worker.stop()
        await asyncio.wait_for(task, 5)
    assert len(recorder.sent) == PREFETCH  # concurrency 1 x PREFETCH, then it waits
    assert writer.hurried >= 1  # and asked the writer to commit what it was gathering


async def test_a_delivery_being_recorded_is_not_sent_again(database, tmp_path):
    config = channel(destinations=[{"name": "out", "type": "null", "queue": {"lease": 1}}])
    with harness(database, tmp_path, [config]) as h:
        h.receive(b"once")
        h.process_all()
        recorder, writer = Recorder(), StalledWriter()
        worker = DeliveryWorker("lab", config.destinations[0], recorder, h.outbox, writer,
                                poll_interval=0.05)
        task = asyncio.create_task(worker.run())
        await settle(lambda: len(recorder.sent) == 1)
        # The lease runs out while the outcome is unrecorded, and the worker re-claims it.
        await settle(lambda: h.deliveries()[0].attempts == 2, timeout=10)
        await asyncio.sleep(0.2)  # a second send would have happened by now
        worker.stop()
        await asyncio.wait_for(task, 5)
        (row,) = h.deliveries()
    assert recorder.sent == [row.id]
    assert row.status == DeliveryStatus.IN_FLIGHT and row.attempts == 2  # re-claimed, not re-sent


async def test_fresh_deliveries_reach_the_worker_without_a_claim(database_url, tmp_path,
                                                                 monkeypatch):
    from radbridge.engine import outbox

    claimed: list[int] = []
    original = outbox.Outbox.claim

    def counting_claim(self, *args, **kwargs):
        batch = original(self, *args, **kwargs)
        claimed.extend(d.delivery_id for d in batch)
        return batch

    monkeypatch.setattr(outbox.Outbox, "claim", counting_claim)
    settings = Settings.resolve(data_dir=str(tmp_path / "data"), database_url=database_url,
                                node_id="n1", api_port=0, environ={})
    node = Node(settings, [channel()], poll_interval=0.05)
    await node.start()
    try:
        # Within the worker's hand-off capacity (concurrency x PREFETCH x 2); beyond it the
        # rest waits in the outbox and is claimed, by design.
        for i in range(PREFETCH):
            await node.receive(Inbound(channel="lab", content_type="text/plain", source="t",
                                       content=str(i).encode()))

        def sent() -> int:
            from sqlalchemy import func, select

            from radbridge.engine.models import Delivery
            with node.database.read() as session:
                return session.scalar(select(func.count()).select_from(Delivery).where(
                    Delivery.status == DeliveryStatus.SENT)) or 0

        await settle(lambda: sent() == PREFETCH)
    finally:
        await node.stop()
    assert claimed == []


def test_released_results_put_the_delivery_back_without_counting_an_attempt(database,
                                                                            tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        h.receive(b"x")
        h.process_all()
        (delivery,) = h.outbox.claim("lab", "out", limit=1, lease_seconds=30, ordered=False)
        h.writer.record(DeliveryResult(delivery, Outcome.RELEASED)).result(10)
        (row,) = h.deliveries()
    assert (row.status, row.attempts, row.lease_owner) == (DeliveryStatus.PENDING, 0, None)


async def test_a_delivery_still_being_sent_is_not_sent_again_when_its_lease_runs_out(
        database, tmp_path):
    """A send slower than the lease: the expired lease is claimed back by the same worker,
    which must not start a second send of what it is still sending."""

    class Slow(Recorder):
        async def send(self, delivery: OutboundDelivery) -> SendResult:
            self.sent.append(delivery.delivery_id)
            await asyncio.sleep(2.5)
            return SendResult()

    config = channel(destinations=[{"name": "out", "type": "null",
                                    "queue": {"lease": 1, "concurrency": 2}}])
    with harness(database, tmp_path, [config]) as h:
        h.receive(b"slow")
        h.process_all()
        slow = Slow()
        worker = DeliveryWorker("lab", config.destinations[0], slow, h.outbox, h.writer,
                                poll_interval=0.05)
        task = asyncio.create_task(worker.run())
        await settle(lambda: len(slow.sent) == 1)
        await asyncio.sleep(2.0)  # the lease (1 s) ran out meanwhile; claims kept polling
        assert len(slow.sent) == 1
        await settle(lambda: h.deliveries()[0].status == DeliveryStatus.SENT)
        worker.stop()
        await asyncio.wait_for(task, 5)
        await worker.drain(5)
    assert len(slow.sent) == 1
