"""The matching rules decide, say why and how sure, and never settle a conflict silently."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from radbridge.mappings.correlation import (
    OrderFacts,
    Outcome,
    PatientKey,
    Rule,
    StudyFacts,
    correlate,
)

JANE = PatientKey("MRN1", "HOSP")
JOHN = PatientKey("MRN2", "HOSP")
DAY = date(2026, 11, 20)


def study(**fields) -> StudyFacts:
    base = {"study_uid": "1.2.3", "accessions": (("ACC1", ""),), "patient": JANE,
            "modalities": ("CT",), "study_date": DAY}
    return StudyFacts(**{**base, **fields})


def order(order_id: int, **fields) -> OrderFacts:
    base = {"patient": JANE, "modality": "CT",
            "scheduled_at": datetime(2026, 11, 20, 9, 30)}
    return OrderFacts(order_id, **{**base, **fields})


def test_the_study_uid_the_order_assigned_wins_over_everything_else():
    decision = correlate(study(), [order(1, accession="ACC1"), order(2, study_uid="1.2.3")])
    assert decision.outcome is Outcome.LINKED
    assert [(m.order_id, m.rule, m.confidence) for m in decision.matches] == [
        (2, Rule.STUDY_UID, 1.0)]


def test_accession_with_issuer():
    decision = correlate(study(accessions=(("ACC1", "RIS-A"),)), [
        order(1, accession="ACC1", accession_issuer="RIS-B"),
        order(2, accession="ACC1", accession_issuer="RIS-A")])
    assert (decision.outcome, decision.order_ids) == (Outcome.LINKED, (2,))
    assert decision.matches[0].confidence == 0.95


def test_a_combined_exam_links_to_both_orders():
    decision = correlate(study(accessions=(("ACC1", ""), ("ACC2", ""))), [
        order(1, accession="ACC1", modality="CT"), order(2, accession="ACC2", modality="CT")])
    assert (decision.outcome, decision.order_ids) == (Outcome.LINKED, (1, 2))


def test_an_accession_of_two_patients_is_a_conflict():
    decision = correlate(study(), [order(1, accession="ACC1"),
                                   order(2, accession="ACC1", patient=JOHN)])
    assert decision.outcome is Outcome.CONFLICT
    assert "2 different patients" in decision.reason and decision.order_ids == (1, 2)


def test_a_study_whose_patient_differs_from_its_order_is_a_conflict():
    decision = correlate(study(patient=JOHN), [order(1, study_uid="1.2.3")])
    assert decision.outcome is Outcome.CONFLICT
    assert "PatientID" in decision.reason


def test_patient_window_needs_modality_and_date_and_refuses_ties():
    near = order(1, scheduled_at=datetime(2026, 11, 21, 8))
    far = order(2, scheduled_at=datetime(2026, 11, 29, 8))
    other_modality = order(3, modality="MR")
    decision = correlate(study(accessions=()), [near, far, other_modality])
    assert (decision.outcome, decision.order_ids) == (Outcome.LINKED, (1,))
    assert decision.matches[0].confidence == 0.7
    tie = correlate(study(accessions=()), [near, order(4)])
    assert tie.outcome is Outcome.CONFLICT and "2 orders" in tie.reason


def test_cancelled_orders_are_not_candidates_and_nothing_found_says_why():
    decision = correlate(study(accessions=(), patient=None),
                         [order(1, study_uid="1.2.3", status="cancelled")])
    assert decision.outcome is Outcome.UNMATCHED
    assert "no accession" in decision.reason and "no PatientID" in decision.reason


def test_rules_are_tried_in_the_channels_order():
    orders = [order(1, accession="ACC1"), order(2, study_uid="1.2.3")]
    decision = correlate(study(), orders, rules=[Rule.ACCESSION, Rule.STUDY_UID])
    assert decision.order_ids == (1,) and decision.matches[0].rule is Rule.ACCESSION


@given(st.permutations(list(range(1, 6))), st.integers(0, 4))
def test_the_decision_does_not_depend_on_the_order_candidates_come_in(ids, linked):
    candidates = [order(i, accession=f"ACC{i}", scheduled_at=datetime(2026, 11, 20)
                        + timedelta(days=i * 10)) for i in ids]
    target = study(accessions=((f"ACC{ids[linked]}", ""),))
    forward = correlate(target, candidates)
    backward = correlate(target, list(reversed(candidates)))
    assert forward.outcome is backward.outcome is Outcome.LINKED
    assert forward.order_ids == backward.order_ids == (ids[linked],)


def test_patient_window_leaves_orders_that_have_a_study_already():
    taken = order(1, linked=True)
    assert correlate(study(accessions=()), [taken]).outcome is Outcome.UNMATCHED
    by_accession = correlate(study(), [order(1, accession="ACC1", linked=True)])
    assert by_accession.outcome is Outcome.LINKED  # one order, several studies
