"""Alert incidents: opened when a rule's condition appears, resolved when it is gone.

`settle` compares what the rules find now with the open incidents of one alerts
channel, in one transaction: a new condition opens an incident (audit `alert.raised`),
one still there refreshes it (last seen, figures), one gone resolves it (audit
`alert.resolved`). Peer-down incidents are one node's view: only that node resolves
them. `announce` then receives each raise and each resolution not yet announced as a
JSON message on the alerts channel; its dedup key (the incident id and the event)
makes a pass cut off in between announce it once, on the next pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radbridge.engine import audit, metrics
from radbridge.engine.alerts.rules import Condition, Scope
from radbridge.engine.db import Database
from radbridge.engine.models import AlertIncident
from radbridge.engine.receiver import Inbound, Receipt

log = logging.getLogger(__name__)

OPEN = "open"
RESOLVED = "resolved"
ACTOR = "alerts"
CONTENT_TYPE = "application/json"
Event = Literal["raised", "resolved"]
Receive = Callable[[Inbound], Awaitable[Receipt]]


@dataclass(frozen=True)
class Settled:
    """What one pass changed: incident ids opened and resolved, and how many stay open."""

    raised: tuple[int, ...]
    resolved: tuple[int, ...]
    still_open: int


def incident_key(alert_channel: str, condition: Condition) -> str:
    """The incident's key: readable when it fits 255 characters, else a digest."""
    key = f"{alert_channel}:{condition.rule}/{condition.subject}"
    if len(key) <= 255:
        return key
    return f"{alert_channel}:{condition.rule}/" + hashlib.sha256(key.encode()).hexdigest()


def settle(database: Database, scope: Scope, conditions: Sequence[Condition],
           now: datetime, chain: str) -> Settled:
    """Open, refresh and resolve this channel's incidents to match `conditions`."""
    firing = {incident_key(scope.alert_channel, c): c for c in conditions}
    with database.write() as session:
        rows = session.execute(select(AlertIncident).where(
            AlertIncident.alert_channel == scope.alert_channel,
            AlertIncident.state == OPEN)).scalars().all()
        standing = {row.key: row for row in rows}
        raised = [row for key, c in firing.items() if key not in standing
                  if (row := _open(session, scope, key, c, now)) is not None]
        for key, row in standing.items():
            if key in firing:
                _refresh(row, firing[key], now)
        resolved = [row for key, row in standing.items()
                    if key not in firing and _mine(row, scope)]
        for row in resolved:
            row.state, row.open_key, row.resolved_at = RESOLVED, None, now
        session.flush()
        audit.append(session, [_event(row, "raised") for row in raised]
                     + [_event(row, "resolved") for row in resolved], chain)
        result = Settled(tuple(r.id for r in raised), tuple(r.id for r in resolved),
                         len(standing) - len(resolved) + len(raised))
    for row in raised:
        metrics.ALERTS_RAISED.labels(row.rule).inc()
    return result


def _open(session: Session, scope: Scope, key: str, condition: Condition,
          now: datetime) -> AlertIncident | None:
    """Insert the incident; None when another node opened the same one just now."""
    row = AlertIncident(
        alert_channel=scope.alert_channel, rule=condition.rule, key=key, open_key=key,
        state=OPEN, summary=condition.summary, channel=condition.channel,
        destination=condition.destination, peer=condition.peer,
        figures=dict(condition.figures), node=scope.node_id, first_seen=now, last_seen=now)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        log.info("alert %s was opened by another node meanwhile", key)
        return None
    return row


def _refresh(row: AlertIncident, condition: Condition, now: datetime) -> None:
    row.last_seen, row.summary, row.figures = now, condition.summary, dict(condition.figures)


def _mine(row: AlertIncident, scope: Scope) -> bool:
    """Whether this pass may resolve `row`: another node's peer view is that node's."""
    return row.rule != "peer-down" or row.node == scope.node_id


def _event(row: AlertIncident, event: Event) -> audit.AuditRecord:
    return audit.AuditRecord(
        action=f"alert.{event}", actor=ACTOR, channel=row.alert_channel,
        detail={"incident": row.id, "rule": row.rule, "key": row.key,
                "summary": row.summary[:500], "channel": row.channel,
                "destination": row.destination, "peer": row.peer})


# --- announcing on the alerts channel --------------------------------------------------


async def announce(database: Database, alert_channel: str, receive: Receive) -> int:
    """Receive every raise and resolution of this channel not announced yet; how many."""
    rows = await asyncio.to_thread(_unannounced, database, alert_channel)
    done = 0
    for row in rows:
        events: list[Event] = []
        if row.raised_message_id is None:
            events.append("raised")
        if row.state == RESOLVED and row.resolved_message_id is None:
            events.append("resolved")
        for event in events:
            receipt = await receive(alert_inbound(row, event))
            await asyncio.to_thread(_announced, database, row.id, event, receipt.message_id)
            done += 1
    return done


def _unannounced(database: Database, alert_channel: str) -> list[AlertIncident]:
    with database.read() as session:
        rows = session.execute(select(AlertIncident).where(
            AlertIncident.alert_channel == alert_channel,
            or_(and_(AlertIncident.state == OPEN, AlertIncident.raised_message_id.is_(None)),
                and_(AlertIncident.state == RESOLVED,
                     AlertIncident.resolved_message_id.is_(None))),
        ).order_by(AlertIncident.id)).scalars().all()
        session.expunge_all()
        return list(rows)


def _announced(database: Database, incident_id: int, event: Event, message_id: int) -> None:
    with database.write() as session:
        row = session.get(AlertIncident, incident_id)
        if row is None:
            return
        if event == "raised":
            row.raised_message_id = message_id
        else:
            row.resolved_message_id = message_id


def alert_inbound(row: AlertIncident, event: Event) -> Inbound:
    """The message that announces `event` of an incident on its alerts channel."""
    body = {
        "type": "radbridge.alert", "event": event, "incident": row.id, "rule": row.rule,
        "key": row.key, "summary": row.summary, "channel": row.channel,
        "destination": row.destination, "peer": row.peer, "figures": row.figures,
        "node": row.node, "first_seen": _iso(row.first_seen),
        "last_seen": _iso(row.last_seen), "resolved_at": _iso(row.resolved_at),
    }
    return Inbound(
        channel=row.alert_channel, content_type=CONTENT_TYPE, source=f"internal:{ACTOR}",
        content=json.dumps(body, sort_keys=True, separators=(",", ":")).encode(),
        dedup_key=f"alert/{row.id}/{event}",
        metadata={"event": f"alert.{event}", "rule": row.rule})


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
