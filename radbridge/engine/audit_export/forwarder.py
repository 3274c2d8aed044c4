"""Store-and-forward of the audit ledger to a syslog collector.

The ledger is the spool. A cursor per destination (`audit_forwarding.last_seq`) says
how far the collector has it; each pass reads the events after the cursor in sequence
order, sends them as one batch, confirms the connection survived it, and only then
moves the cursor. A collector away for an hour costs nothing but the wait: the events
stay in the ledger and go, in order, when it answers again. A failure anywhere in a
batch sends the whole batch again, so an event may arrive twice (at least once, never
lost); each message carries its sequence number and hash for the collector to drop
repeats.

Order across writers. Each ledger row gets its `seq` when inserted, but on PostgreSQL
transactions commit in any order, so seq 41 may commit after seq 42, and a rolled-back
insert leaves seq 41 missing for good. The cursor therefore stops before a missing
number until that gap is settled: on SQLite at once (one writer: a gap never fills);
on PostgreSQL once no transaction that might still commit it is open (no writing
transaction older than the moment the gap was seen), or after `gap_wait` at the most.

Several nodes may forward to one destination: the node holding the cursor row's lease
forwards, the others stand by and take over when it lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from radbridge.engine.audit_export import atna
from radbridge.engine.audit_export.codes import outcome_indicator
from radbridge.engine.audit_export.errors import CollectorError
from radbridge.engine.audit_export.event_map import AuditSource
from radbridge.engine.audit_export.events import LedgerEvent
from radbridge.engine.audit_export.syslog import SyslogTarget, Transport, syslog_message
from radbridge.engine.db import Database
from radbridge.engine.models import AUDIT_EVENTS, AUDIT_FORWARDING, utcnow
from radbridge.errors import StoreError

log = logging.getLogger(__name__)

_CURSORS = AUDIT_FORWARDING
_EVENTS = AUDIT_EVENTS
_OPEN_WRITERS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND backend_xid IS NOT NULL AND xact_start <= :seen AND pid <> pg_backend_pid()")


@dataclass(frozen=True)
class ForwardingOptions:
    batch: int = 1000
    poll_interval: float = 1.0
    """Seconds between looks for new events when the collector is up to date."""
    lease: float = 60.0
    """Seconds a node holds a destination after its last batch."""
    gap_wait: float = 60.0
    """The longest a missing sequence number holds the cursor (PostgreSQL)."""
    retry_max: float = 30.0
    """The longest wait between attempts while the collector is away."""


@dataclass
class _Gap:
    seen: float
    """time.monotonic() when first seen."""
    seen_in_store: datetime | None
    """The store's clock then (PostgreSQL)."""


@dataclass
class AuditForwarder:
    """Forwards the ledger to one destination through `transport`."""

    database: Database
    transport: Transport
    destination: str
    owner: str
    """This node's id: the lease holder's name."""
    source: AuditSource
    options: ForwardingOptions = ForwardingOptions()
    hostname: str = field(default_factory=socket.gethostname)
    _gaps: dict[int, _Gap] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def to_target(cls, database: Database, target: SyslogTarget, node_id: str,
                  options: ForwardingOptions = ForwardingOptions()) -> AuditForwarder:
        return cls(database, target.transport(), target.name, node_id, AuditSource(node_id),
                   options)

    def forward_once(self) -> int:
        """Send the next batch; how many events went (0: nothing new, or another node
        holds the destination). CollectorError when the collector did not take it."""
        cursor = self._claim()
        if cursor is None:
            return 0
        events = self._settled(cursor, self._events_after(cursor))
        if not events:
            return 0
        try:
            self.transport.send([self._message(event) for event in events])
            self.transport.confirm()
        except CollectorError as exc:
            self._record_error(exc.reason)
            raise
        self._advance(cursor, events[-1].seq, len(events))
        return len(events)

    def drain(self) -> int:
        """Forward until the collector has everything settled; how many events went."""
        total = 0
        while sent := self.forward_once():
            total += sent
        return total

    async def run(self, stopping: asyncio.Event) -> None:
        """Forward until `stopping` is set; wait and try again while the collector is away."""
        failures = 0
        while not stopping.is_set():
            try:
                sent = await asyncio.to_thread(self.forward_once)
            except CollectorError as exc:
                failures += 1
                if failures == 1:
                    log.warning("audit forwarding to %s stopped: %s; events wait in the "
                                "ledger", self.destination, exc.reason)
                await _wait(stopping, min(self.options.retry_max, 0.5 * 2 ** min(failures, 8)))
                continue
            except Exception:  # the store is down or a bug: keep the node alive, try again
                log.exception("audit forwarding to %s failed; retrying", self.destination)
                await _wait(stopping, self.options.retry_max)
                continue
            if failures:
                log.info("audit forwarding to %s resumed", self.destination)
                failures = 0
            if sent < self.options.batch:
                await _wait(stopping, self.options.poll_interval)
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close the connection and give the destination up, so that another node (or
        this one restarted) goes on at once instead of waiting out the lease."""
        self.transport.close()
        self._update_mine({"lease_owner": None, "lease_expires_at": None})

    # --- the cursor ----------------------------------------------------------------------

    def _claim(self) -> int | None:
        """Take or renew the lease; the cursor, or None while another node holds it."""
        now = utcnow()
        mine = ((_CURSORS.c.lease_owner.is_(None)) | (_CURSORS.c.lease_owner == self.owner)
                | (_CURSORS.c.lease_expires_at < now))
        claim = (update(_CURSORS).where(_CURSORS.c.destination == self.destination, mine)
                 .values(lease_owner=self.owner, lease_expires_at=self._lease_end(now))
                 .returning(_CURSORS.c.last_seq))
        with self.database.write(redoable=True) as session:
            found = session.execute(claim).scalar_one_or_none()
            if found is not None:
                return int(found)
            exists = session.execute(select(_CURSORS.c.destination).where(
                _CURSORS.c.destination == self.destination)).first()
        if exists is not None:
            return None
        try:
            with self.database.write() as session:
                session.execute(insert(_CURSORS).values(
                    destination=self.destination, last_seq=0, forwarded=0, updated_at=now,
                    lease_owner=self.owner, lease_expires_at=self._lease_end(now)))
        except IntegrityError:  # another node made it first
            return None
        log.info("audit forwarding to %s starts at the beginning of the ledger",
                 self.destination)
        return 0

    def _advance(self, cursor: int, last_seq: int, count: int) -> None:
        now = utcnow()
        with self.database.write() as session:
            moved = session.connection().execute(update(_CURSORS).where(
                _CURSORS.c.destination == self.destination,
                _CURSORS.c.lease_owner == self.owner, _CURSORS.c.last_seq == cursor,
            ).values(last_seq=last_seq, forwarded=_CURSORS.c.forwarded + count,
                     updated_at=now, lease_expires_at=self._lease_end(now),
                     last_error=None, last_error_at=None)).rowcount
        if not moved:
            log.warning("audit forwarding to %s: the lease passed to another node during "
                        "a batch; it sends events %d-%d again", self.destination, cursor + 1,
                        last_seq)
        self._gaps = {start: gap for start, gap in self._gaps.items() if start > last_seq}

    def _record_error(self, reason: str) -> None:
        self._update_mine({"last_error": reason[:2000], "last_error_at": utcnow()})

    def _update_mine(self, values: dict[str, Any]) -> None:
        """Best effort: a store that is down now must not hide why the send failed."""
        try:
            with self.database.write(redoable=True) as session:
                session.execute(update(_CURSORS).where(
                    _CURSORS.c.destination == self.destination,
                    _CURSORS.c.lease_owner == self.owner).values(**values))
        except (StoreError, SQLAlchemyError) as exc:
            log.warning("audit forwarding to %s: could not update its cursor row: %s",
                        self.destination, exc)

    def _lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.options.lease)

    # --- the events ------------------------------------------------------------------------

    def _events_after(self, cursor: int) -> list[LedgerEvent]:
        with self.database.read() as session:
            rows = session.execute(select(_EVENTS).where(_EVENTS.c.seq > cursor)
                                   .order_by(_EVENTS.c.seq).limit(self.options.batch))
            return [LedgerEvent.from_row(row) for row in rows]

    def _settled(self, cursor: int, events: list[LedgerEvent]) -> list[LedgerEvent]:
        """The events up to the first gap in the sequence that may still fill."""
        expected = cursor + 1
        for index, event in enumerate(events):
            if event.seq != expected and not self._gap_settled(expected):
                return events[:index]
            expected = event.seq + 1
        return events

    def _gap_settled(self, start: int) -> bool:
        if not self.database.is_postgres:
            return True  # one writer at a time: a number missing now never appears
        gap = self._gaps.get(start)
        if gap is None:
            gap = self._gaps[start] = _Gap(time.monotonic(), self._store_now())
        if time.monotonic() - gap.seen >= self.options.gap_wait:
            log.info("audit forwarding to %s: sequence number %d never appeared; going on",
                     self.destination, start)
            return True
        with self.database.read() as session:
            open_writers = session.execute(_OPEN_WRITERS, {"seen": gap.seen_in_store}).scalar()
        return open_writers == 0

    def _store_now(self) -> datetime | None:
        with self.database.read() as session:
            found: datetime | None = session.execute(select(func.clock_timestamp())).scalar()
            return found

    def _message(self, event: LedgerEvent) -> bytes:
        return syslog_message(atna.audit_message(event, self.source), at=event.at,
                              outcome=outcome_indicator(event.outcome), hostname=self.hostname)


def forwarding_status(database: Database) -> list[dict[str, Any]]:
    """Each destination's cursor, lease, last error and backlog (events not yet sent)."""
    with database.read() as session:
        newest = session.execute(select(func.max(_EVENTS.c.seq))).scalar() or 0
        rows = session.execute(select(_CURSORS).order_by(_CURSORS.c.destination)).mappings()
        return [{**{k: (v.isoformat() if isinstance(v, datetime) else v)
                    for k, v in row.items()},
                 "backlog": max(0, newest - row["last_seq"])} for row in rows]


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)


def start_forwarding(database: Database, target: SyslogTarget, node_id: str,
                     stopping: asyncio.Event) -> asyncio.Task[None]:
    """The node's forwarding task (see radbridge.engine.runtime): runs until `stopping`."""
    forwarder = AuditForwarder.to_target(database, target, node_id)
    log.info("forwarding the audit ledger to %s", target.name)
    return asyncio.create_task(forwarder.run(stopping), name=f"audit-syslog:{target.name}")
