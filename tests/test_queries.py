"""Read-side queries on both engines: pagination, detail with content, statistics."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from radbridge.engine import queries
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus, MessageStatus, StageKind
from radbridge.engine.metrics import register_store_collector
from radbridge.engine.models import MessageStage, utcnow
from radbridge.errors import NotFound, StoreUnavailable
from tests.store_rows import add_delivery, add_message


def test_list_messages_pages_by_id_descending(database: Database) -> None:
    with database.write() as session:
        ids = [add_message(session, channel="orders" if i % 2 else "adt").id for i in range(7)]
    seen: list[int] = []
    before_id = None
    with database.read() as session:
        while True:
            page = queries.list_messages(session, before_id=before_id, limit=3)
            if not page:
                break
            assert len(page) <= 3
            seen.extend(row["id"] for row in page)
            before_id = page[-1]["id"]
    assert seen == sorted(ids, reverse=True)


def test_list_messages_filters_by_channel_and_status(database: Database) -> None:
    with database.write() as session:
        routed = add_message(session, channel="orders").id
        errored = add_message(session, channel="orders", status=MessageStatus.ERRORED,
                              error="transformer 'x' failed").id
        add_message(session, channel="adt", status=MessageStatus.ERRORED)
    with database.read() as session:
        orders = queries.list_messages(session, channel="orders")
        errored_orders = queries.list_messages(session, channel="orders", status="errored")
        nothing = queries.list_messages(session, channel="nope")
    assert [row["id"] for row in orders] == [errored, routed]
    assert [row["id"] for row in errored_orders] == [errored]
    assert errored_orders[0]["error"] == "transformer 'x' failed"
    assert errored_orders[0]["patient_id"] == "P1"
    assert nothing == []


def test_list_messages_summarises_deliveries_of_current_generation(database: Database) -> None:
    with database.write() as session:
        message = add_message(session, generation=1)
        add_delivery(session, message, "ris", DeliveryStatus.SENT, generation=0)
        add_delivery(session, message, "ris", DeliveryStatus.DEAD)
        add_delivery(session, message, "ehr", DeliveryStatus.PENDING)
        plain = add_message(session)
    with database.read() as session:
        rows = {row["id"]: row for row in queries.list_messages(session)}
    assert rows[message.id]["deliveries"] == {"ris": {"dead": 1}, "ehr": {"pending": 1}}
    assert rows[message.id]["generation"] == 1
    assert rows[plain.id]["deliveries"] == {}


def test_message_detail_without_content(database: Database) -> None:
    with database.write() as session:
        message = add_message(session, content=b"MSH|hello")
        add_delivery(session, message, "ris", DeliveryStatus.DEAD, attempts=10,
                     last_error="connection refused")
    with database.read() as session:
        detail = queries.message_detail(session, message.id, include_content=False)
    assert detail["id"] == message.id and detail["uid"] == message.uid
    [stage] = detail["stages"]
    assert stage["stage"] == "received" and stage["size"] == 9
    assert stage["sha256"] == hashlib.sha256(b"MSH|hello").hexdigest()
    assert "content" not in stage
    [delivery] = detail["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("dead", 10)
    assert delivery["last_error"] == "connection refused"
    assert delivery["idempotency_key"].endswith("-ris-0")


def test_message_detail_content_text_binary_and_stage_order(database: Database) -> None:
    with database.write() as session:
        message = add_message(session, content="MSH|Müller".encode())
        session.add(MessageStage(message_id=message.id, generation=0,
                                 stage=StageKind.TRANSFORMED, content=b"\xff\x00\x01",
                                 content_type="application/octet-stream", detail="to-bin"))
    with database.read() as session:
        detail = queries.message_detail(session, message.id, include_content=True)
    received, transformed = detail["stages"]
    assert [received["stage"], transformed["stage"]] == ["received", "transformed"]
    assert (received["content"], received["encoding"]) == ("MSH|Müller", "utf-8")
    assert transformed["encoding"] == "base64"
    assert base64.b64decode(transformed["content"]) == b"\xff\x00\x01"
    assert transformed["size"] == 3 and transformed["detail"] == "to-bin"
    assert not received["truncated"] and not transformed["truncated"]


def test_message_detail_reads_blob_content_truncated(database: Database, tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    body = b"OBX|" + b"x" * 5000
    ref = blobs.put_bytes(body)
    with database.write() as session:
        message = add_message(session)
        session.add(MessageStage(message_id=message.id, generation=0, stage=StageKind.TRANSFORMED,
                                 in_blob=True, content_sha256=ref.sha256, content_size=ref.size))
        session.add(MessageStage(message_id=message.id, generation=0, stage=StageKind.TRANSFORMED,
                                 in_blob=True, content_sha256="0" * 64, content_size=1))
    with database.read() as session:
        detail = queries.message_detail(
            session, message.id, include_content=True, blobs=blobs, content_limit=100
        )
        whole = queries.message_detail(session, message.id, include_content=True, blobs=blobs)
    big, missing = detail["stages"][1:]
    assert big["truncated"] is True and big["content"] == body[:100].decode()
    assert big["size"] == len(body) and big["in_blob"] is True
    assert whole["stages"][1]["content"] == body.decode()
    assert whole["stages"][1]["truncated"] is False
    assert missing["content"] is None and "missing" in missing["content_error"]


def test_message_detail_unknown_id(database: Database) -> None:
    with database.read() as session, pytest.raises(NotFound):
        queries.message_detail(session, 12345, include_content=False)


def test_decode_content_keeps_text_cut_inside_a_character() -> None:
    data = "é".encode() * 3  # 6 bytes; cutting at 5 splits the last character
    assert queries.decode_content(data[:5], truncated=True) == ("éé", "utf-8")
    assert queries.decode_content(data[:5], truncated=False)[1] == "base64"


def test_channel_statistics_counts_and_zeros(database: Database) -> None:
    with database.write() as session:
        old = add_message(session)
        add_delivery(session, old, "ris", DeliveryStatus.PENDING,
                     created_at=utcnow() - timedelta(seconds=120))
        new = add_message(session)
        add_delivery(session, new, "ris", DeliveryStatus.PENDING)
        add_delivery(session, new, "ehr", DeliveryStatus.SENT)
        add_delivery(session, old, "ehr", DeliveryStatus.DEAD)
        add_message(session, status=MessageStatus.FILTERED)
        add_message(session, status=MessageStatus.ERRORED)
        add_message(session, channel="elsewhere")
    with database.read() as session:
        stats = queries.channel_statistics(
            session, ["orders", "idle"], destinations={"orders": ["ris", "ehr", "pacs"]}
        )
    orders = stats["orders"]
    assert (orders["received"], orders["waiting"], orders["routed"], orders["filtered"],
            orders["errored"]) == (4, 0, 2, 1, 1)
    ris, ehr, pacs = (orders["destinations"][name] for name in ("ris", "ehr", "pacs"))
    assert (ris["pending"], ris["sent"], ris["dead"]) == (2, 0, 0)
    assert 119 <= ris["oldest_pending_seconds"] < 200
    assert (ehr["sent"], ehr["dead"], ehr["oldest_pending_seconds"]) == (1, 1, 0.0)
    assert pacs == queries.empty_destination_stats()
    assert stats["idle"] == {"received": 0, "waiting": 0, "filtered": 0, "routed": 0, "errored": 0,
                             "rejected": 0,
                             "destinations": {}}
    assert "elsewhere" not in stats


def test_queue_depths_by_status(database: Database) -> None:
    with database.write() as session:
        message = add_message(session)
        add_delivery(session, message, "ris", DeliveryStatus.SENT)
        add_delivery(session, add_message(session), "ris", DeliveryStatus.IN_FLIGHT)
    with database.read() as session:
        open_only = queries.queue_depths(session, ["orders"], statuses=["pending", "in_flight"])
        every = queries.queue_depths(session)
    assert [(d.destination, d.status, d.count) for d in open_only] == [("ris", "in_flight", 1)]
    assert sorted(d.status for d in every) == ["in_flight", "sent"]


def test_store_collector_gauges(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    with database.write() as session:
        message = add_message(session)
        add_delivery(session, message, "ris", DeliveryStatus.PENDING,
                     created_at=utcnow() - timedelta(seconds=60))
        add_delivery(session, message, "ehr", DeliveryStatus.SENT)
    registry = CollectorRegistry()
    register_store_collector(registry, database, lambda: {"orders": ["ris", "ehr"]})

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"channel": "orders", **labels})

    assert value("radbridge_queue_depth", destination="ris", status="pending") == 1.0
    assert value("radbridge_queue_depth", destination="ehr", status="dead") == 0.0
    assert value("radbridge_queue_depth", destination="ehr", status="sent") is None
    oldest = value("radbridge_queue_oldest_pending_seconds", destination="ris")
    assert oldest is not None and 59 <= oldest < 120
    assert value("radbridge_queue_oldest_pending_seconds", destination="ehr") == 0.0
    with pytest.raises(ValueError):  # registered once per registry
        register_store_collector(registry, database, lambda: ["orders"])

    def unavailable() -> None:
        raise StoreUnavailable("store cannot be read: gone")

    monkeypatch.setattr(database, "read", unavailable)
    assert value("radbridge_queue_depth", destination="ris", status="pending") is None
