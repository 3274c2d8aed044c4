"""Handing a result (or a revision of it) on to the channels that render and send it.

Handing on is receiving on another channel with a dedup key per result revision (and
per SOP Instance UID for DICOM objects), so a delivery tried again after a crash hands
on nothing twice, while a correction or withdrawal, being a new revision, goes out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from radbridge.engine.adapters import AdapterContext
from radbridge.engine.receiver import Inbound
from radbridge.engine.results.assemble import ResultSource
from radbridge.engine.results.dicom_outputs import DicomOutput, dicom_outputs, rejection_note
from radbridge.errors import PermanentDeliveryError
from radbridge.inference.overlay import OverlayError
from radbridge.mappings.results import AiResult, ResultStatus, result_to_json
from radbridge.mappings.sr.errors import SrRenderError

RESULT_CONTENT_TYPE = "application/vnd.radbridge.result+json"
DICOM_CONTENT_TYPE = "application/dicom"


@dataclass(frozen=True)
class Route:
    """Where a result goes, and the name its messages say they came from."""

    results_channel: str
    pacs_channel: str | None
    origin: str


async def hand_on_result(context: AdapterContext, result: AiResult, run_id: int,
                         route: Route) -> None:
    """The result JSON to the results channel (which renders ORU, FHIR, priority)."""
    await context.receive(Inbound(
        channel=route.results_channel, content_type=RESULT_CONTENT_TYPE,
        source=route.origin, content=json.dumps(result_to_json(result)).encode(),
        dedup_key=f"result/{result.revision_key}",
        patient_id=result.patient.identifier, accession=result.order.accession,
        study_uid=result.study_uid,
        metadata={"result_id": result.result_id, "revision": str(result.revision),
                  "status": result.status.value, "model": result.model.name,
                  "model_version": result.model.version, "run_id": str(run_id),
                  "emergent": "true" if result.emergent_findings else "false",
                  "demonstration": "true" if result.model.demonstration else "false"}))


async def hand_on_dicom(context: AdapterContext, source: ResultSource, result: AiResult,
                        route: Route, *, segmentation: bool,
                        superseded: Sequence[dict[str, Any]]) -> list[DicomOutput]:
    """The DICOM objects of `result` to the PACS channel: for a withdrawal only the
    rejection note of what was sent; otherwise the SR (and SEG), and for a correction a
    rejection note of the objects it replaces. What was handed on, in order."""
    if route.pacs_channel is None:
        return []
    try:
        made = [] if result.status is ResultStatus.WITHDRAWN else await asyncio.to_thread(
            dicom_outputs, context.database, context.blobs, source,
            segmentation=segmentation, result=result, previous=superseded)
        note = None if not superseded else await asyncio.to_thread(
            rejection_note, context.blobs, result, superseded)
    except (SrRenderError, OverlayError) as exc:
        raise PermanentDeliveryError(
            f"the DICOM rendering of result {result.result_id} revision {result.revision} "
            f"failed: {exc}") from exc
    outputs = [*made, *([note] if note is not None else [])]
    for output in outputs:
        await context.receive(Inbound(
            channel=route.pacs_channel, content_type=DICOM_CONTENT_TYPE, source=route.origin,
            blob=output.blob, dedup_key=f"dicom/{output.sop_instance_uid}",
            patient_id=result.patient.identifier, accession=result.order.accession,
            study_uid=result.study_uid,
            metadata={"result_id": result.result_id, "revision": str(result.revision),
                      "kind": output.kind, "sop_instance_uid": output.sop_instance_uid,
                      "sop_class_uid": output.sop_class_uid}))
    return made
