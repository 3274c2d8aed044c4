"""The MLLP destination against a real peer (python-hl7's server), and through a node."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from radbridge.engine.adapters import AdapterContext
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import ChannelConfig, MllpDestination
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import Delivery
from radbridge.engine.outbox import OutboundDelivery
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError
from radbridge.interfaces.mllp.sender import AckTimeout, MllpSender
from tests.hl7_support import adt_a01, exchange, frame, msa, running_node
from tests.ris_listener import TestRis


def sender_for(port: int, tmp_path: Path, **options: object) -> MllpSender:
    config = MllpDestination.model_validate({"name": "ris", "type": "mllp", "host": "127.0.0.1",
                                             "port": port, **options})

    async def no_receive(_inbound: object) -> object:
        raise AssertionError("a destination does not receive")

    context = AdapterContext(tmp_path, BlobStore(tmp_path / "blobs"), 1024, no_receive,  # type: ignore[arg-type]
                             Database(f"sqlite:///{tmp_path / 'unused.db'}"))
    return MllpSender(config, context)


def delivery(content: str, number: int = 1) -> OutboundDelivery:
    now = datetime.now(UTC)
    return OutboundDelivery(
        delivery_id=number, message_id=number, message_uid=f"uid{number}", channel="c",
        destination="ris", generation=0, attempt=1, idempotency_key=f"k{number}",
        content_type="application/hl7-v2", content=content.encode(), blob_sha256=None,
        size=len(content), created_at=now, received_at=now)


async def test_aa_returns_the_ack_and_one_connection_carries_every_message(tmp_path):
    with TestRis("AA") as ris:
        sender = sender_for(ris.port, tmp_path)
        results = [await sender.send(delivery(adt_a01(f"OUT-{i}"), i)) for i in range(5)]
        await sender.close()
    assert [r.detail for r in results] == ["AA"] * 5
    assert msa(results[0].response.decode())[1:3] == ["AA", "OUT-0"]
    assert ris.control_ids() == [f"OUT-{i}" for i in range(5)]
    assert ris.connections == 1


@pytest.mark.parametrize(("answer", "options", "error"), [
    ("AE", {}, PermanentDeliveryError),
    ("AE", {"on_ae": "retry"}, TransientDeliveryError),
    ("AR", {}, TransientDeliveryError),
    ("AR", {"on_ar": "dead-letter"}, PermanentDeliveryError),
    ("wrong-id", {}, TransientDeliveryError),
])
async def test_negative_answers_follow_the_policy(answer, options, error, tmp_path):
    with TestRis(answer) as ris:
        sender = sender_for(ris.port, tmp_path, **options)
        with pytest.raises(error) as raised:
            await sender.send(delivery(adt_a01("NEG")))
        await sender.close()
    expected_words = "expected 'NEG'" if answer == "wrong-id" else f"answered {answer}"
    assert expected_words in str(raised.value)
    assert type(raised.value) is error


async def test_a_missing_ack_times_out_and_the_next_send_uses_a_new_connection(tmp_path):
    answers = iter(["silent", "AA"])
    with TestRis(lambda _text: next(answers)) as ris:
        sender = sender_for(ris.port, tmp_path, ack_timeout="0.3s")
        with pytest.raises(AckTimeout, match=r"no ACK .* for MSH-10 SLOW"):
            await sender.send(delivery(adt_a01("SLOW")))
        result = await sender.send(delivery(adt_a01("SLOW")))  # the retry, same MSH-10
        await sender.close()
    assert result.detail == "AA"
    assert ris.control_ids() == ["SLOW", "SLOW"]
    assert ris.connections == 2


async def test_a_peer_that_is_down_is_a_transient_error(tmp_path):
    with TestRis() as ris:
        port = ris.port
    sender = sender_for(port, tmp_path, connect_timeout="1s")
    with pytest.raises(TransientDeliveryError, match="could not connect"):
        await sender.send(delivery(adt_a01("DOWN")))


async def test_content_that_is_not_hl7_is_dead_lettered_without_sending(tmp_path):
    with TestRis() as ris:
        sender = sender_for(ris.port, tmp_path)
        with pytest.raises(PermanentDeliveryError, match="not an HL7 v2 message"):
            await sender.send(delivery("hello"))
    assert ris.received == []


async def test_a_node_forwards_over_mllp_and_dead_letters_ae(database_url, tmp_path):
    """Listener in, RIS out: AA'd messages are sent once; an AE is kept as a dead letter."""
    with TestRis(lambda text: "AE" if "REFUSE" in text else "AA") as ris:
        channel = ChannelConfig.model_validate({
            "name": "relay", "source": {"type": "mllp", "port": 0},
            "destinations": [{"name": "ris", "type": "mllp", "host": "127.0.0.1",
                              "port": ris.port, "queue": {"max_attempts": 3}}],
        })
        async with running_node(tmp_path, database_url, [channel]) as (node, port):
            for control_id in ("FWD-1", "FWD-2", "REFUSE-3"):
                acks = await asyncio.to_thread(exchange, port, frame(adt_a01(control_id)))
                assert msa(acks[0])[1] == "AA"
            for _ in range(200):
                with node.database.read() as session:
                    statuses = sorted(session.execute(select(Delivery.status)).scalars())
                if statuses == [DeliveryStatus.DEAD, DeliveryStatus.SENT, DeliveryStatus.SENT]:
                    break
                await asyncio.sleep(0.05)
    assert statuses == [DeliveryStatus.DEAD, DeliveryStatus.SENT, DeliveryStatus.SENT]
    assert ris.control_ids() == ["FWD-1", "FWD-2", "REFUSE-3"]  # AE is not retried
