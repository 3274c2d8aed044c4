"""Logs carry ids, never content: a failing transformer or peer must not leak PHI."""

from __future__ import annotations

import logging

from radbridge.engine.dispatcher import DeliveryWorker
from radbridge.engine.outbox import OutboundDelivery
from radbridge.errors import PermanentDeliveryError
from tests.engine_harness import channel, harness

PATIENT = "DOE^JANE^Q 1961-02-03 MRN 4471"


def shout(payload):
    raise ValueError(f"cannot map {payload.text()}")


def test_a_failing_transformer_logs_the_message_id_not_its_content(database, tmp_path, caplog):
    config = channel(transformers=[{"function": "tests.test_logs_without_phi:shout"}])
    caplog.set_level(logging.DEBUG, logger="radbridge")
    with harness(database, tmp_path, [config]) as h:
        message_id = h.receive(PATIENT.encode()).message_id
        h.process_all()
        assert PATIENT in (h.message(message_id).error or "")  # kept in the store
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert all(PATIENT not in r.getMessage() for r in info)


def test_a_peer_echoing_content_is_not_logged(caplog):
    class Echo:
        async def send(self, delivery):
            raise PermanentDeliveryError(f"HTTP 400: bad field in {PATIENT}")

    config = channel().destinations[0]
    worker = DeliveryWorker("lab", config, Echo(), outbox=None, writer=None)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="radbridge")
    result = worker._failed(_delivery(), f"HTTP 400: bad field in {PATIENT}", permanent=True)
    assert PATIENT in result.detail
    assert all(PATIENT not in r.getMessage() for r in caplog.records)
    assert any("HTTP 400" in r.getMessage() for r in caplog.records)


def _delivery() -> OutboundDelivery:
    from radbridge.engine.models import utcnow

    now = utcnow()
    return OutboundDelivery(
        delivery_id=1, message_id=1, message_uid="u", channel="lab", destination="out",
        generation=0, attempt=1, idempotency_key="k", content_type="text/plain",
        content=b"", blob_sha256=None, size=0, created_at=now, received_at=now)


async def test_hl7_traffic_good_and_bad_logs_no_names_or_mrns(tmp_path, caplog):
    """Accepted, rejected and registry-applied HL7 messages: only ids reach the logs."""
    import asyncio

    from radbridge.engine.config import ChannelConfig
    from tests.hl7_support import adt_a01, exchange, frame, running_node, stored

    caplog.set_level(logging.DEBUG)
    channel = ChannelConfig.model_validate({
        "name": "adt", "source": {"type": "mllp", "port": 0},
        "destinations": [{"name": "registry", "type": "registry"}]})
    name, mrn = "ZEBRAFISH^QUENTIN", "MRN-PHI-7731"
    good = adt_a01("LOG-1", patient=mrn).replace("EVERYMAN^ADAM^A^III", name + "\\Zbad\\")
    bad_msh = good.replace("GOOD HEALTH HOSPITAL", "GOOD\\Q\\HOSP", 1).replace("LOG-1", "LOG-2")
    no_pid_type = good.replace("ADT^A01^ADT_A01", "ADT^A99").replace("LOG-1", "LOG-3")
    async with running_node(tmp_path, f"sqlite:///{tmp_path / 's.db'}", [channel]) as (node, port):
        for text in (good, bad_msh, no_pid_type, "\x0bPID|1||" + mrn + "||" + name):
            await asyncio.to_thread(exchange, port, frame(text) if text[0] != "\x0b"
                                    else text.encode(), 0)
        for _ in range(100):
            if len(stored(node.database)) >= 4:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # let the registry apply
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "adt" in logged  # the node did log (ids and channel names)
    for secret in ("ZEBRAFISH", "QUENTIN", mrn):
        assert secret not in logged, secret
