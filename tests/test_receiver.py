"""Receiving: committed before the receipt, deduplicated, large content streamed to blobs."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select

from radbridge.engine import audit
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import MessageStatus, StageKind
from radbridge.engine.models import Message, MessageStage
from radbridge.engine.receiver import GroupCommitter, Inbound
from radbridge.errors import StoreUnavailable
from tests.conftest import PG_ADMIN
from tests.engine_harness import channel, harness


def test_receipt_means_message_stage_and_audit_are_committed(database, tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        receipt = h.receive(b"MSH|^~\\&|A", patient_id="P1")
    fresh = Database(database.url)  # a second connection sees it: it is committed
    with fresh.read() as session:
        message = session.get(Message, receipt.message_id)
        stage = session.execute(select(MessageStage).where(
            MessageStage.message_id == receipt.message_id)).scalar_one()
        events = audit.query(session, audit.AuditQuery(message_id=receipt.message_id))
    fresh.dispose()
    assert message.uid == receipt.uid and message.status == MessageStatus.RECEIVED
    assert stage.stage == StageKind.RECEIVED and stage.content == b"MSH|^~\\&|A"
    assert stage.content_sha256 == hashlib.sha256(b"MSH|^~\\&|A").hexdigest()
    assert [e.action for e in events] == ["message.received"]
    assert events[0].patient_id == "P1"


def test_dedup_key_returns_the_first_message(database, tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        first = h.receive(b"one", dedup_key="MSG-1")
        again = h.receive(b"one", dedup_key="MSG-1")
        other = h.receive(b"two", dedup_key="MSG-2")
    assert not first.duplicate and again.duplicate
    assert again.message_id == first.message_id and other.message_id != first.message_id
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 2


def test_duplicates_inside_one_commit_batch_resolve_to_one_message(database, tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        futures = [h.receiver.submit(Inbound(channel="lab", content_type="text/plain",
                                             source="t", content=b"x", dedup_key="same"))
                   for _ in range(20)]
        receipts = [f.result(timeout=10) for f in futures]
    assert len({r.message_id for r in receipts}) == 1
    assert sum(not r.duplicate for r in receipts) == 1


def test_large_content_is_kept_in_the_blob_store(database, tmp_path):
    big = bytes(range(256)) * 100  # 25.6 kB, over the 1 kB inline limit
    with harness(database, tmp_path, [channel()], inline_limit=1024) as h:
        receipt = h.receive(big)
        with database.read() as session:
            stage = session.execute(select(MessageStage).where(
                MessageStage.message_id == receipt.message_id)).scalar_one()
        assert stage.in_blob and stage.content is None and stage.content_size == len(big)
        assert h.blobs.read_bytes(stage.content_sha256) == big


def test_concurrent_producers_are_grouped_into_few_commits(database, tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        receipts = []
        lock = threading.Lock()

        def produce(worker: int) -> None:
            for i in range(25):
                receipt = h.receive(f"{worker}-{i}".encode())
                with lock:
                    receipts.append(receipt)

        threads = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len({r.message_id for r in receipts}) == 200
    assert audit.verify(database).events == 200


def test_store_down_means_no_receipt(tmp_path: Path):
    unreachable = Database("postgresql+psycopg://postgres@127.0.0.1:1/nothing")
    receiver = GroupCommitter(unreachable, BlobStore(tmp_path), inline_limit=1024)
    receiver.start()
    try:
        with pytest.raises(StoreUnavailable):
            receiver.receive_sync(Inbound(channel="lab", content_type="text/plain",
                                          source="t", content=b"x"))
    finally:
        receiver.stop()
        unreachable.dispose()


@pytest.mark.postgres
def test_receiving_recovers_after_the_database_drops_its_connections(pg_url, tmp_path):
    from tests.conftest import reset_postgres

    database = Database(pg_url)
    reset_postgres(database)
    with harness(database, tmp_path, [channel()]) as h:
        h.receive(b"before")
        name = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        receipt = None
        for _ in range(3):  # the batch in flight when connections died may fail once
            try:
                receipt = h.receive(b"after")
                break
            except StoreUnavailable:
                continue
        assert receipt is not None
    assert audit.verify(database).events == 2
    database.dispose()
