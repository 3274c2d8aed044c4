"""Retention: old finished messages go; queued and errored ones stay unless asked."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from sqlalchemy import select, update

from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import Delivery, Message, MessageStage, utcnow
from radbridge.engine.outbox import DeliveryResult, Outcome
from radbridge.engine.retention import prune
from tests.engine_harness import channel, harness

FILTERING = channel(filter={"rules": [{"field": "content", "contains": "keep"}]})


def age_everything(database, days=40):
    with database.write() as session:
        session.execute(update(Message).values(received_at=utcnow() - timedelta(days=days)))


def surviving(database):
    with database.read() as session:
        return set(session.execute(select(Message.id)).scalars())


def make_mix(h):
    """One message of each kind: sent, queued, dead, errored, filtered."""
    sent = h.receive(b"keep sent").message_id
    queued = h.receive(b"keep queued").message_id
    dead = h.receive(b"keep dead").message_id
    filtered = h.receive(b"drop me").message_id
    h.process_all()
    deliveries = {d.message_id: d for d in h.outbox.claim(
        "lab", "out", limit=10, lease_seconds=30, ordered=False)}
    h.writer.record(DeliveryResult(deliveries[sent], Outcome.SENT)).result(10)
    h.writer.record(DeliveryResult(deliveries[queued], Outcome.RELEASED)).result(10)
    with h.database.write() as session:
        session.execute(update(Delivery).where(Delivery.message_id == dead)
                        .values(status=DeliveryStatus.DEAD, lease_owner=None))
    return sent, queued, dead, filtered


def test_prune_by_age_keeps_queued_and_dead(database, tmp_path):
    with harness(database, tmp_path, [FILTERING]) as h:
        sent, queued, dead, _filtered = make_mix(h)
        fresh = h.receive(b"keep fresh").message_id
        age_everything(database)
        with database.write() as session:
            session.execute(update(Message).where(Message.id == fresh)
                            .values(received_at=utcnow()))
        report = prune(database, h.blobs, max_age=30 * 86400)
    assert report.messages == 2
    assert surviving(database) == {queued, dead, fresh}
    with database.read() as session:  # stages and deliveries went with their messages
        assert not session.execute(select(MessageStage).where(
            MessageStage.message_id == sent)).first()


def test_include_errored_and_include_queued_widen_the_net(database, tmp_path):
    with harness(database, tmp_path, [FILTERING]) as h:
        _, queued, _dead, _ = make_mix(h)
        age_everything(database)
        prune(database, h.blobs, max_age=86400, include_errored=True)
        assert surviving(database) == {queued}
        prune(database, h.blobs, max_age=86400, include_queued=True)
        assert surviving(database) == set()


def test_dry_run_changes_nothing(database, tmp_path):
    with harness(database, tmp_path, [FILTERING]) as h:
        make_mix(h)
        age_everything(database)
        report = prune(database, h.blobs, max_age=86400, dry_run=True)
    assert report.messages == 2 and len(surviving(database)) == 4


def test_prune_by_size_drops_oldest_finished_first(database, tmp_path):
    with harness(database, tmp_path, [channel()]) as h:
        ids = [h.receive(b"keep " + bytes([65 + i]) * 1000).message_id for i in range(5)]
        h.process_all()
        for delivery in h.outbox.claim("lab", "out", limit=10, lease_seconds=30, ordered=False):
            h.writer.record(DeliveryResult(delivery, Outcome.SENT)).result(10)
        report = prune(database, h.blobs, max_size=2500)
    assert report.messages == 3 and surviving(database) == set(ids[3:])


def test_unreferenced_blobs_are_collected_after_the_grace_period(database, tmp_path):
    with harness(database, tmp_path, [channel()], inline_limit=100) as h:
        message_id = h.receive(b"x" * 500).message_id
        h.process_all()
        for delivery in h.outbox.claim("lab", "out", limit=10, lease_seconds=30, ordered=False):
            h.writer.record(DeliveryResult(delivery, Outcome.SENT)).result(10)
        orphan = h.blobs.put_bytes(b"y" * 500)
        fresh_orphan = h.blobs.put_bytes(b"z" * 500)
        old = time.time() - 7200
        os.utime(h.blobs.path(orphan.sha256), (old, old))
        report = prune(database, h.blobs, max_age=86400)
        assert report.blobs == 1 and not h.blobs.exists(orphan.sha256)
        assert h.blobs.exists(fresh_orphan.sha256)  # may belong to a receive in progress
        assert message_id in surviving(database)


def test_temporary_blob_files_left_by_a_crash_are_collected_after_the_grace_period(
    database, tmp_path
):
    with harness(database, tmp_path, [channel()]) as h:
        incoming = h.blobs.root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        stale, fresh = incoming / "blob-stale", incoming / "blob-fresh"
        stale.write_bytes(b"half a blob")
        fresh.write_bytes(b"being written now")
        old = time.time() - 7200
        os.utime(stale, (old, old))
        prune(database, h.blobs, max_age=86400)
    assert not stale.exists() and fresh.exists()
