"""The `results` destination: on the channel inference announces finished studies to,
each study version's results are assembled (assemble.py) and handed on as messages:
the result JSON to `results_channel` (emergent ones first: the worklist priority update
must not wait behind anything slower), then the DICOM SR and SEG to `pacs_channel`.

Handing on is receiving on another channel with a dedup key per result (and per SOP
Instance UID for DICOM objects), so a delivery tried again after a crash hands on
nothing twice. A study not linked to an order yet is a transient failure ("held"): the
outbox tries again with its backoff until correlation links it.
"""

from __future__ import annotations

import asyncio
import json
import logging

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import ResultsDestination
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.receiver import Inbound
from radbridge.engine.results.assemble import NoOrder, NotLinked, ResultSource, results_for
from radbridge.engine.results.dicom_outputs import DicomOutput, dicom_outputs
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError
from radbridge.inference.overlay import OverlayError
from radbridge.mappings.results import result_to_json
from radbridge.mappings.sr.errors import SrRenderError

log = logging.getLogger(__name__)

RESULT_CONTENT_TYPE = "application/vnd.radbridge.result+json"
DICOM_CONTENT_TYPE = "application/dicom"


class ResultsPublisher:
    def __init__(self, config: ResultsDestination, context: AdapterContext) -> None:
        self._config = config
        self._context = context

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        study_uid, version = self._finished_study(delivery)
        try:
            sources = await asyncio.to_thread(self._assemble, study_uid, version)
        except NotLinked as exc:
            raise TransientDeliveryError(f"held: {exc}") from exc
        except NoOrder as exc:
            raise PermanentDeliveryError(f"not sent: {exc}") from exc
        # emergent first: the priority update is rendered from the first message
        sources.sort(key=lambda s: not s.result.emergent_findings)
        for source in sources:
            await self._hand_on_result(source, delivery)
        objects = 0
        if self._config.pacs_channel is not None:
            for source in sources:
                try:
                    made = await asyncio.to_thread(
                        dicom_outputs, self._context.database, self._context.blobs, source,
                        segmentation=self._config.segmentation)
                except (SrRenderError, OverlayError) as exc:
                    raise PermanentDeliveryError(
                        f"results handed on; the DICOM rendering of {source.result.result_id} "
                        f"failed: {exc}") from exc
                for output in made:
                    await self._hand_on_object(output, source, delivery)
                objects += len(made)
        return SendResult(detail=f"{len(sources)} result(s), {objects} DICOM object(s)")

    async def close(self) -> None:
        return None

    def _assemble(self, study_uid: str, version: int) -> list[ResultSource]:
        with self._context.database.read() as session:
            return results_for(session, study_uid, version,
                               endpoint=self._config.pacs_endpoint)

    async def _hand_on_result(self, source: ResultSource, delivery: OutboundDelivery) -> None:
        result = source.result
        await self._context.receive(Inbound(
            channel=self._config.results_channel, content_type=RESULT_CONTENT_TYPE,
            source=f"results:{delivery.channel}/{self._config.name}",
            content=json.dumps(result_to_json(result)).encode(),
            dedup_key=f"result/{result.result_id}",
            patient_id=result.patient.identifier, accession=result.order.accession,
            study_uid=result.study_uid,
            metadata={"result_id": result.result_id, "model": result.model.name,
                      "model_version": result.model.version, "run_id": str(source.run_id),
                      "emergent": "true" if result.emergent_findings else "false",
                      "demonstration": "true" if result.model.demonstration else "false"}))

    async def _hand_on_object(self, output: DicomOutput, source: ResultSource,
                              delivery: OutboundDelivery) -> None:
        assert self._config.pacs_channel is not None
        result = source.result
        await self._context.receive(Inbound(
            channel=self._config.pacs_channel, content_type=DICOM_CONTENT_TYPE,
            source=f"results:{delivery.channel}/{self._config.name}", blob=output.blob,
            dedup_key=f"dicom/{output.sop_instance_uid}",
            patient_id=result.patient.identifier, accession=result.order.accession,
            study_uid=result.study_uid,
            metadata={"result_id": result.result_id, "kind": output.kind,
                      "sop_instance_uid": output.sop_instance_uid,
                      "sop_class_uid": output.sop_class_uid}))

    def _finished_study(self, delivery: OutboundDelivery) -> tuple[str, int]:
        content = b"".join(self._context.content_chunks(delivery))
        try:
            document = json.loads(content)
            return str(document["study_uid"]), int(document["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentDeliveryError(
                "expected an inference message (JSON with study_uid and version)") from exc


@destination_type("results")
def _results(config: ResultsDestination, context: AdapterContext) -> Destination:
    return ResultsPublisher(config, context)
