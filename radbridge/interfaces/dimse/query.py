"""C-FIND at study and series level (Study Root), answered as plain records.

The matches carry patient names and IDs: they are for the caller (an operator's screen,
the retrieve destination), never for logs, which get counts and UIDs only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.presentation import build_context

from radbridge.interfaces.dimse.scu import (
    STUDY_ROOT_FIND,
    DicomClient,
    DimseStatusError,
    check_status,
    release,
)

log = logging.getLogger(__name__)

PENDING = (0xFF00, 0xFF01)


@dataclass(frozen=True)
class StudyQuery:
    """Matching keys; None matches anything. Dates are YYYYMMDD, the range inclusive."""

    patient_id: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    modalities: tuple[str, ...] = ()

    def identifier(self) -> Dataset:
        ds = _returning(STUDY_KEYS)
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientID = self.patient_id or ""
        ds.AccessionNumber = self.accession or ""
        ds.StudyInstanceUID = self.study_uid or ""
        dates = f"{self.date_from or ''}-{self.date_to or ''}"
        ds.StudyDate = "" if dates == "-" else dates
        ds.ModalitiesInStudy = "\\".join(self.modalities)
        return ds


@dataclass(frozen=True)
class StudyMatch:
    study_uid: str
    patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    accession: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    study_description: str | None = None
    referring_physician: str | None = None
    modalities: tuple[str, ...] = ()
    series_count: int | None = None
    instance_count: int | None = None


@dataclass(frozen=True)
class SeriesMatch:
    study_uid: str
    series_uid: str
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    instance_count: int | None = None


STUDY_KEYS = (
    "PatientName", "PatientBirthDate", "PatientSex", "StudyTime", "StudyDescription",
    "ReferringPhysicianName", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)
SERIES_KEYS = ("Modality", "SeriesNumber", "SeriesDescription",
               "NumberOfSeriesRelatedInstances")
NUMBERS = {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "SeriesNumber",
           "NumberOfSeriesRelatedInstances"}


def find_studies(client: DicomClient, query: StudyQuery) -> list[StudyMatch]:
    """Studies the peer has that match `query`."""
    found = [_study(ds) for ds in find(client, query.identifier())]
    log.info("C-FIND STUDY on %s: %d matches", client.name, len(found))
    return found


def find_series(client: DicomClient, study_uid: str, *,
                modality: str | None = None) -> list[SeriesMatch]:
    """The series of one study (optionally of one modality)."""
    ds = _returning(SERIES_KEYS)
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = ""
    ds.Modality = modality or ""
    found = [_series(item, study_uid) for item in find(client, ds)]
    log.info("C-FIND SERIES on %s for study %s: %d matches", client.name, study_uid,
             len(found))
    return found


def find(client: DicomClient, identifier: Dataset) -> Iterator[Dataset]:
    """Every pending identifier of one Study Root C-FIND; DimseStatusError on failure."""
    assoc = client.associate([build_context(STUDY_ROOT_FIND)])
    try:
        for status, found in assoc.send_c_find(identifier, STUDY_ROOT_FIND):
            code = check_status(client.name, status, "C-FIND")
            if code in PENDING:
                if found is not None:
                    yield found
                continue
            if code != 0x0000:
                comment = status.get("ErrorComment", "")
                raise DimseStatusError(client.name, code, f"C-FIND failed {comment}".strip())
    finally:
        release(assoc)


def _returning(keys: tuple[str, ...]) -> Dataset:
    """An identifier asking for `keys` back (universal matching: empty values)."""
    ds = Dataset()
    for key in keys:
        setattr(ds, key, None if key in NUMBERS else "")
    return ds


def _text(ds: Dataset, key: str) -> str | None:
    value = ds.get(key)
    if value is None:
        return None
    text = "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)
    return text.strip() or None


def _number(ds: Dataset, key: str) -> int | None:
    value = ds.get(key)
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _study(ds: Dataset) -> StudyMatch:
    modalities = _text(ds, "ModalitiesInStudy")
    return StudyMatch(
        study_uid=_text(ds, "StudyInstanceUID") or "",
        patient_id=_text(ds, "PatientID"), patient_name=_text(ds, "PatientName"),
        patient_birth_date=_text(ds, "PatientBirthDate"), patient_sex=_text(ds, "PatientSex"),
        accession=_text(ds, "AccessionNumber"), study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"), study_description=_text(ds, "StudyDescription"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        modalities=tuple(modalities.split("\\")) if modalities else (),
        series_count=_number(ds, "NumberOfStudyRelatedSeries"),
        instance_count=_number(ds, "NumberOfStudyRelatedInstances"))


def _series(ds: Dataset, study_uid: str) -> SeriesMatch:
    return SeriesMatch(
        study_uid=_text(ds, "StudyInstanceUID") or study_uid,
        series_uid=_text(ds, "SeriesInstanceUID") or "",
        modality=_text(ds, "Modality"), series_number=_number(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        instance_count=_number(ds, "NumberOfSeriesRelatedInstances"))
