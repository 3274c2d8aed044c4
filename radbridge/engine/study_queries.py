"""Read-only views of the DICOM index for the API and the CLI.

Patient names and birth dates stay in the store (correlation needs them) and out of
these views: they carry the patient identifier and accession, which analysts use to
find a study, and UIDs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radbridge.engine.models import DICOM_INSTANCES, DICOM_MPPS, DICOM_SERIES, DICOM_STUDIES

_STUDY_COLUMNS = ("study_uid", "channel", "patient_id", "issuer_of_patient_id", "accession",
                  "study_date", "study_time", "study_description", "modalities",
                  "series_count", "instance_count", "first_received_at", "last_received_at",
                  "state", "ready_version", "ready_at", "ready_reason")
_SERIES_COLUMNS = ("series_uid", "modality", "series_number", "series_description",
                   "body_part", "manufacturer", "manufacturer_model", "station_name",
                   "institution_name", "instance_count", "first_received_at",
                   "last_received_at")
_INSTANCE_COLUMNS = ("sop_instance_uid", "version", "current", "sop_class_uid",
                     "transfer_syntax_uid", "instance_number", "message_id", "blob_sha256",
                     "size", "rows", "columns", "number_of_frames", "slice_thickness",
                     "pixel_spacing", "image_position", "image_orientation",
                     "acquisition_datetime", "received_at")


@dataclass(frozen=True)
class StudyFilter:
    state: str | None = None
    accession: str | None = None
    patient_id: str | None = None
    modality: str | None = None
    channel: str | None = None
    limit: int = 50
    offset: int = 0


def list_studies(session: Session, where: StudyFilter) -> list[dict[str, Any]]:
    """Studies, the most recently received first."""
    table = DICOM_STUDIES
    statement = select(*(table.c[name] for name in _STUDY_COLUMNS))
    for column, value in (("state", where.state), ("accession", where.accession),
                          ("patient_id", where.patient_id), ("channel", where.channel)):
        if value is not None:
            statement = statement.where(table.c[column] == value)
    if where.modality is not None:
        statement = statement.where(table.c.modalities.contains(where.modality, autoescape=True))
    statement = (statement.order_by(table.c.last_received_at.desc(), table.c.id.desc())
                 .limit(max(1, min(where.limit, 1000))).offset(max(0, where.offset)))
    return [plain(row._mapping) for row in session.execute(statement)]


def study_detail(session: Session, study_uid: str, *, with_instances: bool = False
                 ) -> dict[str, Any] | None:
    """One study with its series (and their current instances), MPPS steps and versions."""
    study = session.execute(
        select(DICOM_STUDIES.c.id, *(DICOM_STUDIES.c[name] for name in _STUDY_COLUMNS))
        .where(DICOM_STUDIES.c.study_uid == study_uid)).first()
    if study is None:
        return None
    view = plain(study._mapping)
    study_id = view.pop("id")
    series = [plain(row._mapping) for row in session.execute(
        select(DICOM_SERIES.c.id, *(DICOM_SERIES.c[name] for name in _SERIES_COLUMNS))
        .where(DICOM_SERIES.c.study_id == study_id).order_by(DICOM_SERIES.c.series_number,
                                                             DICOM_SERIES.c.id))]
    for item in series:
        series_id = item.pop("id")
        if with_instances:
            item["instances"] = [plain(row._mapping) for row in session.execute(
                select(*(DICOM_INSTANCES.c[name] for name in _INSTANCE_COLUMNS))
                .where(DICOM_INSTANCES.c.series_id == series_id)
                .order_by(DICOM_INSTANCES.c.instance_number, DICOM_INSTANCES.c.id))]
    view["series"] = series
    view["superseded_versions"] = session.execute(
        select(func.count()).where(DICOM_INSTANCES.c.study_uid == study_uid,
                                   DICOM_INSTANCES.c.current.is_(False))).scalar_one()
    view["mpps"] = [plain(row._mapping) for row in session.execute(
        select(DICOM_MPPS.c.mpps_uid, DICOM_MPPS.c.status, DICOM_MPPS.c.modality,
               DICOM_MPPS.c.updated_at).where(DICOM_MPPS.c.study_uid == study_uid))]
    return view


def plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row as JSON-ready values (times as ISO 8601 strings, as the other views give)."""
    return {str(key): value.isoformat() if isinstance(value, datetime) else value
            for key, value in row.items()}
