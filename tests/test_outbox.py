"""The outbox: leases, retries with backoff, dead letters, per-key order, two claimers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from radbridge.engine import audit
from radbridge.engine.config import QueuePolicy
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import utcnow
from radbridge.engine.outbox import DeliveryResult, Outbox, Outcome
from radbridge.engine.retry import RetryPolicy
from tests.engine_harness import channel, harness

ORDERED = channel(destinations=[{"name": "out", "type": "null",
                                 "queue": {"ordering_key": "patient_id"}}])


def claim(h, *, limit=10, lease=30.0, ordered=False, outbox=None):
    return (outbox or h.outbox).claim("lab", "out", limit=limit, lease_seconds=lease,
                                      ordered=ordered)


def record(h, result):
    h.writer.record(result).result(timeout=10)


def failed(delivery, policy, *, permanent=False):
    return DeliveryResult(delivery, Outcome.FAILED, policy=RetryPolicy(policy),
                          detail="peer said no", permanent=permanent)


def test_a_claimed_delivery_is_leased_and_not_claimed_again(database, tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        h.receive(b"a")
        h.process_all()
        (first,) = claim(h)
        assert first.attempt == 1 and first.content == b"a"
        assert claim(h) == []
        assert h.deliveries()[0].status == DeliveryStatus.IN_FLIGHT


def test_an_expired_lease_makes_the_delivery_due_again(database, tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        h.receive(b"a")
        h.process_all()
        claim(h, lease=0.2)
        other = Outbox(database, "node-b")
        assert claim(h, outbox=other) == []
        time.sleep(0.3)
        (again,) = claim(h, outbox=other)
        assert again.attempt == 2  # the lost attempt counts


def test_sent_is_recorded_with_stage_and_audit(database, tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        message_id = h.receive(b"a", patient_id="P7").message_id
        h.process_all()
        (delivery,) = claim(h)
        record(h, DeliveryResult(delivery, Outcome.SENT, response=b"ACK"))
        (row,) = h.deliveries()
        assert row.status == DeliveryStatus.SENT and row.sent_at is not None
    with database.read() as session:
        (event,) = audit.query(session, audit.AuditQuery(action="delivery.sent"))
    assert event.message_id == message_id and event.patient_id == "P7"


def test_failures_back_off_then_dead_letter_at_the_bound(database, tmp_path):
    policy = QueuePolicy(max_attempts=3, backoff={"initial": 0.05, "max": 0.05, "jitter": 0})
    with harness(database, tmp_path, [channel()]) as h:
        h.receive(b"a")
        h.process_all()
        for attempt in (1, 2):
            (delivery,) = claim(h)
            assert delivery.attempt == attempt
            before = utcnow()
            record(h, failed(delivery, policy))
            (row,) = h.deliveries()
            assert row.status == DeliveryStatus.PENDING and row.last_error == "peer said no"
            assert row.next_attempt_at >= before + timedelta(seconds=0.04)
            assert claim(h) == []  # not due before its backoff
            time.sleep(0.08)
        (delivery,) = claim(h)
        record(h, failed(delivery, policy))
        (row,) = h.deliveries()
        assert row.status == DeliveryStatus.DEAD
    with database.read() as session:
        outcomes = [e.outcome for e in audit.query(
            session, audit.AuditQuery(action="delivery.failed"))]
    assert outcomes == ["dead", "retry", "retry"]


def test_a_permanent_failure_dead_letters_at_once(database, tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        h.receive(b"a")
        h.process_all()
        (delivery,) = claim(h)
        record(h, failed(delivery, QueuePolicy(max_attempts=10), permanent=True))
        assert h.deliveries()[0].status == DeliveryStatus.DEAD


def test_max_age_dead_letters_old_deliveries(database, tmp_path):
    policy = QueuePolicy(max_attempts=100, max_age=0.01, backoff={"initial": 1, "jitter": 0})
    with harness(database, tmp_path, [channel()]) as h:
        h.receive(b"a")
        h.process_all()
        (delivery,) = claim(h)
        record(h, failed(delivery, policy))
        assert h.deliveries()[0].status == DeliveryStatus.DEAD


def test_a_failing_delivery_does_not_block_unrelated_ones(database, tmp_path):
    policy = QueuePolicy(backoff={"initial": 60, "jitter": 0})
    with harness(database, tmp_path, [channel()]) as h:
        h.receive(b"first")
        h.receive(b"second")
        h.process_all()
        first, second = claim(h, limit=2)
        record(h, failed(first, policy))
        record(h, DeliveryResult(second, Outcome.RELEASED))
        (due,) = claim(h)
        assert due.content == b"second"


def test_per_key_order_sends_one_delivery_per_key_at_a_time(database, tmp_path):
    policy = QueuePolicy(backoff={"initial": 60, "jitter": 0})
    with harness(database, tmp_path, [ORDERED]) as h:
        for body, patient in [(b"p1-a", "P1"), (b"p2-a", "P2"), (b"p1-b", "P1"), (b"p1-c", "P1")]:
            h.receive(body, patient_id=patient)
        h.process_all()
        heads = claim(h, ordered=True)
        assert sorted(d.content for d in heads) == [b"p1-a", b"p2-a"]
        p1 = next(d for d in heads if d.patient_id == "P1")
        record(h, failed(p1, policy))  # P1's head waits 60 s: P1 waits, nothing else does
        assert claim(h, ordered=True) == []
        p2 = next(d for d in heads if d.patient_id == "P2")
        record(h, DeliveryResult(p2, Outcome.SENT))
        assert claim(h, ordered=True) == []
        h.receive(b"p3-a", patient_id="P3")
        h.process_all()
        assert [d.content for d in claim(h, ordered=True)] == [b"p3-a"]


def test_ordered_claims_wait_for_earlier_unprocessed_messages(database, tmp_path):
    with harness(database, tmp_path, [ORDERED]) as h:
        h.receive(b"p1-a", patient_id="P1")
        h.process_all()
        h.receive(b"p1-b", patient_id="P1")  # received, not processed yet
        (head,) = claim(h, ordered=True)
        record(h, DeliveryResult(head, Outcome.SENT))
        assert claim(h, ordered=True) == []
        h.process_all()
        assert [d.content for d in claim(h, ordered=True)] == [b"p1-b"]


def test_releasing_own_leases_at_restart(database, tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        h.receive(b"a")
        h.process_all()
        claim(h)
        assert Outbox(database, "node-b").release_own_leases() == 0
        assert h.outbox.release_own_leases() == 1
        (again,) = claim(h)
        assert again.attempt == 2


def test_retry_policy_grows_exponentially_within_bounds():
    policy = RetryPolicy(QueuePolicy(backoff={"initial": 1, "multiplier": 2, "max": 10,
                                              "jitter": 0.5}))
    waits = [policy.wait_seconds(n) for n in range(1, 7)]
    for attempt, wait in enumerate(waits, start=1):
        base = min(10, 2 ** (attempt - 1))
        assert base <= wait <= base + 0.5


@pytest.mark.postgres
def test_two_nodes_claiming_at_once_never_share_a_delivery(pg_url, tmp_path):
    from radbridge.engine.db import Database
    from tests.conftest import reset_postgres

    database = Database(pg_url)
    reset_postgres(database)
    with harness(database, tmp_path, [channel()]) as h:
        for i in range(200):
            h.receive(str(i).encode())
        h.process_all()
        claimed: dict[str, list[int]] = {"a": [], "b": []}

        def drain(name: str) -> None:
            outbox = Outbox(database, f"node-{name}")
            while batch := claim(h, limit=7, outbox=outbox):
                claimed[name] += [d.delivery_id for d in batch]

        threads = [threading.Thread(target=drain, args=(n,)) for n in claimed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    every = claimed["a"] + claimed["b"]
    assert len(every) == len(set(every)) == 200
    assert claimed["a"] and claimed["b"]
    database.dispose()
