"""The audit ledger: append-only events, each chained to the one before by a hash.

`hash = sha256(prev_hash + canonical JSON of the event's fields)`. Editing a row breaks
its own hash; deleting or reordering rows breaks the next row's `prev_hash`; cutting
off a tail no longer matches that chain's row in `audit_head`.

There is one chain per writer: each node's receiver, processor and outbox writer, the
API, the CLI. A writer locks only its own head row, so the threads of a node and the
nodes sharing one PostgreSQL database never queue behind each other to append; the
ledger is the union of its chains, each verifiable on its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from radbridge.engine import fast_insert
from radbridge.engine.db import Database, insert_many
from radbridge.engine.models import AUDIT_EVENTS, AUDIT_HEAD, AuditEvent, utcnow
from radbridge.errors import AuditChainBroken

GENESIS_HASH = "0" * 64
DEFAULT_CHAIN = "default"
_EVENTS = AUDIT_EVENTS
_HEAD = AUDIT_HEAD
# Built once: every write transaction appends, and building a statement costs more
# than SQLite takes to run it.
_LOCK_HEAD = (select(_HEAD.c.hash).where(_HEAD.c.chain == bindparam("chain"))
              .with_for_update())
_ADVANCE_HEAD = (update(_HEAD).where(_HEAD.c.chain == bindparam("chain_name"))
                 .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"),
                         count=_HEAD.c.count + bindparam("added")))
# The same two on SQLite, run straight through sqlite3 (see fast_insert).
_SQLITE_HEAD = "SELECT hash FROM audit_head WHERE chain = ?"
_SQLITE_ADVANCE_HEAD = ("UPDATE audit_head SET seq = ?, hash = ?, count = count + ?"
                        " WHERE chain = ?")


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


def append(
    session: Session, records: Sequence[AuditRecord], chain: str = DEFAULT_CHAIN
) -> None:
    """Append `records` in order to `chain`, inside the caller's transaction.

    The events commit or roll back together with the state change they describe.
    """
    append_rows(session.connection(), records, chain)


def append_rows(
    connection: Connection, records: Sequence[AuditRecord], chain: str = DEFAULT_CHAIN
) -> None:
    """`append` for callers that work on the transaction's Core connection."""
    if not records:
        return
    # Core statements on the tables: this runs in every write transaction, and the ORM's
    # bulk machinery costs several times the database's own work here.
    prev = _lock_head(connection, chain)
    at = utcnow()
    rows: list[dict[str, Any]] = []
    for record in records:
        row: dict[str, Any] = {
            "chain": chain,
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
    seqs = insert_many(connection, _EVENTS, rows)
    if connection.dialect.name == "sqlite":
        fast_insert.run(connection, _SQLITE_ADVANCE_HEAD, (seqs[-1], prev, len(rows), chain))
        return
    connection.execute(_ADVANCE_HEAD, {"chain_name": chain, "new_seq": seqs[-1],
                                       "new_hash": prev, "added": len(rows)})


def _lock_head(connection: Connection, chain: str) -> str:
    """The chain's last hash, with its head row locked; a new chain starts at genesis."""
    if connection.dialect.name == "sqlite":  # the transaction holds the writer already
        found = fast_insert.run(connection, _SQLITE_HEAD, (chain,))
        prev = found[0][0] if found else None
    else:
        prev = connection.execute(_LOCK_HEAD, {"chain": chain}).scalar_one_or_none()
    if prev is None:
        start = {"chain": chain, "seq": 0, "hash": GENESIS_HASH, "count": 0}
        if connection.dialect.name == "postgresql":
            connection.execute(pg_insert(_HEAD).values(start).on_conflict_do_nothing())
        else:
            connection.execute(sqlite_insert(_HEAD).values(start).on_conflict_do_nothing())
        prev = connection.execute(_LOCK_HEAD, {"chain": chain}).scalar_one()
    return str(prev)


@dataclass(frozen=True)
class VerifyReport:
    events: int
    chains: int
    head_seq: int
    """The newest event's sequence number (over all chains)."""
    head_hash: str


def verify(database: Database, batch: int = 5000) -> VerifyReport:
    """Recompute every chain; raise AuditChainBroken at the first mismatch."""
    with database.read() as session:
        heads = {row.chain: (row.seq, row.hash, row.count) for row in
                 session.execute(select(_HEAD.c.chain, _HEAD.c.seq, _HEAD.c.hash,
                                        _HEAD.c["count"].label("count"))).mappings()}
        chains = set(heads) | set(session.execute(select(_EVENTS.c.chain).distinct()).scalars())
        total, newest = 0, (0, GENESIS_HASH)
        for chain in sorted(chains):
            if chain not in heads:
                raise AuditChainBroken(None, f"chain {chain!r} has events but no head row")
            count, last_seq, last_hash = _verify_chain(session, chain, batch)
            head_seq, head_hash, head_count = heads[chain]
            if (head_seq, head_hash, head_count) != (last_seq, last_hash, count):
                raise AuditChainBroken(
                    None,
                    f"the head of chain {chain!r} says {head_count} events ending at "
                    f"{head_seq}, the table holds {count} ending at {last_seq} (events were "
                    "removed from the end or added outside the ledger)",
                )
            total += count
            newest = max(newest, (last_seq, last_hash))
    return VerifyReport(events=total, chains=len(chains), head_seq=newest[0],
                        head_hash=newest[1])


def _verify_chain(session: Session, chain: str, batch: int) -> tuple[int, int, str]:
    prev, last_seq, count = GENESIS_HASH, 0, 0
    while True:
        events = session.execute(
            select(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.seq > last_seq)
            .order_by(AuditEvent.seq).limit(batch)
        ).scalars().all()
        if not events:
            return count, last_seq, prev
        for event in events:
            row = {c: getattr(event, c) for c in _HASHED_COLUMNS}
            if event.prev_hash != prev:
                raise AuditChainBroken(
                    event.seq, "prev_hash does not match the event before it "
                    "(an event was deleted, inserted or reordered)"
                )
            if event_hash(prev, _hashed_fields(row)) != event.hash:
                raise AuditChainBroken(event.seq, "the event's content does not match its hash")
            prev, last_seq, count = event.hash, event.seq, count + 1
        session.expunge_all()


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
        "chain": event.chain,
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


def append_now(
    database: Database, records: Iterable[AuditRecord], chain: str = DEFAULT_CHAIN
) -> None:
    """Append in a transaction of its own (config loads, API reads, operator actions)."""
    with database.write() as session:
        append(session, list(records), chain)
