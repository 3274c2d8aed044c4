"""The DICOM renderings of a result for the PACS: a TID 1500 SR referencing the images the
model read, and, for a positive finding with a heat map, a SEG of it on those images.

The SR copies patient and study attributes from its evidence, so it is built from the
source instances' headers, read here from the blob store (the mappings stay pure). The
objects go to the blob store as Part-10 files; their UIDs derive from the result id and
revision, so building them again gives the same SOP Instance UIDs and the PACS sees a
resend as the same object.

A revision replaces what the PACS was sent before: a corrected SR names the earlier SR
as its predecessor, and a rejection note (IOCM) lists the earlier objects, or all of
them when the result is withdrawn. Objects are remembered as `as_record` dicts in the
results ledger; one whose blob has since been pruned is left out of both.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from radbridge.engine.blobstore import BlobRef, BlobStore
from radbridge.engine.db import Database
from radbridge.engine.inference_runs.facts import series_blobs
from radbridge.engine.results.assemble import ResultSource
from radbridge.inference.overlay import heatmap_on_images
from radbridge.mappings.results import AiResult
from radbridge.mappings.sr.rejection import render_rejection
from radbridge.mappings.sr.seg import render_seg
from radbridge.mappings.sr.tid1500 import render_sr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DicomOutput:
    kind: str
    """'sr' or 'seg'."""
    blob: BlobRef
    sop_instance_uid: str
    sop_class_uid: str

    def as_record(self) -> dict[str, Any]:
        """What the results ledger keeps of an object sent to the PACS."""
        return {"kind": self.kind, "sop_class_uid": self.sop_class_uid,
                "sop_instance_uid": self.sop_instance_uid, "blob": self.blob.sha256}


def dicom_outputs(database: Database, blobs: BlobStore, source: ResultSource, *,
                  segmentation: bool = True, result: AiResult | None = None,
                  previous: Sequence[dict[str, Any]] = ()) -> list[DicomOutput]:
    """The SR (always) and the SEG (a positive finding with a heat map) of one result
    (`result`, when given, is the revision to render instead of `source.result`), the SR
    naming the SRs among `previous` as its predecessors."""
    result = result or source.result
    series_uids = result.series_uids
    if not series_uids:
        return []
    with database.read() as session:
        hashes = series_blobs(session, series_uids[0])
    headers = [pydicom.dcmread(blobs.path(h), stop_before_pixels=True) for h in hashes]
    predecessors = stored_headers(blobs, [o for o in previous if o.get("kind") == "sr"])
    outputs = [_store(blobs, "sr", render_sr(result, headers, previous=predecessors))]
    positive = next((f for f in result.findings if f.positive), None)
    if segmentation and positive is not None and source.heatmap_sha256 and source.grid:
        heatmap = np.load(io.BytesIO(blobs.read_bytes(source.heatmap_sha256)),
                          allow_pickle=False)
        masks = heatmap_on_images(heatmap.astype(np.float32), source.grid)
        if masks:
            images = [pydicom.dcmread(blobs.path(h)) for h in hashes]
            outputs.append(_store(blobs, "seg", render_seg(result, images, masks,
                                                           positive)))
    return outputs


def rejection_note(blobs: BlobStore, result: AiResult, rejected: Sequence[dict[str, Any]]
                   ) -> DicomOutput | None:
    """The IOCM rejection note of the objects in `rejected` (None if none is left)."""
    headers = stored_headers(blobs, rejected)
    if not headers:
        return None
    return _store(blobs, "kos", render_rejection(result, headers))


def stored_headers(blobs: BlobStore, objects: Sequence[dict[str, Any]]) -> list[Dataset]:
    """The headers of objects sent before, read back from the blob store."""
    headers: list[Dataset] = []
    for item in objects:
        if not blobs.exists(item["blob"]):
            log.warning("object %s sent before is no longer in the blob store; left out",
                        item["sop_instance_uid"])
            continue
        headers.append(pydicom.dcmread(blobs.path(item["blob"]), stop_before_pixels=True))
    return headers


def _store(blobs: BlobStore, kind: str, dataset: Dataset) -> DicomOutput:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return DicomOutput(kind, blobs.put_bytes(buffer.getvalue()), str(dataset.SOPInstanceUID),
                       str(dataset.SOPClassUID))
