"""The DICOM renderings of a result for the PACS: a TID 1500 SR referencing the images the
model read, and, for a positive finding with a heat map, a SEG of it on those images.

The SR copies patient and study attributes from its evidence, so it is built from the
source instances' headers, read here from the blob store (the mappings stay pure). The
objects go to the blob store as Part-10 files; their UIDs derive from the result id, so
building them again gives the same SOP Instance UIDs and the PACS sees a resend as the
same object.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from radbridge.engine.blobstore import BlobRef, BlobStore
from radbridge.engine.db import Database
from radbridge.engine.inference_runs.facts import series_blobs
from radbridge.engine.results.assemble import ResultSource
from radbridge.inference.overlay import heatmap_on_images
from radbridge.mappings.sr.seg import render_seg
from radbridge.mappings.sr.tid1500 import render_sr


@dataclass(frozen=True)
class DicomOutput:
    kind: str
    """'sr' or 'seg'."""
    blob: BlobRef
    sop_instance_uid: str
    sop_class_uid: str


def dicom_outputs(database: Database, blobs: BlobStore, source: ResultSource, *,
                  segmentation: bool = True) -> list[DicomOutput]:
    """The SR (always) and the SEG (a positive finding with a heat map) of one result."""
    series_uids = source.result.series_uids
    if not series_uids:
        return []
    with database.read() as session:
        hashes = series_blobs(session, series_uids[0])
    headers = [pydicom.dcmread(blobs.path(h), stop_before_pixels=True) for h in hashes]
    outputs = [_store(blobs, "sr", render_sr(source.result, headers))]
    positive = next((f for f in source.result.findings if f.positive), None)
    if segmentation and positive is not None and source.heatmap_sha256 and source.grid:
        heatmap = np.load(io.BytesIO(blobs.read_bytes(source.heatmap_sha256)),
                          allow_pickle=False)
        masks = heatmap_on_images(heatmap.astype(np.float32), source.grid)
        if masks:
            images = [pydicom.dcmread(blobs.path(h)) for h in hashes]
            outputs.append(_store(blobs, "seg", render_seg(source.result, images, masks,
                                                           positive)))
    return outputs


def _store(blobs: BlobStore, kind: str, dataset: Dataset) -> DicomOutput:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return DicomOutput(kind, blobs.put_bytes(buffer.getvalue()), str(dataset.SOPInstanceUID),
                       str(dataset.SOPClassUID))
