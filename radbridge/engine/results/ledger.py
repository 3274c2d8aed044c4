"""What each AI result's receivers hold, and which revisions they are owed.

One `PublishedResult` row per study, order and model. The results destination records
each result in it before handing it on (`publish`): the first time as revision 0; again
for the same run (a retry after a crash) with the same revision, so the same ids go out;
for a newer run of the study (late images, a new study version) as the next revision,
a correction, whose DICOM objects replace the ones sent before.

Changes after the fact are marked in the transaction that makes them (`mark_changes`,
called by the registry with the ADT or order message it applies): a cancelled or
discontinued order owes its receivers a withdrawal, a patient whose identity changed
(demographics updated, merged into another) a correction. `revisions.py` hands the
pending revisions on and `settle` records them, so a crash between leaves the mark set
and the next pass sends the same revision again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from radbridge.engine import audit
from radbridge.engine.config import ResultsDestination
from radbridge.engine.models import Order, Patient, PublishedResult, StudyOrderLink, utcnow
from radbridge.engine.registry.patients import follow_merges
from radbridge.engine.results.assemble import WITHDRAWN, ResultSource, patient_ref
from radbridge.mappings.results import AiResult, PatientRef, ResultStatus

SENT, WITHDRAWN_STATE = "sent", "withdrawn"
WITHDRAW, CORRECT = "withdraw", "correct"
ACTOR = "results"


@dataclass(frozen=True)
class Publication:
    """Which revision of a result to hand on now, and what it replaces."""

    row_id: int
    result_id: str
    revision: int
    status: ResultStatus
    reason: str | None
    superseded: tuple[dict[str, Any], ...]
    """The DICOM objects of the revision before (to name as predecessors and reject)."""


def result_key(study_uid: str, order_id: int | None, model_name: str) -> str:
    """One result per study, order ('-' before the study is linked) and model."""
    return f"{study_uid}/{'-' if order_id is None else order_id}/{model_name}"


def patient_digest(patient: PatientRef) -> str:
    """A digest of the identity a result carries (no PHI stored, changes detected)."""
    identity = [patient.identifier, patient.issuer, patient.family, patient.given,
                None if patient.birth_date is None else patient.birth_date.isoformat(),
                None if patient.sex is None else patient.sex.value]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def publish(session: Session, source: ResultSource, config: ResultsDestination, *,
            chain: str) -> Publication | None:
    """Record `source` as sent (see the module docstring) and say which revision it is;
    None for a run older than the one sent (a late retry of a superseded version)."""
    result = source.result
    key = result_key(result.study_uid, source.order_id, result.model.name)
    row = session.execute(select(PublishedResult).where(PublishedResult.result_key == key)
                          .with_for_update()).scalar_one_or_none()
    digest = patient_digest(result.patient)
    if row is None:
        row = PublishedResult(
            result_key=key, result_id=result.result_id, study_uid=result.study_uid,
            order_id=source.order_id, model_name=result.model.name, run_id=source.run_id,
            revision=0, state=SENT, patient_digest=digest,
            results_channel=config.results_channel, pacs_channel=config.pacs_channel,
            pacs_endpoint=config.pacs_endpoint,
            correct_on_patient_change=config.correct_on_patient_change,
            dicom_objects=[], superseded_objects=[])
        session.add(row)
        session.flush()
    elif row.run_id > source.run_id:
        return None
    elif row.run_id != source.run_id:
        row.revision += 1
        row.run_id = source.run_id
        row.superseded_objects = list(row.dicom_objects)
        row.dicom_objects = []
        row.patient_digest = digest
        row.updated_at = utcnow()
        audit.append(session, [_event(row, ResultStatus.CORRECTED, "new images", result)],
                     chain)
    return _publication(row, "new images")


def settle_objects(session: Session, row_id: int, revision: int,
                   objects: Sequence[dict[str, Any]]) -> None:
    """The DICOM objects of `revision` reached the PACS channel: they are current now."""
    row = session.get_one(PublishedResult, row_id)
    if row.revision == revision:
        row.dicom_objects = list(objects)
        row.updated_at = utcnow()


def mark_changes(session: Session, *, orders: Iterable[int] = (),
                 patients: Iterable[int] = (), reason: str = "patient updated") -> int:
    """Mark the revisions that changes to `orders` and `patients` owe (in the caller's
    transaction); how many results were marked."""
    marked = 0
    order_ids = sorted(set(orders))
    if order_ids:
        rows = session.execute(select(PublishedResult, Order.status).join(
            Order, Order.id == PublishedResult.order_id).where(
            PublishedResult.order_id.in_(order_ids), PublishedResult.state == SENT)).all()
        for row, status in rows:
            if status in WITHDRAWN and row.pending != WITHDRAW:
                row.pending, row.pending_reason = WITHDRAW, f"order {status}"
                marked += 1
    survivors = sorted({follow_merges(session, session.get_one(Patient, pid)).id
                        for pid in set(patients)})
    if survivors:
        patient_rows = session.execute(select(PublishedResult, Order.patient_id).join(
            Order, Order.id == PublishedResult.order_id).where(
            Order.patient_id.in_(survivors), PublishedResult.state == SENT,
            PublishedResult.correct_on_patient_change.is_(True),
            PublishedResult.pending.is_(None))).all()
        for row, patient_id in patient_rows:
            current = patient_digest(patient_ref(session.get_one(Patient, patient_id)))
            if current != row.patient_digest:
                row.pending, row.pending_reason = CORRECT, reason
                marked += 1
    return marked


def adopt(session: Session, study_uid: str) -> int:
    """The study was linked: its study-only results become its first (not withdrawn)
    order's, and owe their receivers a correction that names the order."""
    rows = session.execute(select(PublishedResult).where(
        PublishedResult.study_uid == study_uid, PublishedResult.order_id.is_(None),
        PublishedResult.state == SENT).with_for_update()).scalars().all()
    if not rows:
        return 0
    order = session.execute(
        select(Order).join(StudyOrderLink, StudyOrderLink.order_id == Order.id)
        .where(StudyOrderLink.study_uid == study_uid, Order.status.not_in(WITHDRAWN))
        .order_by(Order.id).limit(1)).scalar_one_or_none()
    if order is None:
        return 0
    for row in rows:
        row.order_id = order.id
        row.result_key = result_key(study_uid, order.id, row.model_name)
        row.pending, row.pending_reason = CORRECT, "linked to its order"
        row.updated_at = utcnow()
    return len(rows)


def pending_ids(session: Session, limit: int = 100) -> list[int]:
    return list(session.execute(select(PublishedResult.id).where(
        PublishedResult.pending.is_not(None)).order_by(PublishedResult.id).limit(limit)
    ).scalars())


def next_revision(session: Session, row_id: int) -> Publication | None:
    """The revision a pending mark owes (not yet recorded), or None if none is owed."""
    row = session.get_one(PublishedResult, row_id)
    if row.pending is None:
        return None
    status = ResultStatus.WITHDRAWN if row.pending == WITHDRAW else ResultStatus.CORRECTED
    return Publication(row.id, row.result_id, row.revision + 1, status, row.pending_reason,
                       tuple(row.dicom_objects if status is ResultStatus.WITHDRAWN else ()))


def settle_pending(session: Session, publication: Publication, result: AiResult, *,
                   chain: str) -> bool:
    """Record that `publication` (from `next_revision`) was handed on; False when the row
    moved meanwhile (its next pass works out the revision again)."""
    row = session.get_one(PublishedResult, publication.row_id)
    if row.pending is None or row.revision + 1 != publication.revision:
        return False
    row.revision = publication.revision
    row.pending = row.pending_reason = None
    row.patient_digest = patient_digest(result.patient)
    if publication.status is ResultStatus.WITHDRAWN:
        row.state = WITHDRAWN_STATE
        row.superseded_objects, row.dicom_objects = list(row.dicom_objects), []
    row.updated_at = utcnow()
    audit.append(session, [_event(row, publication.status, publication.reason, result)],
                 chain)
    return True


def _publication(row: PublishedResult, reason: str) -> Publication:
    status = ResultStatus.PRELIMINARY if row.revision == 0 else ResultStatus.CORRECTED
    return Publication(row.id, row.result_id, row.revision, status,
                       None if row.revision == 0 else reason,
                       tuple(row.superseded_objects))


def _event(row: PublishedResult, status: ResultStatus, reason: str | None,
           result: AiResult) -> audit.AuditRecord:
    return audit.AuditRecord(
        action=f"result.{status.value}", actor=ACTOR, study_uid=row.study_uid,
        patient_id=result.patient.identifier, accession=result.order.accession,
        detail={"result_id": row.result_id, "revision": row.revision, "order": row.order_id,
                "model": row.model_name, "run": row.run_id, "reason": reason})
