"""The HTTP API on both engines: the http source, messages, replay, audit, health, metrics."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from starlette.testclient import TestClient

from radbridge.engine import audit
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import ChannelConfig
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus, MessageStatus, StageKind
from radbridge.engine.models import Delivery, Message, MessageStage
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.errors import StoreUnavailable
from radbridge.interfaces.api import ApiContext, create_app
from tests.store_rows import add_delivery, add_message

CHANNELS = {
    "orders": ChannelConfig.model_validate({
        "name": "orders", "source": {"type": "http", "max_size": 1000},
        "destinations": [{"name": "ris", "type": "null"}, {"name": "ehr", "type": "null"}],
    }),
    "drop": ChannelConfig.model_validate({
        "name": "drop", "source": {"type": "directory", "path": "/tmp/in"},
        "destinations": [{"name": "archive", "type": "null"}],
    }),
}


class FakeReceiver:
    """Stores an Inbound as a received message with its received stage, like the receiver."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.inbounds: list[Inbound] = []
        self.fail = False

    async def __call__(self, inbound: Inbound) -> Receipt:
        if self.fail:
            raise StoreUnavailable("disk full")
        self.inbounds.append(inbound)
        with self.database.write() as session:
            if inbound.dedup_key is not None:
                found = session.execute(select(Message).where(
                    Message.channel == inbound.channel, Message.dedup_key == inbound.dedup_key
                )).scalar_one_or_none()
                if found is not None:
                    return Receipt(found.id, found.uid, duplicate=True)
            message = Message(uid=uuid.uuid4().hex, channel=inbound.channel,
                              status=MessageStatus.RECEIVED, content_type=inbound.content_type,
                              source=inbound.source, dedup_key=inbound.dedup_key, meta={})
            session.add(message)
            session.flush()
            blob = inbound.blob
            content = inbound.content
            session.add(MessageStage(
                message_id=message.id, stage=StageKind.RECEIVED, in_blob=blob is not None,
                content=content, content_type=inbound.content_type,
                content_sha256=blob.sha256 if blob else hashlib.sha256(content or b"").hexdigest(),
                content_size=blob.size if blob else len(content or b""),
            ))
            return Receipt(message.id, message.uid, duplicate=False)


@pytest.fixture
def receiver(database: Database) -> FakeReceiver:
    return FakeReceiver(database)


@pytest.fixture
def context(database: Database, receiver: FakeReceiver, tmp_path: Path) -> ApiContext:
    return ApiContext(
        database=database, blobs=BlobStore(tmp_path / "blobs"), channels=CHANNELS,
        node_id="node-1", inline_limit=64, receive=receiver, registry=CollectorRegistry(),
    )


@pytest.fixture
def client(context: ApiContext) -> Iterator[TestClient]:
    with TestClient(create_app(context), client=("10.0.0.7", 40000)) as test_client:
        yield test_client


def _events(database: Database, action: str) -> list[audit.AuditEvent]:
    with database.read() as session:
        return audit.query(session, audit.AuditQuery(action=action))


# --- health, readiness, metrics ------------------------------------------------------


def test_health_and_ready(client: TestClient, context: ApiContext,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/health").json() == {"status": "ok", "node_id": "node-1"}
    assert client.get("/ready").status_code == 200
    context.is_ready = lambda: False
    answer = client.get("/ready")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    context.is_ready = lambda: True
    monkeypatch.setattr(context.database, "ping", lambda: False)
    assert client.get("/ready").json() == {"error": "the store does not answer"}
    assert client.get("/health").status_code == 200


def test_metrics_include_queue_gauges(client: TestClient, database: Database) -> None:
    with database.write() as session:
        add_delivery(session, add_message(session), "ris", DeliveryStatus.PENDING)
    text = client.get("/metrics").text
    assert ('radbridge_queue_depth{channel="orders",destination="ris",status="pending"} 1.0'
            in text)
    assert 'radbridge_queue_depth{channel="orders",destination="ehr",status="dead"} 0.0' in text
    assert 'radbridge_queue_oldest_pending_seconds{channel="orders",destination="ris"}' in text


# --- the http source -----------------------------------------------------------------


def test_post_small_message_is_stored_inline(client: TestClient, receiver: FakeReceiver,
                                             database: Database) -> None:
    answer = client.post("/api/channels/orders/messages", content=b"MSH|small",
                         headers={"Content-Type": "x-application/hl7-v2+er7"})
    assert answer.status_code == 202
    body = answer.json()
    assert body["duplicate"] is False
    [inbound] = receiver.inbounds
    assert (inbound.content, inbound.blob, inbound.source) == (b"MSH|small", None, "http:10.0.0.7")
    assert inbound.content_type == "x-application/hl7-v2+er7"
    with database.read() as session:
        message = session.get(Message, body["message_id"])
        assert message is not None and message.uid == body["uid"]


async def _post_chunks(app: Any, path: str, chunks: list[bytes]) -> tuple[int, dict[str, Any]]:
    """Drive the ASGI app with a body in several `http.request` messages, as a server does.

    (TestClient reads the whole body first, so it cannot show streaming.)
    """
    messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"transfer-encoding", b"chunked")],
        "client": ("10.0.0.8", 1234), "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return sent[0]["status"], json.loads(body)


async def test_post_large_message_streams_into_a_blob(receiver: FakeReceiver,
                                                      context: ApiContext) -> None:
    payload = bytes(range(256)) * 3  # 768 bytes: over inline_limit 64, under max_size 1000
    chunks = [payload[start:start + 50] for start in range(0, len(payload), 50)]
    status, body = await _post_chunks(create_app(context), "/api/channels/orders/messages", chunks)
    assert status == 202 and body["duplicate"] is False
    [inbound] = receiver.inbounds
    assert inbound.content is None and inbound.blob is not None
    assert inbound.blob.size == len(payload)
    assert context.blobs.read_bytes(inbound.blob.sha256) == payload
    assert inbound.content_type == "application/octet-stream"
    assert inbound.source == "http:10.0.0.8"


async def test_post_small_chunks_stay_inline(receiver: FakeReceiver, context: ApiContext) -> None:
    status, _ = await _post_chunks(create_app(context), "/api/channels/orders/messages",
                                   [b"MSH|", b"a" * 30, b"b" * 30])
    assert status == 202
    [inbound] = receiver.inbounds
    assert inbound.blob is None and inbound.content == b"MSH|" + b"a" * 30 + b"b" * 30


async def test_post_too_large_is_refused(client: TestClient, receiver: FakeReceiver,
                                         context: ApiContext) -> None:
    declared = client.post("/api/channels/orders/messages", content=b"x" * 1001)
    assert declared.status_code == 413 and "max_size" in declared.json()["error"]
    status, body = await _post_chunks(create_app(context), "/api/channels/orders/messages",
                                      [b"y" * 600, b"y" * 300, b"y" * 300])
    assert status == 413 and "max_size" in body["error"]
    assert receiver.inbounds == []
    assert list(context.blobs.all_hashes()) == []
    assert list((context.blobs.root / "incoming").iterdir()) == []


def test_post_idempotency_key_deduplicates(client: TestClient) -> None:
    first = client.post("/api/channels/orders/messages", content=b"MSH|1",
                        headers={"Idempotency-Key": "k-1"}).json()
    second = client.post("/api/channels/orders/messages", content=b"MSH|1",
                         headers={"Idempotency-Key": "k-1"}).json()
    assert second == {**first, "duplicate": True}
    too_long = client.post("/api/channels/orders/messages", content=b"MSH|1",
                           headers={"Idempotency-Key": "k" * 256})
    assert too_long.status_code == 400 and "Idempotency-Key" in too_long.json()["error"]


def test_post_refusals(client: TestClient, context: ApiContext, receiver: FakeReceiver) -> None:
    unknown = client.post("/api/channels/nope/messages", content=b"x")
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    not_http = client.post("/api/channels/drop/messages", content=b"x")
    assert not_http.status_code == 409 and "directory" in not_http.json()["error"]
    receiver.fail = True
    unavailable = client.post("/api/channels/orders/messages", content=b"x")
    assert unavailable.status_code == 503 and unavailable.headers["retry-after"] == "5"
    context.receive = None
    assert client.post("/api/channels/orders/messages", content=b"x").status_code == 503
    assert client.get("/api/channels/orders/messages").status_code == 405


# --- channels ------------------------------------------------------------------------


def test_channels_with_statistics(client: TestClient, database: Database) -> None:
    with database.write() as session:
        message = add_message(session)
        add_delivery(session, message, "ris", DeliveryStatus.DEAD)
        add_message(session, status=MessageStatus.ERRORED)
    channels = client.get("/api/channels").json()["channels"]
    assert [channel["name"] for channel in channels] == ["drop", "orders"]
    orders = client.get("/api/channels/orders").json()
    assert orders == channels[1]
    stats = orders["statistics"]
    assert (stats["routed"], stats["errored"], stats["received"], stats["waiting"]) == (
        1, 1, 2, 0)
    assert stats["destinations"]["ris"]["dead"] == 1
    assert stats["destinations"]["ehr"]["pending"] == 0
    assert channels[0]["statistics"]["routed"] == 0
    missing = client.get("/api/channels/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


# --- messages ------------------------------------------------------------------------


def test_list_messages_pages_and_is_audited(client: TestClient, database: Database) -> None:
    with database.write() as session:
        ids = [add_message(session).id for _ in range(5)]
    first = client.get("/api/messages", params={"limit": 2}).json()
    assert [row["id"] for row in first["messages"]] == ids[:-3:-1]
    second = client.get("/api/messages", params={"limit": 2,
                                                 "before_id": first["next_before_id"]}).json()
    third = client.get("/api/messages", params={"limit": 2,
                                                "before_id": second["next_before_id"]}).json()
    assert [row["id"] for row in second["messages"]] == ids[2:0:-1]
    assert [row["id"] for row in third["messages"]] == ids[:1]
    assert third["next_before_id"] is None
    events = _events(database, "message.listed")
    assert len(events) == 3 and events[-1].actor == "api:10.0.0.7"
    assert audit.event_as_dict(events[-1])["detail"]["message_ids"] == ids[:-3:-1]


@pytest.mark.parametrize(("query", "named"), [
    ({"limit": "ten"}, "limit"), ({"limit": "0"}, "limit"), ({"before_id": "-1"}, "before_id"),
    ({"status": "lost"}, "status"), ({"chanel": "orders"}, "chanel"),
])
def test_list_messages_bad_parameters(client: TestClient, query: dict[str, str],
                                      named: str) -> None:
    answer = client.get("/api/messages", params=query)
    assert answer.status_code == 400 and repr(named) in answer.json()["error"]


def test_show_message_is_audited_as_a_phi_read(client: TestClient, database: Database) -> None:
    with database.write() as session:
        message = add_message(session, content=b"MSH|secret", study_uid="1.2.3")
        add_delivery(session, message, "ris", DeliveryStatus.SENT)
    plain = client.get(f"/api/messages/{message.id}").json()
    assert "content" not in plain["stages"][0]
    assert plain["deliveries"][0]["status"] == "sent"
    full = client.get(f"/api/messages/{message.id}", params={"content": "true"}).json()
    assert full["stages"][0]["content"] == "MSH|secret"
    events = _events(database, "message.viewed")
    assert [audit.event_as_dict(e)["detail"] for e in events] == [{"content": True},
                                                                  {"content": False}]
    assert {(e.actor, e.message_id, e.patient_id, e.study_uid) for e in events} == {
        ("api:10.0.0.7", message.id, "P1", "1.2.3")}
    assert client.get("/api/messages/999").status_code == 404
    assert client.get(f"/api/messages/{message.id}?content=maybe").status_code == 400
    assert len(_events(database, "message.viewed")) == 2


def test_store_unavailable_answers_503(client: TestClient, database: Database,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_read() -> Any:
        raise StoreUnavailable("store cannot be read: connection refused")

    monkeypatch.setattr(database, "read", broken_read)
    answer = client.get("/api/messages/1")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert "connection refused" in answer.json()["error"]


def test_reprocess_and_retry(client: TestClient, database: Database) -> None:
    with database.write() as session:
        message = add_message(session, status=MessageStatus.ERRORED, error="boom")
        delivery = add_delivery(session, message, "ris", DeliveryStatus.DEAD, attempts=10)
    retried = client.post(f"/api/messages/{message.id}/retry").json()
    assert retried == {"message_id": message.id, "retried": 1}
    with database.read() as session:
        again = session.get(Delivery, delivery.id)
        assert again is not None and (again.status, again.attempts) == ("pending", 0)
    assert client.post(f"/api/messages/{message.id}/reprocess").json() == {
        "reprocessed": [message.id]}
    with database.read() as session:
        reprocessed = session.get(Message, message.id)
        assert reprocessed is not None
        assert (reprocessed.status, reprocessed.generation) == ("received", 1)
    [event] = _events(database, "message.reprocessed")
    assert event.actor == "api:10.0.0.7"
    assert _events(database, "delivery.retried")[0].actor == "api:10.0.0.7"
    assert client.post("/api/messages/999/reprocess").status_code == 404
    assert client.post("/api/messages/999/retry").status_code == 404


# --- audit ---------------------------------------------------------------------------


def test_audit_query_filters_pages_and_is_audited(client: TestClient,
                                                  database: Database) -> None:
    audit.append_now(database, [
        audit.AuditRecord(action="message.received", patient_id="P1", channel="orders"),
        audit.AuditRecord(action="message.received", patient_id="P2", channel="orders"),
        audit.AuditRecord(action="message.sent", patient_id="P1", channel="orders"),
    ])
    first = client.get("/api/audit", params={"patient_id": "P1", "limit": 1}).json()
    assert [e["action"] for e in first["events"]] == ["message.sent"]
    second = client.get("/api/audit", params={"patient_id": "P1", "limit": 1,
                                              "before_seq": first["next_before_seq"]}).json()
    assert [e["seq"] for e in second["events"]] == [1]
    [queried, _] = _events(database, "audit.queried")
    assert (queried.actor, queried.patient_id) == ("api:10.0.0.7", "P1")
    assert audit.event_as_dict(queried)["detail"]["returned"] == 1
    since = client.get("/api/audit", params={"since": "2000-01-01T00:00:00Z",
                                             "action": "message.received"}).json()
    assert len(since["events"]) == 2 and since["next_before_seq"] is None
    assert client.get("/api/audit", params={"until": "2000-01-01"}).json()["events"] == []
    bad = client.get("/api/audit", params={"since": "yesterday"})
    assert bad.status_code == 400 and "'since'" in bad.json()["error"]
    assert audit.verify(database).events == 7
