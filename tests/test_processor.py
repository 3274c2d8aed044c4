"""The processor: filter, transform and route each received message, atomically."""

from __future__ import annotations

from sqlalchemy import select

from radbridge.engine import audit
from radbridge.engine.lifecycle import DeliveryStatus, MessageStatus, StageKind
from radbridge.engine.models import MessageStage
from tests.engine_harness import channel, harness

JSON_CHANNEL = channel(
    "orders",
    transformers=[{"name": "json.extract",
                   "options": {"patient_id": "mrn", "metadata.kind": "kind"}}],
    destinations=[
        {"name": "all", "type": "null", "queue": {"ordering_key": "patient_id"}},
        {"name": "urgent", "type": "null",
         "filter": {"rules": [{"field": "metadata.kind", "equals": "stat"}]}},
    ],
)


def stages(database, message_id):
    with database.read() as session:
        return list(session.execute(select(MessageStage).where(
            MessageStage.message_id == message_id).order_by(MessageStage.id)).scalars())


def test_routes_to_destinations_whose_filters_accept(database, tmp_path):
    with harness(database, tmp_path, [JSON_CHANNEL]) as h:
        stat = h.receive(b'{"mrn": "P1", "kind": "stat"}').message_id
        routine = h.receive(b'{"mrn": "P2", "kind": "routine"}').message_id
        assert h.process_all() == 2
        assert [d.destination for d in h.deliveries(stat)] == ["all", "urgent"]
        assert [d.destination for d in h.deliveries(routine)] == ["all"]
        message = h.message(stat)
    assert message.status == MessageStatus.ROUTED and message.patient_id == "P1"
    assert message.meta == {"kind": "stat"}
    delivery = h.deliveries(stat)[0]
    assert delivery.ordering_key == "P1" and delivery.status == DeliveryStatus.PENDING
    assert delivery.idempotency_key == f"{message.uid}-0-all"
    kinds = [s.stage for s in stages(database, stat)]
    assert kinds == [StageKind.RECEIVED, StageKind.TRANSFORMED, StageKind.QUEUED, StageKind.QUEUED]


def test_channel_filter_marks_message_filtered(database, tmp_path):
    config = channel(filter={"rules": [{"field": "content", "matches": "^MSH"}]})
    with harness(database, tmp_path, [config]) as h:
        kept = h.receive(b"MSH|^~\\&|X").message_id
        dropped = h.receive(b"not hl7").message_id
        h.process_all()
        assert h.message(kept).status == MessageStatus.ROUTED
        assert h.message(dropped).status == MessageStatus.FILTERED
        assert h.deliveries(dropped) == []
    with database.read() as session:
        actions = [e.action for e in audit.query(session, audit.AuditQuery(message_id=dropped))]
    assert actions == ["message.filtered", "message.received"]


def test_failing_transformer_errors_only_that_message(database, tmp_path):
    with harness(database, tmp_path, [JSON_CHANNEL]) as h:
        bad = h.receive(b"this is not json").message_id
        good = h.receive(b'{"mrn": "P3"}').message_id
        h.process_all()
        failed = h.message(bad)
        assert failed.status == MessageStatus.ERRORED
        assert "json.extract" in failed.error and "not JSON" in failed.error
        assert h.message(good).status == MessageStatus.ROUTED
    assert stages(database, bad)[-1].stage == StageKind.ERRORED
    with database.read() as session:
        events = audit.query(session, audit.AuditQuery(message_id=bad, action="message.errored"))
    assert events and events[0].outcome == "failure"


def test_untransformed_deliveries_point_at_the_received_content(database, tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        message_id = h.receive(b"as it came").message_id
        h.process_all()
        (delivery,) = h.deliveries(message_id)
    received = stages(database, message_id)[0]
    assert delivery.content_stage_id == received.id


def test_large_content_is_not_loaded_when_nothing_reads_it(database, tmp_path):
    big = b"x" * 5000
    with harness(database, tmp_path, [channel()], inline_limit=1024) as h:
        message_id = h.receive(big).message_id
        sha = stages(database, message_id)[0].content_sha256
        h.blobs.delete(sha)  # would make any read fail
        h.process_all()
        assert h.message(message_id).status == MessageStatus.ROUTED


def test_processing_is_recorded_in_the_hash_chain(database, tmp_path):
    with harness(database, tmp_path, [JSON_CHANNEL]) as h:
        for i in range(10):
            h.receive(f'{{"mrn": "P{i}"}}'.encode())
        h.process_all()
    report = audit.verify(database)
    assert report.events == 20  # received + transformed for each
