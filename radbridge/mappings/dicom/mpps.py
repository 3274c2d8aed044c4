"""Modality Performed Procedure Step N-CREATE and N-SET data sets as MppsRecords.

A modality announces a procedure with N-CREATE (status IN PROGRESS) and closes it with
N-SET (COMPLETED or DISCONTINUED), listing the series and instances it produced; the
engine uses a final MPPS to know a study is complete without waiting for a quiet period.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from radbridge.mappings.dicom import values
from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.dicom.records import MppsRecord, PerformedSeries

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
STATUSES = frozenset({IN_PROGRESS, COMPLETED, DISCONTINUED})
FINAL_STATUSES = frozenset({COMPLETED, DISCONTINUED})
OPERATIONS = frozenset({"create", "set"})
_REFERENCE_SEQUENCES = ("ReferencedImageSequence",
                        "ReferencedNonImageCompositeSOPInstanceSequence")


def read_mpps(dataset: Dataset, *, operation: str, mpps_uid: str) -> MppsRecord:
    """The record for one N-CREATE ('create') or N-SET ('set') of the MPPS `mpps_uid`.

    Raises DicomContentError for an unknown operation, an MPPS UID that is not a UID,
    a create without status, a status outside the three the standard defines, and a
    performed series or reference without its UID.
    """
    if operation not in OPERATIONS:
        raise DicomContentError("operation", "must be 'create' or 'set'")
    uid = values.checked_uid(mpps_uid.strip(values.PAD), "AffectedSOPInstanceUID")
    scheduled = values.first_item(dataset, "ScheduledStepAttributesSequence")
    return MppsRecord(
        mpps_uid=uid,
        operation=operation,
        status=_status(dataset, required=operation == "create"),
        study_uid=values.text(scheduled, "StudyInstanceUID") if scheduled else None,
        accession=values.text(scheduled, "AccessionNumber") if scheduled else None,
        patient_id=values.text(dataset, "PatientID"),
        modality=values.text(dataset, "Modality"),
        performed_series=_performed_series(dataset),
    )


def mpps_is_final(record: MppsRecord) -> bool:
    """Whether the step is over (COMPLETED or DISCONTINUED): no more instances will come."""
    return record.status in FINAL_STATUSES


def _status(dataset: Dataset, *, required: bool) -> str | None:
    status = values.text(dataset, "PerformedProcedureStepStatus")
    if status is None:
        if required:
            raise DicomContentError("PerformedProcedureStepStatus", "is missing or empty")
        return None
    status = status.upper()
    if status not in STATUSES:
        raise DicomContentError("PerformedProcedureStepStatus",
                                "is not IN PROGRESS, COMPLETED or DISCONTINUED")
    return status


def _performed_series(dataset: Dataset) -> tuple[PerformedSeries, ...]:
    found = []
    for index, item in enumerate(values.sequence(dataset, "PerformedSeriesSequence")):
        where = f"PerformedSeriesSequence[{index}]."
        found.append(PerformedSeries(
            series_uid=values.required_uid(item, "SeriesInstanceUID", where),
            sop_instance_uids=_referenced_instances(item, where),
        ))
    return tuple(found)


def _referenced_instances(series: Dataset, where: str) -> tuple[str, ...]:
    uids = []
    for keyword in _REFERENCE_SEQUENCES:
        for index, item in enumerate(values.sequence(series, keyword)):
            uids.append(values.required_uid(
                item, "ReferencedSOPInstanceUID", f"{where}{keyword}[{index}]."))
    return tuple(uids)
