"""Reading the registry back: patients (through merges), their encounters and orders.

Each function takes an open session (`database.read()`); rows come back as the ORM
models and stay readable after the session closes.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from radbridge.engine.models import Encounter, Order, OrderStatusHistory, Patient, Study
from radbridge.engine.registry.patients import find_patient, follow_merges


def patient_by_identifier(session: Session, identifier: str, issuer: str = "") -> Patient | None:
    """The patient known by this identifier, or the one it was merged into."""
    found = find_patient(session, identifier, issuer)
    return None if found is None else follow_merges(session, found)


def merged_patients(session: Session, patient_id: int) -> list[Patient]:
    """The patients merged into this one (their identifiers now lead to it)."""
    return list(session.execute(select(Patient).where(Patient.merged_into_id == patient_id)
                                .order_by(Patient.id)).scalars())


def patient_orders(session: Session, patient_id: int) -> list[Order]:
    """A patient's orders, oldest first."""
    return list(session.execute(select(Order).where(Order.patient_id == patient_id)
                                .order_by(Order.id)).scalars())


def patient_encounters(session: Session, patient_id: int) -> list[Encounter]:
    """A patient's encounters, oldest first."""
    return list(session.execute(select(Encounter).where(Encounter.patient_id == patient_id)
                                .order_by(Encounter.id)).scalars())


def patient_studies(session: Session, patient_id: int) -> list[Study]:
    return list(session.execute(select(Study).where(Study.patient_id == patient_id)
                                .order_by(Study.id)).scalars())


def encounter_by_visit(session: Session, visit_number: str, issuer: str = "") -> Encounter | None:
    return session.execute(select(Encounter).where(
        Encounter.visit_number == visit_number, Encounter.visit_issuer == issuer)
    ).scalar_one_or_none()


def orders_by_accession(session: Session, accession: str,
                        issuer: str | None = None) -> list[Order]:
    """Orders under an accession number (several when one accession covers several)."""
    statement = select(Order).where(Order.accession == accession)
    if issuer is not None:
        statement = statement.where(Order.accession_issuer == issuer)
    return list(session.execute(statement.order_by(Order.id)).scalars())


def order_by_accession(session: Session, accession: str,
                       issuer: str | None = None) -> Order | None:
    """The first order under an accession number, or None."""
    found = orders_by_accession(session, accession, issuer)
    return found[0] if found else None


def order_by_placer(session: Session, placer_number: str) -> Order | None:
    return session.execute(select(Order).where(Order.placer_number == placer_number)
                           .order_by(Order.id).limit(1)).scalar_one_or_none()


def order_by_filler(session: Session, filler_number: str) -> Order | None:
    return session.execute(select(Order).where(Order.filler_number == filler_number)
                           .order_by(Order.id).limit(1)).scalar_one_or_none()


def order_by_study_uid(session: Session, study_uid: str) -> Order | None:
    return session.execute(select(Order).where(Order.study_uid == study_uid)
                           .order_by(Order.id).limit(1)).scalar_one_or_none()


def order_history(session: Session, order_id: int) -> list[OrderStatusHistory]:
    """Every message applied to an order, oldest first."""
    return list(session.execute(
        select(OrderStatusHistory).where(OrderStatusHistory.order_id == order_id)
        .order_by(OrderStatusHistory.id)).scalars())
