"""Searching the audit ledger: by patient, accession, study, channel, actor, action,
outcome, message and time, one keyset page at a time or streamed in pages.

Pages are keyset pages on `seq` (each filter column has a `(column, seq)` index), so
page 1,000 costs what page 1 does. A stream reads each page in its own short read
transaction: an export of millions of events holds no snapshot open while it is sent.
`action` takes an exact name or a prefix ending in ".*" ("registry.*").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from radbridge.engine.audit_export.errors import AuditFilterError
from radbridge.engine.audit_export.events import LedgerEvent
from radbridge.engine.db import Database
from radbridge.engine.models import AUDIT_EVENTS

MAX_PAGE = 10_000
TEXT_FILTERS = ("patient_id", "accession", "study_uid", "channel", "actor", "action",
                "outcome")
_LIMITS = {"patient_id": 64, "accession": 64, "study_uid": 64, "channel": 63, "actor": 128,
           "action": 64, "outcome": 16}
"""The column widths: a longer value cannot match, so it is refused as a typo."""
_EVENTS = AUDIT_EVENTS


@dataclass(frozen=True)
class AuditFilter:
    """Conditions that must all hold; None leaves a field free."""

    patient_id: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    channel: str | None = None
    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    message_id: int | None = None
    since: datetime | None = None
    """Inclusive."""
    until: datetime | None = None
    """Exclusive."""

    def __post_init__(self) -> None:
        for name in TEXT_FILTERS:
            value = getattr(self, name)
            if value is not None and not 1 <= len(value) <= _LIMITS[name]:
                raise AuditFilterError(name, f"1 to {_LIMITS[name]} characters")
        if self.action is not None and "*" in self.action.removesuffix(".*"):
            raise AuditFilterError("action", "an action name, or a prefix ending in '.*'")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise AuditFilterError(name, "a time with a time zone")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise AuditFilterError("until", "a time after 'since'")

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        for name in TEXT_FILTERS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "action" and value.endswith(".*"):
                prefix = value[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                found.append(_EVENTS.c.action.like(f"{prefix}%", escape="\\"))
            else:
                found.append(_EVENTS.c[name] == value)
        if self.message_id is not None:
            found.append(_EVENTS.c.message_id == self.message_id)
        if self.since is not None:
            found.append(_EVENTS.c.at >= self.since)
        if self.until is not None:
            found.append(_EVENTS.c.at < self.until)
        return found

    def given(self) -> dict[str, Any]:
        """The filters that were set, for the audit event that records the search."""
        return {f.name: (v.isoformat() if isinstance(v, datetime) else v)
                for f in fields(self) if (v := getattr(self, f.name)) is not None}


@dataclass(frozen=True)
class Page:
    events: list[LedgerEvent]
    next_seq: int | None
    """Pass as `before_seq` (newest first) or `after_seq` (oldest first) for the next page;
    None when this page was the last."""


def page(session: Session, filters: AuditFilter, *, limit: int = 100,
         before_seq: int | None = None, after_seq: int | None = None,
         newest_first: bool = True) -> Page:
    """One page of events matching `filters`, newest first unless told otherwise."""
    limit = max(1, min(limit, MAX_PAGE))
    rows = session.execute(_statement(filters, limit, before_seq, after_seq, newest_first))
    events = [LedgerEvent.from_row(row) for row in rows]
    return Page(events, events[-1].seq if len(events) == limit else None)


def stream(database: Database, filters: AuditFilter, *, newest_first: bool = False,
           page_size: int = 1000, max_events: int | None = None) -> Iterator[LedgerEvent]:
    """Every matching event (oldest first unless told otherwise), a read session per page."""
    cursor: int | None = None
    left = max_events
    while left is None or left > 0:
        size = page_size if left is None else min(page_size, left)
        with database.read() as session:
            found = page(session, filters, limit=size, newest_first=newest_first,
                         before_seq=cursor if newest_first else None,
                         after_seq=None if newest_first else cursor)
        yield from found.events
        if found.next_seq is None:
            return
        cursor = found.next_seq
        if left is not None:
            left -= len(found.events)


def _statement(filters: AuditFilter, limit: int, before_seq: int | None,
               after_seq: int | None, newest_first: bool) -> Select[Any]:
    statement = select(_EVENTS).where(*filters.conditions())
    if before_seq is not None:
        statement = statement.where(_EVENTS.c.seq < before_seq)
    if after_seq is not None:
        statement = statement.where(_EVENTS.c.seq > after_seq)
    order = _EVENTS.c.seq.desc() if newest_first else _EVENTS.c.seq.asc()
    return statement.order_by(order).limit(limit)
