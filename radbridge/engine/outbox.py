"""The outbox: one durable queue per destination, claimed with leases.

`claim` leases due deliveries to this node (`FOR UPDATE SKIP LOCKED` on PostgreSQL so
nodes never take the same one); a lease that expires (its node died) makes the
delivery due again. For a destination with an ordering key, only the oldest open
delivery of each key is due, and only once every earlier message of the channel has
been processed, so per-key order holds across nodes. `OutboxWriter` records outcomes
in batches on its own thread: sent, retry later (tenacity backoff), dead-lettered,
or released unsent at shutdown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Select,
    Update,
    and_,
    bindparam,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from radbridge.engine import audit, handback, metrics
from radbridge.engine.batching import BatchingThread
from radbridge.engine.db import Database
from radbridge.engine.fast_insert import insert_rows
from radbridge.engine.handback import Waiter
from radbridge.engine.lifecycle import (
    OPEN_DELIVERY_STATUSES,
    DeliveryStatus,
    MessageStatus,
    StageKind,
)
from radbridge.engine.models import (
    DELIVERIES,
    MESSAGES,
    STAGES,
    Delivery,
    Message,
    utcnow,
)
from radbridge.engine.retry import RetryPolicy
from radbridge.errors import StoreError

log = logging.getLogger(__name__)

_DELIVERIES = DELIVERIES
_STAGES = STAGES
# Built once: the outcome writer runs them for every batch, under the store's writer.
_MARK_SENT = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id.in_(bindparam("ids", expanding=True)),
           _DELIVERIES.c.status == DeliveryStatus.IN_FLIGHT,
           _DELIVERIES.c.lease_owner == bindparam("owner"))
    .values(status=DeliveryStatus.SENT, sent_at=bindparam("now"), lease_owner=None,
            lease_expires_at=None, last_error=None, updated_at=bindparam("now"))
    .returning(_DELIVERIES.c.id)
)

_MESSAGES = MESSAGES
_LOAD = (
    select(_DELIVERIES.c.id.label("delivery_id"), _DELIVERIES.c.message_id,
           _DELIVERIES.c.channel, _DELIVERIES.c.destination, _DELIVERIES.c.generation,
           _DELIVERIES.c.attempts, _DELIVERIES.c.idempotency_key, _DELIVERIES.c.created_at,
           _MESSAGES.c.uid, _MESSAGES.c.content_type.label("message_content_type"),
           _MESSAGES.c.received_at, _MESSAGES.c.patient_id, _MESSAGES.c.accession,
           _MESSAGES.c.study_uid, _MESSAGES.c["metadata"].label("message_metadata"),
           _STAGES.c.content_type.label("stage_content_type"), _STAGES.c.in_blob,
           _STAGES.c.content, _STAGES.c.content_sha256, _STAGES.c.content_size)
    .join(_MESSAGES, _MESSAGES.c.id == _DELIVERIES.c.message_id)
    .join(_STAGES, _STAGES.c.id == _DELIVERIES.c.content_stage_id)
    .where(_DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_DELIVERIES.c.message_id, _DELIVERIES.c.id)
)

OUTCOME_LINGER = 0.05
OUTCOME_QUIET = 0.015
"""Outcomes are gathered for up to 50 ms while they keep coming (at most 15 ms apart).
Each commit has a fixed cost (the transaction, the audit head) that at about ten
outcomes per commit was a fifth of a processing node's CPU, and held SQLite's one
writer from the sources' acknowledgements (measured at 8 MLLP connections). Nothing
waits on these commits but the delivery worker's bounded count of unrecorded
outcomes, which stops new outcomes when full, so the batch is then committed after
`quiet`, or at once when the worker says so (`hurry`). A crash in between resends no
more than before: that count bounds it."""

RESPONSE_LIMIT = 64 * 1024
"""At most this much of a peer's response is kept in the sent stage record."""


@dataclass(frozen=True)
class OutboundDelivery:
    """A leased delivery with what a destination needs to send it."""

    delivery_id: int
    message_id: int
    message_uid: str
    channel: str
    destination: str
    generation: int
    attempt: int
    idempotency_key: str
    content_type: str
    content: bytes | None
    blob_sha256: str | None
    size: int
    created_at: datetime
    received_at: datetime
    patient_id: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


class Outcome(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    RELEASED = "released"


@dataclass(frozen=True)
class DeliveryResult:
    delivery: OutboundDelivery
    outcome: Outcome
    policy: RetryPolicy | None = None
    response: bytes | None = None
    detail: str = ""
    permanent: bool = False


class Outbox:
    """Claims and releases deliveries for one node."""

    def __init__(self, database: Database, node_id: str) -> None:
        self._database = database
        self.node_id = node_id

    def claim(
        self, channel: str, destination: str, *, limit: int, lease_seconds: float, ordered: bool
    ) -> list[OutboundDelivery]:
        """Lease up to `limit` due deliveries of one destination to this node.

        A read-only probe comes first, so an idle destination costs no write lock.
        """
        now = utcnow()
        with self._database.read() as session:
            probe = _due(channel, destination, now, 1, ordered, lock=False)
            if session.execute(probe).first() is None:
                return []
        with self._database.write(redoable=True) as session:
            ids = session.execute(_due(channel, destination, now, limit, ordered,
                                       lock=self._database.is_postgres)).scalars().all()
            if not ids:
                return []
            now = utcnow()  # the lease runs from when the claim holds its rows, not before
            session.execute(
                update(Delivery).where(Delivery.id.in_(ids)).values(
                    status=DeliveryStatus.IN_FLIGHT, lease_owner=self.node_id,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=Delivery.attempts + 1, updated_at=now,
                )
            )
        # Leased to this node now: read after the commit, not while holding the writer.
        with self._database.read() as session:
            return _load(session.connection(), ids)

    def release_own_leases(self) -> int:
        """At start-up: what this node's previous run had in flight is due again now."""
        with self._database.write() as session:
            return _rows_changed(session, update(Delivery)
                .where(Delivery.status == DeliveryStatus.IN_FLIGHT,
                       Delivery.lease_owner == self.node_id)
                .values(status=DeliveryStatus.PENDING, lease_owner=None, lease_expires_at=None,
                        next_attempt_at=utcnow()))


def _due(
    channel: str, destination: str, now: datetime, limit: int, ordered: bool, *, lock: bool
) -> Select[tuple[int]]:
    d = Delivery
    due = or_(
        and_(d.status == DeliveryStatus.PENDING, d.next_attempt_at <= now),
        and_(d.status == DeliveryStatus.IN_FLIGHT, d.lease_expires_at < now),
    )
    statement = select(d.id).where(d.channel == channel, d.destination == destination, due)
    if ordered:
        earlier = aliased(Delivery)
        earlier_open = exists().where(
            earlier.channel == d.channel, earlier.destination == d.destination,
            earlier.ordering_key == d.ordering_key,
            earlier.status.in_(OPEN_DELIVERY_STATUSES),
            or_(earlier.message_id < d.message_id,
                and_(earlier.message_id == d.message_id, earlier.id < d.id)),
        )
        unprocessed = aliased(Message)
        unprocessed_before = exists().where(
            unprocessed.channel == d.channel, unprocessed.status == MessageStatus.RECEIVED,
            unprocessed.id < d.message_id,
        )
        statement = statement.where(
            or_(d.ordering_key.is_(None), ~earlier_open), ~unprocessed_before
        ).order_by(d.message_id, d.id)
    else:
        statement = statement.order_by(d.next_attempt_at, d.id)
    statement = statement.limit(limit)
    if lock:
        statement = statement.with_for_update(skip_locked=True, of=Delivery)
    return statement


def _load(connection: Connection, ids: Sequence[int]) -> list[OutboundDelivery]:
    """What a destination needs of leased deliveries, their messages and content stages
    (Core rows: loading three ORM entities per delivery cost more than the query)."""
    rows = connection.execute(_LOAD, {"ids": list(ids)}).all()
    return [OutboundDelivery(
        delivery_id=row.delivery_id, message_id=row.message_id, message_uid=row.uid,
        channel=row.channel, destination=row.destination, generation=row.generation,
        attempt=row.attempts, idempotency_key=row.idempotency_key,
        content_type=row.stage_content_type or row.message_content_type,
        content=None if row.in_blob else (row.content or b""),
        blob_sha256=row.content_sha256 if row.in_blob else None,
        size=row.content_size or 0, created_at=row.created_at, received_at=row.received_at,
        patient_id=row.patient_id, accession=row.accession, study_uid=row.study_uid,
        metadata=dict(row.message_metadata or {}),
    ) for row in rows]


class OutboxWriter:
    """Records delivery outcomes in batches on one thread (see the module docstring)."""

    def __init__(
        self, database: Database, node_id: str, *, on_commit: Callable[[], None] | None = None,
        audit_chain: str = "outbox", linger: float = OUTCOME_LINGER,
        quiet: float = OUTCOME_QUIET,
    ) -> None:
        """`linger`: at most this many seconds to gather outcomes into one commit, ended
        early after `quiet` seconds with none arriving (see `BatchingThread`)."""
        self._audit_chain = audit_chain
        self._database = database
        self._node_id = node_id
        self._on_commit = on_commit
        self._thread = BatchingThread[tuple[DeliveryResult, Waiter[None]]](
            "outbox-writer", self._write, linger=linger, quiet=quiet)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Record everything queued, then stop."""
        self._thread.stop()

    def record(self, result: DeliveryResult) -> Future[None]:
        waiter: Waiter[None] = Waiter.for_thread()
        self._thread.put((result, waiter))
        return waiter.thread_future()

    def hurry(self) -> None:
        """Commit the outcomes gathered so far without waiting out the linger: a
        delivery worker has none of its unrecorded budget left."""
        self._thread.hurry()

    async def recorded(self, result: DeliveryResult) -> None:
        """Record and wait for the commit, on the event loop (one wake-up per batch)."""
        waiter: Waiter[None] = Waiter.for_loop()
        self._thread.put((result, waiter))
        await waiter.result()

    def _write(self, batch: list[tuple[DeliveryResult, Waiter[None]]]) -> None:
        for attempt in range(1, 6):
            try:
                with self._database.write(redoable=True) as session:
                    audit.append(session, self._apply(session, [r for r, _ in batch]),
                                 self._audit_chain)
                break
            except StoreError as exc:
                # Not recording an outcome loses nothing: the lease expires and the
                # delivery is sent again under the same idempotency key.
                log.warning("recording %d delivery outcomes failed (try %d): %s",
                            len(batch), attempt, exc)
                threading.Event().wait(min(5.0, 0.2 * 2**attempt))
        handback.settle((waiter, None) for _, waiter in batch)
        if self._on_commit is not None:
            self._on_commit()

    def _apply(self, session: Session, results: list[DeliveryResult]) -> list[audit.AuditRecord]:
        """Apply a batch of outcomes with a few set-based statements; returns audit events.

        Every update is guarded by "still in flight and leased to this node": an
        outcome that arrives after its lease passed to another node changes nothing.
        """
        connection = session.connection()
        now = utcnow()
        released = [r.delivery.delivery_id for r in results if r.outcome is Outcome.RELEASED]
        if released:
            connection.execute(update(_DELIVERIES).where(
                _DELIVERIES.c.id.in_(released), self._mine).values(
                status=DeliveryStatus.PENDING, attempts=_DELIVERIES.c.attempts - 1,
                lease_owner=None, lease_expires_at=None, next_attempt_at=now, updated_at=now))
        records = _apply_sent(connection, self._node_id,
                              [r for r in results if r.outcome is Outcome.SENT], now)
        for result in results:
            if result.outcome is Outcome.FAILED:
                record = _apply_failed(connection, self._mine, result, now)
                if record is not None:
                    records.append(record)
        return records

    @property
    def _mine(self) -> ColumnElement[bool]:
        return and_(_DELIVERIES.c.status == DeliveryStatus.IN_FLIGHT,
                    _DELIVERIES.c.lease_owner == self._node_id)


def _rows_changed(session: Session, statement: Update) -> int:
    result = cast(CursorResult[Any], session.execute(statement))
    return int(result.rowcount or 0)


def _apply_sent(
    connection: Connection, node_id: str, results: list[DeliveryResult], now: datetime,
) -> list[audit.AuditRecord]:
    if not results:
        return []
    changed = set(connection.execute(_MARK_SENT, {
        "ids": [r.delivery.delivery_id for r in results], "owner": node_id,
        "now": now}).scalars())
    records: list[audit.AuditRecord] = []
    stages: list[dict[str, Any]] = []
    for result in results:
        delivery = result.delivery
        if delivery.delivery_id not in changed:
            log.warning("delivery %s was sent after its lease passed to another node; the "
                        "peer may see it twice under key %s", delivery.delivery_id,
                        delivery.idempotency_key)
            continue
        response = (result.response or b"")[:RESPONSE_LIMIT]
        stages.append({
            "message_id": delivery.message_id, "generation": delivery.generation,
            "stage": StageKind.SENT, "destination": delivery.destination, "at": now,
            "content_type": None, "content": response or None,
            "content_size": len(response) if response else None, "content_sha256": None,
            "in_blob": False, "detail": result.detail[:2000] or None,
        })
        metrics.DELIVERIES_SENT.labels(delivery.channel, delivery.destination).inc()
        metrics.END_TO_END_LATENCY.labels(delivery.channel, delivery.destination).observe(
            (now - delivery.received_at).total_seconds())
        records.append(_event(delivery, "delivery.sent", "success",
                              {"attempt": delivery.attempt}))
    if stages:
        insert_rows(connection, _STAGES, stages)
    return records


def _apply_failed(
    connection: Connection, mine: ColumnElement[bool], result: DeliveryResult, now: datetime
) -> audit.AuditRecord | None:
    delivery = result.delivery
    if result.policy is None:
        raise ValueError(f"a failed result for delivery {delivery.delivery_id} has no policy")
    decision = result.policy.after_failure(
        attempt=delivery.attempt, created_at=delivery.created_at, now=now,
        permanent=result.permanent)
    error = result.detail[:2000]
    values: dict[str, Any] = (
        {"status": DeliveryStatus.PENDING, "next_attempt_at": decision.next_attempt_at}
        if decision.retry else {"status": DeliveryStatus.DEAD})
    changed = connection.execute(update(_DELIVERIES).where(
        _DELIVERIES.c.id == delivery.delivery_id, mine).values(
        **values, last_error=error, lease_owner=None, lease_expires_at=None,
        updated_at=now).returning(_DELIVERIES.c.id)).first()
    if changed is None:
        return None
    outcome = "retry" if decision.retry else "dead"
    metrics.DELIVERY_FAILURES.labels(delivery.channel, delivery.destination, outcome).inc()
    if not decision.retry:
        connection.execute(insert(_STAGES), [{
            "message_id": delivery.message_id, "generation": delivery.generation,
            "stage": StageKind.ERRORED, "destination": delivery.destination, "at": now,
            "content_type": None, "content": None, "content_size": None,
            "content_sha256": None, "in_blob": False,
            "detail": f"dead-lettered ({decision.reason}): {error}"[:2000]}])
    detail: dict[str, object] = {"attempt": delivery.attempt, "error": error[:500],
                                 "decision": decision.reason}
    if decision.next_attempt_at is not None:
        detail["next_attempt_at"] = decision.next_attempt_at.isoformat()
    return _event(delivery, "delivery.failed", outcome, detail)


def _event(
    delivery: OutboundDelivery, action: str, outcome: str, detail: dict[str, object]
) -> audit.AuditRecord:
    return audit.AuditRecord(
        action=action, outcome=outcome, actor="engine", channel=delivery.channel,
        message_id=delivery.message_id, patient_id=delivery.patient_id,
        accession=delivery.accession, study_uid=delivery.study_uid,
        detail={"destination": delivery.destination, "delivery_id": delivery.delivery_id,
                "idempotency_key": delivery.idempotency_key, **detail},
    )

