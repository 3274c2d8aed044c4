"""Patients, merges and encounters: the rules for applying ADT events.

A patient is keyed by (identifier, issuer) of its primary identifier (MR, else the
first of PID-3). A merged patient keeps its row, pointing at its survivor, so a late
message under the old identifier still lands on the right patient.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from radbridge.engine.models import Encounter, Order, Patient, Study, utcnow
from radbridge.engine.registry.changes import Changes, assign, fit
from radbridge.engine.registry.status import BY_TRIGGER, NEEDS_ENCOUNTER, EncounterStatus
from radbridge.mappings.hl7.errors import Hl7ContentError
from radbridge.mappings.hl7.inbound import (
    AdtTrigger,
    Demographics,
    Identifier,
    PatientEvent,
    Visit,
    primary_identifier,
)

MAX_MERGE_DEPTH = 32
"""Merges are flattened as they happen; a longer chain means the table was edited."""


def follow_merges(session: Session, patient: Patient) -> Patient:
    """The patient that `patient` was (perhaps transitively) merged into, or itself."""
    for _ in range(MAX_MERGE_DEPTH):
        if patient.merged_into_id is None:
            return patient
        survivor = session.get(Patient, patient.merged_into_id)
        if survivor is None:
            break
        patient = survivor
    raise RuntimeError(f"patient {patient.id}: merge chain is broken or cyclic")


def find_patient(session: Session, identifier: str, issuer: str) -> Patient | None:
    """The row with exactly this identifier and issuer, merged or not."""
    return session.execute(select(Patient).where(
        Patient.identifier == identifier, Patient.issuer == issuer)).scalar_one_or_none()


def resolve_patient(session: Session, demographics: Demographics, changes: Changes, *,
                    update_demographics: bool) -> Patient:
    """The (surviving) patient of PID, created if new; ADT updates demographics, orders not."""
    primary = demographics.primary
    issuer = primary.issuer or changes.ref.default_issuer
    values = {"name": demographics.name, "birth_date": demographics.birth_date,
              "sex": demographics.sex}
    found = find_patient(session, primary.value, issuer)
    if found is None:
        now = utcnow()
        created = Patient(identifier=primary.value, issuer=issuer, created_at=now,
                          updated_at=now, **values)
        fit(created)
        session.add(created)
        session.flush()
        changes.add("registry.patient.created", created, {"patient": created.id})
        return created
    patient = follow_merges(session, found)
    if update_demographics and (changed := assign(patient, values)):
        patient.updated_at = utcnow()
        via = {} if patient is found else {"via_merged_patient": found.id}
        changes.add("registry.patient.updated", patient,
                    {"patient": patient.id, "fields": changed, **via})
    return patient


def merge(session: Session, survivor: Patient, prior_ids: tuple[Identifier, ...],
          changes: Changes) -> None:
    """A40: mark the MRG-1 patient merged into `survivor` and move what it had to it."""
    primary = primary_identifier(prior_ids)
    issuer = primary.issuer or changes.ref.default_issuer
    prior = find_patient(session, primary.value, issuer)
    if prior is None:  # never seen: keep its identifier so late messages find the survivor
        prior = Patient(identifier=primary.value, issuer=issuer, merged_into_id=survivor.id)
        fit(prior)
        session.add(prior)
        session.flush()
        changes.add("registry.patient.created", prior,
                    {"patient": prior.id, "merged_into": survivor.id})
    elif follow_merges(session, prior) is survivor:
        if prior is survivor:
            raise Hl7ContentError("MRG-1 (prior patient identifier list)",
                                  "names the surviving patient itself")
        return  # merged before, by another message
    elif prior.merged_into_id is not None:
        raise Hl7ContentError("MRG-1 (prior patient identifier list)",
                              "names a patient already merged into a different one")
    moved: dict[str, int] = {}
    for table in (Order, Encounter, Study):
        result = session.execute(update(table).where(table.patient_id == prior.id)
                                 .values(patient_id=survivor.id).returning(table.id))
        moved[table.__tablename__] = len(result.all())
    session.execute(update(Patient).where(Patient.merged_into_id == prior.id)
                    .values(merged_into_id=survivor.id))
    prior.merged_into_id = survivor.id
    prior.updated_at = survivor.updated_at = utcnow()
    detail: dict[str, object] = {"prior_patient": prior.id, "survivor_patient": survivor.id,
                                 "moved": moved}
    changes.add("registry.patient.merged", prior, {
        **detail, "role": "prior", "survivor_identifier": survivor.identifier,
        "survivor_issuer": survivor.issuer})
    changes.add("registry.patient.merged", survivor, {
        **detail, "role": "survivor", "prior_identifier": prior.identifier,
        "prior_issuer": prior.issuer})


def apply_visit(session: Session, event: PatientEvent, patient: Patient,
                changes: Changes) -> None:
    """Create or update the PV1-19 encounter and move it along the trigger's status."""
    visit = event.visit
    if visit is None or visit.visit_number is None:
        if event.trigger in NEEDS_ENCOUNTER:
            raise Hl7ContentError("PV1-19 (visit number)",
                                  f"is empty: {event.trigger} is about an encounter")
        return
    number = visit.visit_number
    issuer = number.issuer or changes.ref.default_issuer
    encounter = session.execute(select(Encounter).where(
        Encounter.visit_number == number.value, Encounter.visit_issuer == issuer)
    ).scalar_one_or_none()
    now = utcnow()
    created = encounter is None
    if encounter is None:
        encounter = Encounter(patient_id=patient.id, visit_number=number.value,
                              visit_issuer=issuer, status=EncounterStatus.ADMITTED,
                              created_at=now)
        session.add(encounter)
    else:
        owner = session.get(Patient, encounter.patient_id)
        if owner is None or follow_merges(session, owner) is not patient:
            raise Hl7ContentError("PV1-19 (visit number)", "belongs to another patient")
    before = encounter.status
    changed = assign(encounter, _visit_values(event.trigger, visit, encounter, event.event_at))
    if event.trigger is AdtTrigger.CANCEL_DISCHARGE and encounter.discharged_at is not None:
        encounter.discharged_at = None
        changed.append("discharged_at")
    encounter.last_message_uid, encounter.updated_at = changes.ref.uid, now
    session.flush()
    ids = {"encounter": encounter.id, "patient": patient.id, "trigger": str(event.trigger)}
    if created:
        changes.add("registry.encounter.created", patient, {**ids, "status": encounter.status})
        return
    if encounter.status != before:
        changes.add("registry.encounter.status", patient,
                    {**ids, "from": before, "to": encounter.status})
    if fields := [f for f in changed if f != "status"]:
        changes.add("registry.encounter.updated", patient, {**ids, "fields": fields})


def _visit_values(trigger: AdtTrigger, visit: Visit, encounter: Encounter,
                  event_at: datetime | None) -> dict[str, object]:
    """What PV1 and the trigger set; times fall back to EVN when PV1-44/45 are empty."""
    values: dict[str, object] = {
        "patient_class": visit.patient_class, "location": visit.location,
        "admitted_at": visit.admitted_at, "discharged_at": visit.discharged_at,
        "status": BY_TRIGGER[trigger],
    }
    if trigger in (AdtTrigger.ADMIT, AdtTrigger.REGISTER):
        values["admitted_at"] = visit.admitted_at or encounter.admitted_at or event_at
    elif trigger is AdtTrigger.DISCHARGE:
        values["discharged_at"] = visit.discharged_at or event_at or utcnow()
    elif trigger is AdtTrigger.CANCEL_DISCHARGE:
        values["discharged_at"] = None
    return values
