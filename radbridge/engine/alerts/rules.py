"""The alert rules: which conditions hold now, read from the store and the peer tracker.

A `Condition` is one thing wrong now (this destination's error rate, that peer); its
rule and subject name the incident, so the same problem seen again is the same
incident. The reads are aggregates over indexed columns, cheap enough for every pass:

- error rate: the audit ledger's delivery and processing events of the last window
  (by time), per destination (`delivery.sent` / `delivery.failed`) and per channel
  (`message.errored` among the processed), grouped in SQL.
- dead letters: `delivery.failed` events with outcome `dead` in the last window.
- queue age: the oldest pending delivery per destination (the outbox index).
- peer down: this process's peer tracker (radbridge.engine.peers).
- drift: the QA monitor's `qa.drift.alert` events whose period has not ended.

Nothing here carries PHI: channel and destination names, peers, counts and seconds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import cast, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from radbridge.engine import audit, queries
from radbridge.engine.config import AlertsSource
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import AuditEvent
from radbridge.engine.peers import PeerState
from radbridge.engine.qa.monitor import ACTION as DRIFT_ACTION
from radbridge.engine.qa.monitor import ACTOR as DRIFT_ACTOR

DRIFT_EVENTS = 1000
"""The newest drift alerts a pass reads (each is one model, measure and period)."""
_DELIVERY = ("delivery.sent", "delivery.failed")
_PROCESSING = ("message.transformed", "message.filtered", "message.errored")


@dataclass(frozen=True)
class Condition:
    """One problem that holds now; (rule, subject) names its incident."""

    rule: str
    subject: str
    summary: str
    channel: str | None = None
    destination: str | None = None
    peer: str | None = None
    figures: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scope:
    """What one alerts channel watches, and who is looking."""

    alert_channel: str
    channels: frozenset[str]
    """The channels watched; empty: every channel except the alerts channel itself."""
    node_id: str

    def watches(self, channel: str | None) -> bool:
        if channel is None:
            return False
        if self.channels:
            return channel in self.channels
        return channel != self.alert_channel


def evaluate(session: Session, config: AlertsSource, scope: Scope, now: datetime,
             peers: Iterable[PeerState]) -> list[Condition]:
    """Every condition the enabled rules find now."""
    found: list[Condition] = []
    if config.error_rate.enabled:
        found += error_rates(session, config, scope, now)
    if config.dead_letters.enabled:
        found += dead_letters(session, config, scope, now)
    if config.queue_age.enabled:
        found += queue_ages(session, config, scope, now)
    if config.peer_down.enabled:
        found += peers_down(peers, config, scope)
    if config.drift.enabled:
        found += drifts(session, now.date())
    return found


# --- error rate and dead letters: counted from the audit ledger ------------------------


@dataclass
class _Counts:
    total: int = 0
    failed: int = 0
    dead: int = 0


def _destination_of(session: Session) -> ColumnElement[Any]:
    """The `destination` inside an event's JSON detail, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        text: ColumnElement[Any] = cast(AuditEvent.detail, JSONB)["destination"].astext
        return text
    return func.json_extract(AuditEvent.detail, "$.destination")


def _counts(session: Session, since: datetime, actions: tuple[str, ...]
            ) -> dict[tuple[str, str | None], _Counts]:
    """(channel, destination or None) -> attempts (or messages), failed, dead since `since`."""
    destination = _destination_of(session)
    rows = session.execute(
        select(AuditEvent.channel, destination, AuditEvent.action, AuditEvent.outcome,
               func.count())
        .where(AuditEvent.at >= since, AuditEvent.action.in_(actions))
        .group_by(AuditEvent.channel, destination, AuditEvent.action, AuditEvent.outcome)
    ).all()
    counts: dict[tuple[str, str | None], _Counts] = defaultdict(_Counts)
    for channel, dest, action, outcome, count in rows:
        if channel is None:
            continue
        entry = counts[(channel, dest if action.startswith("delivery.") else None)]
        entry.total += count
        if action in ("delivery.failed", "message.errored"):
            entry.failed += count
        if action == "delivery.failed" and outcome == "dead":
            entry.dead += count
    return counts


def error_rates(session: Session, config: AlertsSource, scope: Scope, now: datetime
                ) -> list[Condition]:
    rule = config.error_rate
    found = []
    counts = _counts(session, now - timedelta(seconds=rule.window), _DELIVERY + _PROCESSING)
    for (channel, destination), count in sorted(counts.items(), key=lambda i: str(i[0])):
        if not scope.watches(channel) or count.total < rule.min_attempts:
            continue
        rate = count.failed / count.total
        if rate < rule.threshold:
            continue
        what = ("delivery attempts" if destination is not None
                else "messages processed (filter or transformer errors)")
        subject = channel if destination is None else f"{channel}/{destination}"
        found.append(Condition(
            "error-rate", subject, f"{subject}: {count.failed} of {count.total} {what} "
            f"failed in the last {_span(rule.window)} ({rate:.0%})", channel, destination,
            figures={"failed": count.failed, "total": count.total, "rate": round(rate, 4),
                     "window_seconds": rule.window}))
    return found


def dead_letters(session: Session, config: AlertsSource, scope: Scope, now: datetime
                 ) -> list[Condition]:
    rule = config.dead_letters
    counts = _counts(session, now - timedelta(seconds=rule.window), _DELIVERY)
    found = []
    for (channel, destination), count in sorted(counts.items(), key=lambda i: str(i[0])):
        if not scope.watches(channel) or destination is None or not count.dead:
            continue
        subject = f"{channel}/{destination}"
        found.append(Condition(
            "dead-letters", subject, f"{subject}: {count.dead} deliveries dead-lettered in "
            f"the last {_span(rule.window)}", channel, destination,
            figures={"dead": count.dead, "window_seconds": rule.window}))
    return found


# --- queue age, peers, drift -----------------------------------------------------------


def queue_ages(session: Session, config: AlertsSource, scope: Scope, now: datetime
               ) -> list[Condition]:
    limit = config.queue_age.max_age
    found = []
    for row in queries.queue_depths(session, None, statuses=[DeliveryStatus.PENDING]):
        if not scope.watches(row.channel) or row.oldest_created_at is None:
            continue
        age = (now - row.oldest_created_at).total_seconds()
        if age <= limit:
            continue
        subject = f"{row.channel}/{row.destination}"
        found.append(Condition(
            "queue-age", subject, f"{subject}: the oldest of {row.count} pending deliveries "
            f"has waited {_span(age)} (limit {_span(limit)})", row.channel, row.destination,
            figures={"oldest_pending_seconds": round(age, 1), "pending": row.count,
                     "max_age_seconds": limit}))
    return found


def peers_down(peers: Iterable[PeerState], config: AlertsSource, scope: Scope
               ) -> list[Condition]:
    failures = config.peer_down.failures
    found = []
    for state in peers:
        users = sorted(d for d in state.destinations if scope.watches(d.split("/", 1)[0]))
        if not users or state.consecutive_failures < failures:
            continue
        channel, _, destination = users[0].partition("/")
        found.append(Condition(
            "peer-down", f"{scope.node_id}/{state.peer}",
            f"peer {state.peer} unreachable from node {scope.node_id}: "
            f"{state.consecutive_failures} connection failures in a row since "
            f"{state.since.isoformat(timespec='seconds')} (used by {', '.join(users)})",
            channel, destination, state.peer,
            figures={"consecutive_failures": state.consecutive_failures,
                     "down_since": state.since.isoformat(), "node": scope.node_id}))
    return found


def drifts(session: Session, today: date) -> list[Condition]:
    events = audit.query(session, audit.AuditQuery(actor=DRIFT_ACTOR, action=DRIFT_ACTION,
                                                   limit=DRIFT_EVENTS))
    found: dict[str, Condition] = {}
    for event in events:
        detail = json.loads(event.detail or "{}")
        key, current = detail.get("key"), detail.get("current") or {}
        try:
            ends = date.fromisoformat(str(current.get("end")))
        except ValueError:
            continue
        if not isinstance(key, str) or ends < today or key in found:
            continue
        found[key] = Condition(
            "drift", key, f"drift of {detail.get('model')} {detail.get('version')} "
            f"({detail.get('measure')}) in {current.get('start')}..{current.get('end')}: "
            f"{detail.get('verdict')}", event.channel,
            figures={name: detail.get(name) for name in (
                "model", "version", "measure", "psi", "ks_p_value", "n_baseline",
                "n_current")})
    return list(found.values())


def _span(seconds: float) -> str:
    """Seconds as people say them: 45s, 5m, 2h, 3d."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"
