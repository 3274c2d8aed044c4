"""Storage Commitment: the N-ACTION request read, the N-EVENT-REPORT answer built.

A modality asks (N-ACTION, action type 1) whether we hold a list of instances; we answer
later with an N-EVENT-REPORT on the same transaction: event type 1 when every instance
is safely stored, event type 2 listing the ones we do not have. Only then may the
modality delete its copies, so an instance is reported committed only if it was stored.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radbridge.mappings.dicom import values
from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.dicom.records import CommitmentRequest

STORAGE_COMMITMENT_SOP_CLASS = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_SOP_INSTANCE = "1.2.840.10008.1.20.1.1"
"""The well-known SOP Instance UID that N-ACTION and N-EVENT-REPORT address."""
ACTION_TYPE_REQUEST = 1
EVENT_ALL_COMMITTED = 1
EVENT_SOME_FAILED = 2
NO_SUCH_OBJECT_INSTANCE = 0x0112


def read_commitment(dataset: Dataset, *, requester_ae: str) -> CommitmentRequest:
    """The request in one N-ACTION's action information.

    Raises DicomContentError when the Transaction UID is missing or not a UID, when no
    instance is referenced, or when a reference lacks one of its two UIDs.
    """
    references = []
    items = values.sequence(dataset, "ReferencedSOPSequence")
    for index, item in enumerate(items):
        where = f"ReferencedSOPSequence[{index}]."
        references.append((values.required_uid(item, "ReferencedSOPClassUID", where),
                           values.required_uid(item, "ReferencedSOPInstanceUID", where)))
    if not references:
        raise DicomContentError("ReferencedSOPSequence", "is missing or empty")
    return CommitmentRequest(
        transaction_uid=values.required_uid(dataset, "TransactionUID"),
        requester_ae=requester_ae.strip(values.PAD),
        references=tuple(references),
    )


def commitment_result(request: CommitmentRequest, stored: set[str]) -> Dataset:
    """The N-EVENT-REPORT event information answering `request`.

    `stored` holds the SOP Instance UIDs we hold; references to the others go to the
    Failed SOP Sequence with reason 0112H (no such object instance). The event type
    to send with it is `commitment_event_type(result)`.
    """
    result = Dataset()
    result.TransactionUID = request.transaction_uid
    committed = [pair for pair in request.references if pair[1] in stored]
    failed = [pair for pair in request.references if pair[1] not in stored]
    if committed:
        result.ReferencedSOPSequence = Sequence(_reference(*pair) for pair in committed)
    if failed:
        result.FailedSOPSequence = Sequence(
            _reference(*pair, failure=NO_SUCH_OBJECT_INSTANCE) for pair in failed)
    return result


def commitment_event_type(result: Dataset) -> int:
    """1 (all committed) or 2 (some failed), for a `commitment_result` data set."""
    return EVENT_SOME_FAILED if "FailedSOPSequence" in result else EVENT_ALL_COMMITTED


def _reference(sop_class_uid: str, sop_instance_uid: str, failure: int | None = None
               ) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    if failure is not None:
        item.FailureReason = failure
    return item
