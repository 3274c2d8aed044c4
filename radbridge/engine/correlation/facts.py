"""The facts the matching rules need, read from the DICOM index and the registry.

Candidates are found through indexes only: orders by requested Study UID, by accession,
and by patient (every identifier row that leads to the same surviving patient after
merges) within the scheduled-date window.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from radbridge.engine.models import DicomInstance, DicomStudy, Order, Patient, StudyOrderLink
from radbridge.engine.registry.patients import follow_merges
from radbridge.mappings.correlation import OrderFacts, PatientKey, StudyFacts
from radbridge.mappings.dicom.values import dicom_date

MAX_CANDIDATES = 200
"""Orders read for one study at most: more under one patient and window is a conflict
to look at, not something to rank."""


def study_facts(session: Session, study_uid: str) -> StudyFacts | None:
    """The study as the index knows it; None when no instance of it was received."""
    row = session.execute(select(DicomStudy).where(DicomStudy.study_uid == study_uid)
                          ).scalar_one_or_none()
    if row is None:
        return None
    patient = None
    if row.patient_id:
        patient = _survivor_key(session, PatientKey(row.patient_id,
                                                    row.issuer_of_patient_id or ""))
    accessions = _accessions(session, study_uid)
    if row.accession and (row.accession, row.accession_issuer or "") not in accessions:
        accessions = ((row.accession, row.accession_issuer or ""), *accessions)
    return StudyFacts(study_uid=study_uid, accessions=accessions, patient=patient,
                      modalities=tuple(m for m in row.modalities.split("\\") if m),
                      study_date=dicom_date(row.study_date))


def candidates(session: Session, facts: StudyFacts, window: timedelta) -> list[OrderFacts]:
    """Orders that any rule could pick for this study."""
    clauses = [Order.study_uid == facts.study_uid]
    accessions = [accession for accession, _ in facts.accessions]
    if accessions:
        clauses.append(Order.accession.in_(accessions))
    patient_ids = _patient_rows(session, facts.patient)
    if patient_ids and facts.study_date is not None:
        start = datetime.combine(facts.study_date, time(), UTC) - window
        end = datetime.combine(facts.study_date, time(), UTC) + timedelta(days=1) + window
        clauses.append(Order.patient_id.in_(patient_ids) & Order.scheduled_at.between(start, end))
    orders = session.execute(select(Order).where(or_(*clauses)).order_by(Order.id)
                             .limit(MAX_CANDIDATES)).scalars().all()
    linked = set(session.execute(
        select(StudyOrderLink.order_id).where(
            StudyOrderLink.order_id.in_([o.id for o in orders]),
            StudyOrderLink.study_uid != facts.study_uid)).scalars()) if orders else set()
    return [replace(order_facts(session, order), linked=order.id in linked)
            for order in orders]


def order_facts(session: Session, order: Order) -> OrderFacts:
    owner = session.get(Patient, order.patient_id)
    survivor = follow_merges(session, owner) if owner is not None else None
    key = PatientKey(survivor.identifier, survivor.issuer) if survivor else PatientKey("")
    return OrderFacts(order_id=order.id, patient=key, accession=order.accession,
                      accession_issuer=order.accession_issuer, study_uid=order.study_uid,
                      modality=order.modality, procedure_code=order.procedure_code,
                      scheduled_at=order.scheduled_at, status=order.status)


def _accessions(session: Session, study_uid: str) -> tuple[tuple[str, str], ...]:
    """Every (accession, issuer) the study's current instances carry, in arrival order."""
    found: dict[tuple[str, str], None] = {}
    for attributes in session.execute(
            select(DicomInstance.attributes).where(DicomInstance.study_uid == study_uid,
                                                   DicomInstance.current.is_(True))
            .order_by(DicomInstance.id)).scalars():
        accession = (attributes or {}).get("AccessionNumber")
        if accession:
            found[(accession, (attributes or {}).get("AccessionIssuer", ""))] = None
    return tuple(found)


def _survivor_key(session: Session, key: PatientKey) -> PatientKey:
    """The key of the patient this identifier now belongs to (after merges: a study made
    under an identifier merged away is the survivor's), or the key itself when the
    registry does not know it or it is ambiguous across issuers."""
    statement = select(Patient).where(Patient.identifier == key.identifier)
    if key.issuer:
        statement = statement.where(Patient.issuer == key.issuer)
    survivors = {follow_merges(session, row).id: follow_merges(session, row)
                 for row in session.execute(statement).scalars()}
    if len(survivors) != 1:
        return key
    survivor = next(iter(survivors.values()))
    return PatientKey(survivor.identifier, survivor.issuer)


def _patient_rows(session: Session, key: PatientKey | None) -> list[int]:
    """Ids of the patient rows for this identifier, their survivors, and every row that
    was merged into those survivors (orders were re-pointed, but stay safe)."""
    if key is None:
        return []
    statement = select(Patient).where(Patient.identifier == key.identifier)
    if key.issuer:
        statement = statement.where(Patient.issuer == key.issuer)
    rows = session.execute(statement).scalars().all()
    survivors = {follow_merges(session, row).id for row in rows}
    merged = session.execute(select(Patient.id).where(
        Patient.merged_into_id.in_(survivors))).scalars().all() if survivors else []
    return sorted({row.id for row in rows} | survivors | set(merged))
