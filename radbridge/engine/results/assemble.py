"""One AI result per finished model run and linked order, assembled from the store: the
run's findings and model provenance, the order and its (surviving) patient from the
registry, the study's series and instances from the DICOM index, and the draft report
text. Renderers (ORU, priority update, FHIR, SR) all start from this record.

A study not yet linked to any order has no result yet: `NotLinked` says so, and the
delivery that asked waits (the results destination retries it) until correlation links
the study, or a person decides in the reconciliation queue. A study decided to have no
order (rejected), or whose orders were all cancelled or discontinued before its results
went out, gets `NoOrder`: nothing goes to the RIS or the EHR. Results already sent when
an order is cancelled are withdrawn by a revision (ledger.py, revisions.py), assembled
here by `source_of` whatever the order's status.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from radbridge.engine.models import (
    DicomInstance,
    DicomSeries,
    DicomStudy,
    InferenceRun,
    Order,
    Patient,
    ReconciliationItem,
    StudyOrderLink,
)
from radbridge.engine.registry.patients import follow_merges
from radbridge.errors import RadbridgeError
from radbridge.mappings.dicom.values import dicom_date
from radbridge.mappings.report_text import draft_report
from radbridge.mappings.results import (
    AiResult,
    Coding,
    Finding,
    FindingLocation,
    InstanceRef,
    Measurement,
    ModelIdentity,
    OrderRef,
    PatientRef,
    Priority,
    Provider,
    SeriesRecord,
    Sex,
    StudyRecord,
)

WITHDRAWN = frozenset({"cancelled", "discontinued", "error"})
"""Order statuses whose results are suppressed rather than sent (ORC-1 CA, DC)."""
LOCAL_SYSTEM = "99RDB"
"""Coding system for measurements the model card does not code (HL7 local: 99xxx)."""


class NotLinked(RadbridgeError):
    """The study is not linked to an order yet: its results wait."""


class NoOrder(RadbridgeError):
    """The study was decided to have no order (or its order has no accession)."""


@dataclass(frozen=True)
class ResultSource:
    """A result and what the DICOM renderings need beside it."""

    result: AiResult
    run_id: int
    order_id: int | None
    """None for a study-only result (sent before the study was linked)."""
    use_case: str
    heatmap_sha256: str | None
    grid: dict[str, Any] | None


def results_for(session: Session, study_uid: str, version: int, *,
                endpoint: str | None = None, study_only: bool = False
                ) -> list[ResultSource]:
    """The results of the study version's finished runs, one per run and linked order;
    for a study not linked yet, NotLinked, or with `study_only` one per run identified
    by the study's own header (see `_study_only`)."""
    runs = session.execute(select(InferenceRun).where(
        InferenceRun.study_uid == study_uid, InferenceRun.study_version == version,
        InferenceRun.status == "done").order_by(InferenceRun.id)).scalars().all()
    if not runs:
        return []
    study = _study_record(session, study_uid, endpoint)
    try:
        orders = _linked_orders(session, study_uid)
    except NotLinked:
        if not study_only:
            raise
        header_patient, header_order = _study_only(session, study_uid)
        return [_source(run, f"rb-{run.id}-s", header_patient, header_order, None, study)
                for run in runs]
    sources = []
    for order in orders:
        patient = follow_merges(session, session.get_one(Patient, order.patient_id))
        for run in runs:
            sources.append(_source(run, result_id(run.id, order.id), patient_ref(patient),
                                   _order_ref(order), order.id, study))
    return sources


def source_of(session: Session, run_id: int, order_id: int, *,
              endpoint: str | None = None) -> ResultSource:
    """The result of one run for one order as it stands now (the order's status aside):
    what a correction or a withdrawal of an earlier result is rendered from."""
    run = session.get_one(InferenceRun, run_id)
    order = session.get_one(Order, order_id)
    patient = follow_merges(session, session.get_one(Patient, order.patient_id))
    study = _study_record(session, run.study_uid, endpoint)
    return _source(run, result_id(run.id, order.id), patient_ref(patient), _order_ref(order),
                   order.id, study)


def _source(run: InferenceRun, identifier: str, patient: PatientRef, order: OrderRef,
            order_id: int | None, study: StudyRecord) -> ResultSource:
    return ResultSource(_result(run, identifier, patient, order, study), run.id, order_id,
                        run.use_case, run.heatmap_sha256, run.grid)


def _study_only(session: Session, study_uid: str) -> tuple[PatientRef, OrderRef]:
    """The patient and the accession as the study's own header gives them, for a result
    sent before the study is linked; NotLinked (held) when the header lacks either."""
    study = session.execute(select(DicomStudy).where(DicomStudy.study_uid == study_uid)
                            ).scalar_one_or_none()
    if study is None or not study.patient_id or not study.accession:
        raise NotLinked(f"study {study_uid} is not linked to an order yet, and its header "
                        "lacks the PatientID or AccessionNumber a study-only result needs")
    family, given = _family_given(study.patient_name)
    patient = PatientRef(identifier=study.patient_id,
                         issuer=study.issuer_of_patient_id or "UNKNOWN",
                         family=family, given=given,
                         birth_date=dicom_date(study.patient_birth_date),
                         sex=_sex((study.patient_sex or "").upper()[:1]))
    order = OrderRef(accession=study.accession, accession_issuer=study.accession_issuer,
                     procedure=Coding("UNKNOWN", LOCAL_SYSTEM,
                                      (study.study_description or "")[:200]))
    return patient, order


def _linked_orders(session: Session, study_uid: str) -> list[Order]:
    linked = list(session.execute(
        select(Order).join(StudyOrderLink, StudyOrderLink.order_id == Order.id)
        .where(StudyOrderLink.study_uid == study_uid).order_by(Order.id)).scalars())
    orders = [order for order in linked if order.status not in WITHDRAWN]
    if orders:
        return orders
    if linked:
        raise NoOrder(f"study {study_uid}: its order(s) were withdrawn "
                      f"({', '.join(sorted({o.status for o in linked}))}); results suppressed")
    states = set(session.execute(select(ReconciliationItem.state).where(
        ReconciliationItem.study_uid == study_uid)).scalars())
    if states and states <= {"rejected"}:
        raise NoOrder(f"study {study_uid} was decided to have no order")
    raise NotLinked(f"study {study_uid} is not linked to an order yet")


def result_id(run_id: int, order_id: int) -> str:
    """Stable per run and order: message ids derive from it, so a resend carries the same."""
    return f"rb-{run_id}-{order_id}"


def _result(run: InferenceRun, identifier: str, patient: PatientRef, order: OrderRef,
            study: StudyRecord) -> AiResult:
    model = ModelIdentity(name=run.model_name, version=run.model_version,
                          device_identifier=run.device_identifier,
                          intended_use=run.intended_use, demonstration=run.demonstration)
    findings, measurements = _findings(run)
    return AiResult(
        result_id=identifier, patient=patient, order=order, study_uid=run.study_uid,
        model=model, created_at=run.updated_at.astimezone(UTC),
        findings=findings, measurements=measurements,
        report_text=draft_report(run.use_case, model, findings, measurements),
        series_uids=(run.series_uid,) if run.series_uid else (), study=study)


def _order_ref(order: Order) -> OrderRef:
    """The order as results carry it (NoOrder when it has no number to be found by)."""
    accession = order.accession or order.filler_number or order.placer_number
    if not accession:
        raise NoOrder(f"order {order.id} has no accession, filler or placer number")
    return OrderRef(
        accession=accession, accession_issuer=order.accession_issuer or None,
        procedure=Coding(order.procedure_code or "UNKNOWN",
                         order.procedure_system or LOCAL_SYSTEM, order.procedure_display or ""),
        placer_number=order.placer_number, filler_number=order.filler_number,
        priority=_priority(order.priority),
        ordering_provider=None if not (order.ordering_provider_id
                                       or order.ordering_provider_name)
        else _provider(order.ordering_provider_id, order.ordering_provider_name))


def patient_ref(patient: Patient) -> PatientRef:
    """The patient as results carry it (the surviving record after merges)."""
    family, given = _family_given(patient.name)
    return PatientRef(identifier=patient.identifier, issuer=patient.issuer or "UNKNOWN",
                      family=family or None, given=given or None,
                      birth_date=patient.birth_date, sex=_sex(patient.sex))


def _findings(run: InferenceRun) -> tuple[tuple[Finding, ...], tuple[Measurement, ...]]:
    findings, measurements = [], []
    for record in run.findings:
        where = record.get("location")
        site = record.get("body_site")
        findings.append(Finding(
            code=record["code"], system=record["system"], display=record["display"],
            positive=record["positive"], emergent=record["emergent"],
            score=record["probability"],
            body_site=None if not site else Coding(site["code"], site["system"],
                                                   site.get("display", "")),
            location=None if not where else FindingLocation(
                where["sop_instance_uid"], where["frame"], where["row"], where["column"],
                tuple(where["patient_mm"]) if where.get("patient_mm") else None)))
        for measured in record.get("measurements", []):
            code = "RB-" + hashlib.sha1(measured["name"].encode()).hexdigest()[:8].upper()
            measurements.append(Measurement(
                code=code, system=LOCAL_SYSTEM,
                display=f"{record['display']}: {measured['name']}",
                value=measured["value"], unit=measured["unit"]))
    return tuple(findings), tuple(measurements)


def _study_record(session: Session, study_uid: str, endpoint: str | None) -> StudyRecord:
    study = session.execute(select(DicomStudy).where(DicomStudy.study_uid == study_uid)
                            ).scalar_one_or_none()
    rows = session.execute(
        select(DicomSeries.series_uid, DicomSeries.modality, DicomSeries.series_number,
               DicomSeries.series_description, DicomSeries.body_part,
               DicomInstance.sop_class_uid, DicomInstance.sop_instance_uid,
               DicomInstance.instance_number)
        .join(DicomInstance, DicomInstance.series_id == DicomSeries.id)
        .where(DicomInstance.study_uid == study_uid, DicomInstance.current.is_(True))
        .order_by(DicomSeries.series_number, DicomSeries.id, DicomInstance.instance_number,
                  DicomInstance.id)).all()
    series: dict[str, dict[str, Any]] = {}
    for row in rows:
        item = series.setdefault(row.series_uid, {
            "series_uid": row.series_uid, "modality": row.modality or "OT",
            "number": row.series_number, "description": row.series_description,
            "body_part": row.body_part, "instances": []})
        item["instances"].append(InstanceRef(row.sop_class_uid, row.sop_instance_uid,
                                             row.instance_number))
    return StudyRecord(
        started=_started(study.study_date, study.study_time) if study else None,
        description=study.study_description if study else None,
        series=tuple(SeriesRecord(**{**s, "instances": tuple(s["instances"])})
                     for s in series.values()),
        endpoint=endpoint)


def _started(day: str | None, time: str | None) -> datetime | None:
    """StudyDate and StudyTime (local time, no zone in DICOM: taken as UTC)."""
    parsed = dicom_date(day)
    if parsed is None:
        return None
    clock = (time or "").split(".")[0].ljust(6, "0")[:6]
    try:
        moment = datetime.strptime(clock, "%H%M%S").time()
    except ValueError:
        moment = datetime.min.time()
    return datetime.combine(parsed, moment, UTC)


def _sex(value: str | None) -> Sex | None:
    try:
        return Sex(value) if value else None
    except ValueError:
        return None


def _priority(value: str | None) -> Priority | None:
    try:
        return Priority((value or "").upper()[:1]) if value else None
    except ValueError:
        return None


def _provider(identifier: str | None, name: str | None) -> Provider:
    family, given = _family_given(name)
    return Provider(identifier=identifier or None, family=family, given=given)


def _family_given(name: str | None) -> tuple[str | None, str | None]:
    """Family and given name of an XPN/XCN kept '^'-joined by the registry."""
    parts = (name or "").split("^")
    return parts[0] or None, (parts[1] if len(parts) > 1 else "") or None
