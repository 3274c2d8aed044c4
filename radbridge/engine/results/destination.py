"""The `results` destination: on the channel inference announces finished studies to,
each study version's results are assembled (assemble.py), recorded in the results
ledger (ledger.py: the first time as revision 0, a newer study version as a correction
of what was sent before) and handed on (handing.py): the result JSON to
`results_channel` (emergent ones first: the worklist priority update must not wait
behind anything slower), then the DICOM SR and SEG to `pacs_channel`.

A study not linked to an order yet is a transient failure ("held"): the outbox tries
again with its backoff until correlation links it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import ResultsDestination
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.results import ledger
from radbridge.engine.results.assemble import NoOrder, NotLinked, ResultSource, results_for
from radbridge.engine.results.dicom_outputs import DicomOutput
from radbridge.engine.results.handing import Route, hand_on_dicom, hand_on_result
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError

log = logging.getLogger(__name__)

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
        route = Route(self._config.results_channel, self._config.pacs_channel,
                      f"results:{delivery.channel}/{self._config.name}")
        published = []
        for source in sources:
            publication = await asyncio.to_thread(self._publish, source)
            if publication is None:
                continue  # a newer version of the study has been sent since
            result = replace(source.result, result_id=publication.result_id,
                             revision=publication.revision, status=publication.status,
                             revision_reason=publication.reason)
            await hand_on_result(self._context, result, source.run_id, route)
            published.append((source, result, publication))
        objects = 0
        for source, result, publication in published:
            made = await hand_on_dicom(self._context, source, result, route,
                                       segmentation=self._config.segmentation,
                                       superseded=publication.superseded)
            await asyncio.to_thread(self._settle_objects, publication, made)
            objects += len(made)
        revised = sum(1 for *_, p in published if p.revision)
        return SendResult(detail=f"{len(published)} result(s)"
                          + (f" ({revised} correcting earlier ones)" if revised else "")
                          + f", {objects} DICOM object(s)")

    async def close(self) -> None:
        return None

    def _assemble(self, study_uid: str, version: int) -> list[ResultSource]:
        with self._context.database.read() as session:
            return results_for(session, study_uid, version,
                               endpoint=self._config.pacs_endpoint,
                               study_only=self._config.unlinked == "study-only")

    def _publish(self, source: ResultSource) -> ledger.Publication | None:
        with self._context.database.write() as session:
            return ledger.publish(session, source, self._config, chain=self._chain)

    def _settle_objects(self, publication: ledger.Publication, made: list[DicomOutput]
                        ) -> None:
        with self._context.database.write() as session:
            ledger.settle_objects(session, publication.row_id, publication.revision,
                                  [output.as_record() for output in made])

    @property
    def _chain(self) -> str:
        return f"{self._context.node_id}/results"

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
