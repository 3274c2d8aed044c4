"""The message for one received DICOM instance, the same whatever brought it (C-STORE,
STOW-RS, C-GET or WADO-RS), so that one instance arriving by two routes deduplicates on
the same key (SOP Instance UID + content hash) and the DICOM index learns from it."""

from __future__ import annotations

from collections.abc import Mapping

from radbridge.engine.blobstore import BlobRef
from radbridge.engine.receiver import Inbound
from radbridge.mappings.dicom.records import CONTENT_TYPE, InstanceRecord


def instance_inbound(*, channel: str, source: str, blob: BlobRef,
                     record: InstanceRecord | None, rejected: str | None = None,
                     sop_instance_uid: str | None = None,
                     metadata: Mapping[str, str] | None = None) -> Inbound:
    """`record` is what the header said (None when it could not be read); `rejected`
    quarantines the instance (kept, never processed, not indexed). `sop_instance_uid`
    names it when the header could not (the C-STORE command's UID)."""
    sop = record.sop_instance_uid if record is not None else sop_instance_uid
    details: dict[str, str] = {}
    if record is not None:
        details = {"sop_instance_uid": record.sop_instance_uid,
                   "sop_class_uid": record.sop_class_uid, "series_uid": record.series_uid,
                   "transfer_syntax": record.transfer_syntax_uid}
    elif sop_instance_uid is not None:
        details = {"sop_instance_uid": sop_instance_uid}
    return Inbound(
        channel=channel, content_type=CONTENT_TYPE, source=source, blob=blob,
        dedup_key=f"{sop}/{blob.sha256}" if sop else None,
        patient_id=record.patient_id if record else None,
        accession=record.accession if record else None,
        study_uid=record.study_uid if record else None,
        metadata={**details, **(metadata or {})}, rejected=rejected,
        dicom=record if rejected is None else None)
