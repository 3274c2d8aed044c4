"""The note that tells a PACS to stop showing AI objects it was sent: an IHE IOCM
rejection note, a Key Object Selection document that lists them, titled (113037, DCM,
"Rejected for Patient Safety Reasons") for the SR and SEG of a withdrawn result (its
order was cancelled) and (113001, DCM, "Rejected for Quality Reasons") for those a
corrected result replaces (new images gave new objects).

A PACS that implements IOCM hides or deletes what the note lists; one that does not
still stores the note beside the study, where a reader finds it. The note's UIDs derive
from the result's revision, so a resend is the same object.
"""

from __future__ import annotations

from collections.abc import Sequence

from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from radbridge.mappings.results import AiResult, ResultStatus, revision_notice
from radbridge.mappings.sr import concepts
from radbridge.mappings.sr.errors import SrRenderError

WITHDRAWN_TITLE = codes.DCM.RejectedForPatientSafetyReasons
REPLACED_TITLE = codes.DCM.RejectedForQualityReasons


def render_rejection(result: AiResult, rejected: Sequence[Dataset], *,
                     series_number: int = 902) -> Dataset:
    """The rejection note for `rejected` (the headers of the objects sent for `result`,
    all of its study). SrRenderError when there is nothing to reject or they do not fit."""
    if not rejected:
        raise SrRenderError(f"result {result.result_id}: no objects to reject")
    ordered = [concepts.fit_patient(ds) for ds in rejected]
    if any(str(ds.StudyInstanceUID) != result.study_uid for ds in ordered):
        raise SrRenderError(f"result {result.result_id}: an object to reject is not of "
                            f"study {result.study_uid}")
    title = WITHDRAWN_TITLE if result.status is ResultStatus.WITHDRAWN else REPLACED_TITLE
    created = result.created_at
    description = " ".join(revision_notice(result)) or "AI result withdrawn"
    try:
        note = KeyObjectSelectionDocument(
            evidence=ordered,
            content=KeyObjectSelection(document_title=title, referenced_objects=ordered,
                                       description=description[:1024]),
            series_instance_uid=concepts.derived_uid(result.revision_key, "kos-series"),
            series_number=series_number,
            sop_instance_uid=concepts.derived_uid(result.revision_key, "kos"),
            instance_number=1, manufacturer=concepts.MANUFACTURER,
            series_description=concepts.series_description(result.model, "KOS"),
            content_date=created.date(), content_time=created.time().replace(tzinfo=None),
            series_date=created.date(), series_time=created.time().replace(tzinfo=None))
    except (ValueError, TypeError, AttributeError) as exc:
        raise SrRenderError(f"result {result.result_id}: highdicom refused the rejection "
                            f"note: {type(exc).__name__}: {exc}") from exc
    concepts.pin_times(note, created)
    return note
