"""Which order(s) a study belongs to: the matching rules, as pure functions.

The engine gathers the candidates (orders sharing the study's requested Study UID, its
accession, or its patient) and asks `correlate`; this module only decides. Rules are
tried in the order a channel lists them; the first rule that finds anything decides,
and says why and how sure it is:

- `study_uid`: the order assigned this Study Instance UID (ZDS-1, IPC-3). Confidence 1.0.
- `accession`: same accession number, and the same issuer where both give one.
  Confidence 0.95.
- `patient_window`: same patient identifier and issuer, a modality the study has, and a
  scheduled time within the window of the study date (the procedure code must match
  too when both sides give one), among orders that have no study yet. Confidence 0.7.

Nothing is resolved silently: candidates of two different patients, or two orders found
by a rule that expects one (`patient_window`), make a conflict; a study whose DICOM
patient differs from its order's patient is a conflict even when the rule was certain.
A study may link to several orders (combined exams under two accessions) when the
rule found them for the same patient by study UID or accession.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum


class Rule(StrEnum):
    STUDY_UID = "study_uid"
    ACCESSION = "accession"
    PATIENT_WINDOW = "patient_window"


CONFIDENCE = {Rule.STUDY_UID: 1.0, Rule.ACCESSION: 0.95, Rule.PATIENT_WINDOW: 0.7}
DEFAULT_RULES = (Rule.STUDY_UID, Rule.ACCESSION, Rule.PATIENT_WINDOW)


class Outcome(StrEnum):
    LINKED = "linked"
    UNMATCHED = "unmatched"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class PatientKey:
    """A patient identifier with its assigning authority ('' when not given)."""

    identifier: str
    issuer: str = ""

    def same_as(self, other: PatientKey) -> bool:
        """Same identifier, and the same issuer unless one side does not say."""
        if self.identifier != other.identifier:
            return False
        return not self.issuer or not other.issuer or self.issuer == other.issuer


@dataclass(frozen=True)
class StudyFacts:
    """What the study's instances say."""

    study_uid: str
    accessions: tuple[tuple[str, str], ...] = ()
    """(accession, issuer or '') pairs: a combined exam carries two."""
    patient: PatientKey | None = None
    modalities: tuple[str, ...] = ()
    procedure_codes: tuple[str, ...] = ()
    study_date: date | None = None


@dataclass(frozen=True)
class OrderFacts:
    """What the registry knows of one candidate order (its patient after merges)."""

    order_id: int
    patient: PatientKey
    accession: str | None = None
    accession_issuer: str | None = None
    study_uid: str | None = None
    modality: str | None = None
    procedure_code: str | None = None
    scheduled_at: datetime | None = None
    status: str = "scheduled"
    linked: bool = False
    """The order has a study already: the patient-and-date rule leaves it alone (the
    identifier rules still find it, for an order with several studies)."""


@dataclass(frozen=True)
class Match:
    order_id: int
    rule: Rule
    confidence: float
    reason: str


@dataclass(frozen=True)
class Decision:
    """The verdict: linked orders, or why the study goes to the reconciliation queue."""

    outcome: Outcome
    matches: tuple[Match, ...] = ()
    reason: str = ""

    @property
    def order_ids(self) -> tuple[int, ...]:
        return tuple(match.order_id for match in self.matches)


def correlate(study: StudyFacts, candidates: Sequence[OrderFacts], *,
              rules: Sequence[Rule] = DEFAULT_RULES,
              window: timedelta = timedelta(days=2)) -> Decision:
    """Apply `rules` in order to `candidates`; see the module docstring."""
    live = [order for order in candidates if order.status not in ("cancelled",
                                                                   "discontinued")]
    for rule in rules:
        found = _find(rule, study, live, window)
        if not found:
            continue
        return _judge(rule, study, found)
    return Decision(Outcome.UNMATCHED, reason=_unmatched_reason(study, rules))


def _find(rule: Rule, study: StudyFacts, orders: Sequence[OrderFacts],
          window: timedelta) -> list[OrderFacts]:
    if rule is Rule.STUDY_UID:
        return [o for o in orders if o.study_uid and o.study_uid == study.study_uid]
    if rule is Rule.ACCESSION:
        return [o for o in orders if o.accession and any(
            o.accession == accession and _same_issuer(o.accession_issuer, issuer)
            for accession, issuer in study.accessions)]
    if study.patient is None or study.study_date is None:
        return []
    return [o for o in orders if not o.linked and o.patient.same_as(study.patient)
            and o.modality is not None and o.modality in study.modalities
            and _within(o.scheduled_at, study.study_date, window)
            and _same_procedure(o.procedure_code, study.procedure_codes)]


def _judge(rule: Rule, study: StudyFacts, found: list[OrderFacts]) -> Decision:
    patients = _distinct_patients(found)
    if len(patients) > 1:
        return Decision(Outcome.CONFLICT, _matches(rule, found),
                        f"{rule.value} matches orders of {len(patients)} different patients")
    if rule is Rule.PATIENT_WINDOW and len(found) > 1:
        return Decision(Outcome.CONFLICT, _matches(rule, found),
                        f"{len(found)} orders of this patient fit the modality and date window")
    if study.patient is not None and not patients[0].same_as(study.patient):
        return Decision(Outcome.CONFLICT, _matches(rule, found),
                        "the study's PatientID (or its issuer) differs from the order's patient")
    return Decision(Outcome.LINKED, _matches(rule, found), f"matched by {rule.value}")


def _matches(rule: Rule, found: Sequence[OrderFacts]) -> tuple[Match, ...]:
    return tuple(Match(o.order_id, rule, CONFIDENCE[rule], _why(rule, o)) for o in found)


def _why(rule: Rule, order: OrderFacts) -> str:
    if rule is Rule.STUDY_UID:
        return "the order assigned this Study Instance UID"
    if rule is Rule.ACCESSION:
        return "same accession number" + (" and issuer" if order.accession_issuer else "")
    return "same patient, modality and scheduled date window"


def _distinct_patients(orders: Sequence[OrderFacts]) -> list[PatientKey]:
    distinct: list[PatientKey] = []
    for order in orders:
        if not any(order.patient.same_as(known) for known in distinct):
            distinct.append(order.patient)
    return distinct


def _same_issuer(order_issuer: str | None, study_issuer: str) -> bool:
    return not order_issuer or not study_issuer or order_issuer == study_issuer


def _within(scheduled: datetime | None, study_date: date, window: timedelta) -> bool:
    if scheduled is None:
        return False
    return abs(scheduled.date() - study_date) <= window


def _same_procedure(order_code: str | None, study_codes: Sequence[str]) -> bool:
    return order_code is None or not study_codes or order_code in study_codes


def _unmatched_reason(study: StudyFacts, rules: Sequence[Rule]) -> str:
    missing = []
    if not study.accessions:
        missing.append("no accession")
    if study.patient is None:
        missing.append("no PatientID")
    detail = f" ({', '.join(missing)})" if missing else ""
    return f"no order found by {', '.join(r.value for r in rules)}{detail}"
