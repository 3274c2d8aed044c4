"""Correlating a study: decide with the rules, record what was decided, and queue the rest.

Every decision is an audit event in the caller's transaction:
- linked (by a rule, or by hand): one `correlation.linked` event per order, with the
  rule, confidence and reason; an open reconciliation item of the study is resolved;
- unmatched or conflict: the study gets one open reconciliation item (`correlation.queued`);
  the same verdict again only refreshes it, a new verdict replaces it;
- rejected by hand: the item is closed with who and why (`correlation.rejected`).
Links are only added here, never removed: undoing a link belongs to the changes after
the fact (cancelled orders, merges), which are separate decisions. A new link adopts the
study's study-only results, if any were sent, for a correction (results.ledger.adopt).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from radbridge.engine import audit
from radbridge.engine.correlation.facts import candidates, order_facts, study_facts
from radbridge.engine.models import (
    DicomStudy,
    Order,
    Patient,
    ReconciliationItem,
    StudyOrderLink,
    utcnow,
)
from radbridge.engine.results import ledger
from radbridge.errors import NotFound, RadbridgeError
from radbridge.mappings.correlation import (
    DEFAULT_RULES,
    Decision,
    Match,
    Outcome,
    Rule,
    correlate,
)

OPEN = "open"


class CorrelationError(RadbridgeError):
    """A correlation request that cannot be carried out (unknown study, closed item)."""


@dataclass(frozen=True)
class Settings:
    """How a channel correlates: its rules in order, and the scheduled-date window."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    window: timedelta = timedelta(days=2)


def correlate_study(session: Session, study_uid: str, settings: Settings, *, actor: str,
                    chain: str) -> Decision:
    """Decide for one study now and record it (see the module docstring)."""
    facts = study_facts(session, study_uid)
    if facts is None:
        raise CorrelationError(f"study {study_uid} is not in the DICOM index")
    decision = correlate(facts, candidates(session, facts, settings.window),
                         rules=settings.rules, window=settings.window)
    events: list[audit.AuditRecord] = []
    if decision.outcome is Outcome.LINKED:
        events += _link(session, study_uid, decision.matches, actor)
        events += _resolve(session, study_uid, "linked", actor, decision.reason)
    else:
        events += _queue(session, study_uid, decision, settings, actor)
    audit.append(session, events, chain)
    return decision


def retry_for_orders(session: Session, order_ids: Iterable[int], *, actor: str,
                     chain: str) -> list[tuple[str, Decision]]:
    """An order arrived or changed: correlate again the queued studies it may belong to
    (same requested Study UID, accession or patient), each with its own settings."""
    ids = sorted(set(order_ids))
    if not ids:
        return []
    orders = session.execute(select(Order).where(Order.id.in_(ids))).scalars().all()
    study_uids: set[str] = set()
    for order in orders:
        facts = order_facts(session, order)
        clauses = [DicomStudy.study_uid == order.study_uid] if order.study_uid else []
        if order.accession:
            clauses.append(DicomStudy.accession == order.accession)
        if facts.patient.identifier:
            clauses.append(DicomStudy.patient_id == facts.patient.identifier)
        for clause in clauses:
            study_uids.update(session.execute(
                select(DicomStudy.study_uid).join(
                    ReconciliationItem, ReconciliationItem.study_uid == DicomStudy.study_uid)
                .where(clause, ReconciliationItem.state == OPEN)).scalars())
    results = []
    for study_uid in sorted(study_uids):
        item = _open_item(session, study_uid)
        if item is None:
            continue
        settings = Settings(tuple(Rule(r) for r in item.rules),
                            timedelta(seconds=item.window_seconds))
        results.append((study_uid, correlate_study(session, study_uid, settings, actor=actor,
                                                   chain=chain)))
    return results


def link_by_hand(session: Session, item_id: int, order_ids: Sequence[int], *, actor: str,
                 note: str, chain: str) -> ReconciliationItem:
    """A person links a queued study to orders: recorded with full confidence and who."""
    item = _item(session, item_id)
    if not order_ids:
        raise CorrelationError("name at least one order to link")
    for order_id in order_ids:
        if session.get(Order, order_id) is None:
            raise NotFound(f"no order {order_id}")
    matches = [Match(order_id, Rule.STUDY_UID, 1.0, f"linked by hand: {note}"[:500])
               for order_id in order_ids]
    events = _link(session, item.study_uid, matches, actor, rule_name="manual")
    events += _resolve(session, item.study_uid, "linked", actor, note)
    audit.append(session, events, chain)
    return item


def reject_by_hand(session: Session, item_id: int, *, actor: str, note: str,
                   chain: str) -> ReconciliationItem:
    """A person decides the study has no order here (e.g. a test, another site's)."""
    item = _item(session, item_id)
    events = _resolve(session, item.study_uid, "rejected", actor, note)
    audit.append(session, events, chain)
    return item


def _item(session: Session, item_id: int) -> ReconciliationItem:
    item = session.get(ReconciliationItem, item_id)
    if item is None:
        raise NotFound(f"no reconciliation item {item_id}")
    if item.state != OPEN:
        raise CorrelationError(f"reconciliation item {item_id} is {item.state}, not open")
    return item


def _open_item(session: Session, study_uid: str) -> ReconciliationItem | None:
    return session.execute(
        select(ReconciliationItem).where(ReconciliationItem.study_uid == study_uid,
                                         ReconciliationItem.state == OPEN)
        .order_by(ReconciliationItem.id.desc()).limit(1)).scalar_one_or_none()


def _link(session: Session, study_uid: str, matches: Sequence[Match], actor: str, *,
          rule_name: str | None = None) -> list[audit.AuditRecord]:
    known = set(session.execute(select(StudyOrderLink.order_id).where(
        StudyOrderLink.study_uid == study_uid)).scalars())
    events = []
    for match in matches:
        if match.order_id in known:
            continue
        rule = rule_name or match.rule.value
        session.add(StudyOrderLink(study_uid=study_uid, order_id=match.order_id, rule=rule,
                                   confidence=match.confidence, reason=match.reason,
                                   decided_by=actor, created_at=utcnow()))
        order = session.get(Order, match.order_id)
        patient = session.get(Patient, order.patient_id) if order else None
        events.append(audit.AuditRecord(
            action="correlation.linked", actor=actor, study_uid=study_uid,
            accession=order.accession if order else None,
            patient_id=patient.identifier if patient else None,
            detail={"order_id": match.order_id, "rule": rule,
                    "confidence": match.confidence, "reason": match.reason}))
    session.flush()
    if events:  # results sent before the link (study-only) now owe a correction
        ledger.adopt(session, study_uid)
    return events


def _resolve(session: Session, study_uid: str, state: str, actor: str, note: str
             ) -> list[audit.AuditRecord]:
    item = _open_item(session, study_uid)
    if item is None:
        return []
    item.state, item.resolved_by, item.note = state, actor, note[:2000]
    item.updated_at = utcnow()
    action = "correlation.rejected" if state == "rejected" else "correlation.resolved"
    return [audit.AuditRecord(action=action, actor=actor, study_uid=study_uid,
                              detail={"item": item.id, "state": state, "note": note[:500]})]


def _queue(session: Session, study_uid: str, decision: Decision, settings: Settings,
           actor: str) -> list[audit.AuditRecord]:
    now = utcnow()
    found = [{"order_id": m.order_id, "rule": m.rule.value, "confidence": m.confidence}
             for m in decision.matches]
    item = _open_item(session, study_uid)
    if item is not None and item.kind == decision.outcome.value \
            and item.reason == decision.reason and item.candidates == found:
        item.updated_at = now
        return []
    if item is not None:
        item.state, item.resolved_by, item.updated_at = "superseded", actor, now
    item = ReconciliationItem(
        study_uid=study_uid, kind=decision.outcome.value, reason=decision.reason,
        candidates=found, rules=[r.value for r in settings.rules],
        window_seconds=settings.window.total_seconds(), state=OPEN, created_at=now,
        updated_at=now)
    session.add(item)
    session.flush()
    return [audit.AuditRecord(
        action="correlation.queued", actor=actor, outcome="failure", study_uid=study_uid,
        detail={"item": item.id, "kind": decision.outcome.value, "reason": decision.reason,
                "candidates": found})]
