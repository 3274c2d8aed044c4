"""The audit ledger: append-only events, each chained to the one before by a hash.

`hash = sha256(prev_hash + canonical JSON of the event's fields)`. Editing a row breaks
its own hash; deleting or reordering rows breaks the next row's `prev_hash`; cutting
off the tail no longer matches `audit_head`, the single row appenders lock (which also
serialises appends across nodes sharing one PostgreSQL database).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from radbridge.engine.db import Database
from radbridge.engine.models import AuditEvent, AuditHead, utcnow
from radbridge.errors import AuditChainBroken

GENESIS_HASH = "0" * 64
HEAD_ID = 1


@dataclass(frozen=True)
class AuditRecord:
    """An event to append. Identifiers only in `detail`: never names or birth dates."""

    action: str
    outcome: str = "success"
    actor: str = "system"
    channel: str | None = None
    message_id: int | None = None
    patient_id: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def _canonical_time(at: datetime) -> str:
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def event_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """The chain hash of one event given the hash of the event before it."""
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def _hashed_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "at": _canonical_time(row["at"]),
        "actor": row["actor"],
        "action": row["action"],
        "outcome": row["outcome"],
        "channel": row["channel"],
        "message_id": row["message_id"],
        "patient_id": row["patient_id"],
        "accession": row["accession"],
        "study_uid": row["study_uid"],
        "detail": row["detail"],
    }


def append(session: Session, records: Sequence[AuditRecord]) -> None:
    """Append `records` in order, inside the caller's transaction.

    The events commit or roll back together with the state change they describe.
    """
    if not records:
        return
    head = session.execute(
        select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()
    ).scalar_one()
    prev = head.hash
    at = utcnow()
    rows: list[dict[str, Any]] = []
    for record in records:
        row: dict[str, Any] = {
            "at": at,
            "actor": record.actor,
            "action": record.action,
            "outcome": record.outcome,
            "channel": record.channel,
            "message_id": record.message_id,
            "patient_id": record.patient_id,
            "accession": record.accession,
            "study_uid": record.study_uid,
            "detail": json.dumps(dict(record.detail), sort_keys=True, separators=(",", ":")),
        }
        row["prev_hash"] = prev
        row["hash"] = prev = event_hash(prev, _hashed_fields(row))
        rows.append(row)
    seqs = session.execute(
        insert(AuditEvent).returning(AuditEvent.seq, sort_by_parameter_order=True), rows
    ).scalars().all()
    session.execute(
        update(AuditHead)
        .where(AuditHead.id == HEAD_ID)
        .values(seq=seqs[-1], hash=prev, count=AuditHead.count + len(rows))
    )


@dataclass(frozen=True)
class VerifyReport:
    events: int
    head_seq: int
    head_hash: str


def verify(database: Database, batch: int = 5000) -> VerifyReport:
    """Recompute the whole chain; raise AuditChainBroken at the first mismatch."""
    prev = GENESIS_HASH
    last_seq = 0
    count = 0
    with database.read() as session:
        head = session.get(AuditHead, HEAD_ID)
        if head is None:
            raise AuditChainBroken(None, "the audit_head row is missing")
        while True:
            events = session.execute(
                select(AuditEvent).where(AuditEvent.seq > last_seq)
                .order_by(AuditEvent.seq).limit(batch)
            ).scalars().all()
            if not events:
                break
            for event in events:
                row = {c: getattr(event, c) for c in _HASHED_COLUMNS}
                if event.prev_hash != prev:
                    raise AuditChainBroken(
                        event.seq, "prev_hash does not match the event before it "
                        "(an event was deleted, inserted or reordered)"
                    )
                if event_hash(prev, _hashed_fields(row)) != event.hash:
                    raise AuditChainBroken(event.seq, "the event's content does not match its hash")
                prev = event.hash
                last_seq = event.seq
                count += 1
            session.expunge_all()
        if (head.seq, head.hash, head.count) != (last_seq, prev, count):
            raise AuditChainBroken(
                None,
                f"the head says {head.count} events ending at {head.seq}, the table holds "
                f"{count} ending at {last_seq} (events were removed from the end or added "
                "outside the ledger)",
            )
    return VerifyReport(events=count, head_seq=last_seq, head_hash=prev)


_HASHED_COLUMNS = (
    "at", "actor", "action", "outcome", "channel", "message_id",
    "patient_id", "accession", "study_uid", "detail",
)


@dataclass(frozen=True)
class AuditQuery:
    """Filters for `query`; all given filters must hold. Newest first, keyset-paginated."""

    patient_id: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    channel: str | None = None
    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    message_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_seq: int | None = None
    limit: int = 100


def query(session: Session, filters: AuditQuery) -> list[AuditEvent]:
    """Events matching `filters`, newest first; pass the last seq as `before_seq` for more."""
    statement = select(AuditEvent)
    for column in ("patient_id", "accession", "study_uid", "channel", "actor", "action",
                   "outcome", "message_id"):
        value = getattr(filters, column)
        if value is not None:
            statement = statement.where(getattr(AuditEvent, column) == value)
    if filters.since is not None:
        statement = statement.where(AuditEvent.at >= filters.since)
    if filters.until is not None:
        statement = statement.where(AuditEvent.at < filters.until)
    if filters.before_seq is not None:
        statement = statement.where(AuditEvent.seq < filters.before_seq)
    limit = max(1, min(filters.limit, 10_000))
    return list(session.execute(
        statement.order_by(AuditEvent.seq.desc()).limit(limit)
    ).scalars())


def event_as_dict(event: AuditEvent) -> dict[str, Any]:
    """The JSON form of an event used by the CLI and the API."""
    return {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "outcome": event.outcome,
        "channel": event.channel,
        "message_id": event.message_id,
        "patient_id": event.patient_id,
        "accession": event.accession,
        "study_uid": event.study_uid,
        "detail": json.loads(event.detail or "{}"),
        "hash": event.hash,
    }


def append_now(database: Database, records: Iterable[AuditRecord]) -> None:
    """Append in a transaction of its own (config loads, API reads, operator actions)."""
    with database.write() as session:
        append(session, list(records))
