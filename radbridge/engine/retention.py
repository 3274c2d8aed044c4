"""Retention: prune old messages by age and by total size, then unreferenced blobs.

Only finished messages go: filtered ones, and routed ones whose every delivery was
sent. Errored messages and dead letters stay unless `include_errored`; messages with a
delivery still owed (pending or in flight) stay unless `include_queued`, because
dropping them loses work that was acknowledged. The audit ledger is never pruned here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, exists, func, select
from sqlalchemy.sql.elements import ColumnElement

from radbridge.engine import audit
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import OPEN_DELIVERY_STATUSES, DeliveryStatus, MessageStatus
from radbridge.engine.models import Delivery, Message, MessageStage, utcnow

BLOB_GRACE_SECONDS = 3600.0
"""A blob younger than this may belong to a message being received right now."""


@dataclass(frozen=True)
class PruneReport:
    messages: int
    blobs: int
    blob_bytes: int
    dry_run: bool


def _eligible(include_errored: bool, include_queued: bool) -> ColumnElement[bool]:
    statuses = [MessageStatus.FILTERED, MessageStatus.ROUTED]
    if include_errored:
        statuses.append(MessageStatus.ERRORED)
    blocking = [] if include_queued else list(OPEN_DELIVERY_STATUSES)
    if not include_errored:
        blocking.append(DeliveryStatus.DEAD)
    condition: ColumnElement[bool] = Message.status.in_(statuses)
    if blocking:
        owed = exists().where(Delivery.message_id == Message.id, Delivery.status.in_(blocking))
        condition = condition & ~owed
    if include_queued:
        return condition | (Message.status == MessageStatus.RECEIVED)
    return condition


def prune(
    database: Database,
    blobs: BlobStore,
    *,
    max_age: float | None = None,
    max_size: int | None = None,
    include_errored: bool = False,
    include_queued: bool = False,
    dry_run: bool = False,
    actor: str = "system",
) -> PruneReport:
    """Delete what the limits select; `dry_run` only counts."""
    if max_age is None and max_size is None:
        raise ValueError("give max_age, max_size or both")
    eligible = _eligible(include_errored, include_queued)
    with database.write() as session:
        doomed: set[int] = set()
        if max_age is not None:
            cutoff = utcnow() - timedelta(seconds=max_age)
            doomed.update(session.execute(
                select(Message.id).where(eligible, Message.received_at < cutoff)).scalars())
        if max_size is not None:
            doomed.update(_over_size(session, eligible, max_size, doomed))
        if not dry_run:
            ids = sorted(doomed)
            for start in range(0, len(ids), 500):
                session.execute(delete(Message).where(Message.id.in_(ids[start:start + 500])))
            audit.append(session, [audit.AuditRecord(
                action="retention.pruned", actor=actor,
                detail={"messages": len(ids), "max_age": max_age, "max_size": max_size,
                        "include_errored": include_errored, "include_queued": include_queued},
            )])
    blob_count, blob_bytes = (0, 0) if dry_run else collect_blobs(database, blobs)
    return PruneReport(len(doomed), blob_count, blob_bytes, dry_run)


def _over_size(session, eligible, max_size: int, already: set[int]) -> list[int]:  # type: ignore[no-untyped-def]
    """Oldest eligible messages to drop until the stored content fits in `max_size`."""
    size_sum = func.coalesce(func.sum(MessageStage.content_size), 0)
    total = session.execute(select(size_sum)).scalar_one()
    sizes = select(MessageStage.message_id, func.coalesce(func.sum(MessageStage.content_size), 0)
                   .label("size")).group_by(MessageStage.message_id).subquery()
    rows = session.execute(
        select(Message.id, sizes.c.size).join(sizes, sizes.c.message_id == Message.id)
        .where(eligible).order_by(Message.id)
    )
    chosen: list[int] = []
    for message_id, size in rows:
        if total <= max_size:
            break
        total -= int(size)
        if message_id not in already:
            chosen.append(message_id)
    return chosen


def collect_blobs(database: Database, blobs: BlobStore) -> tuple[int, int]:
    """Delete blob files no stage refers to, and temporary files a crash left behind
    (both only when older than the grace period)."""
    with database.read() as session:
        referenced = set(session.execute(
            select(MessageStage.content_sha256).where(MessageStage.in_blob.is_(True)).distinct()
        ).scalars())
    blobs.clean_incoming(older_than=BLOB_GRACE_SECONDS)
    cutoff = time.time() - BLOB_GRACE_SECONDS
    count = freed = 0
    for sha256 in list(blobs.all_hashes()):
        if sha256 in referenced:
            continue
        path = blobs.path(sha256)
        try:
            if path.stat().st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        freed += blobs.delete(sha256)
        count += 1
    return count, freed
