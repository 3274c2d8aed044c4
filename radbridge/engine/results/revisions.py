"""Send the revisions that changes after the fact marked in the results ledger.

A withdrawn order's result goes out again as `withdrawn` (ORU OBR-25 X, FHIR
entered-in-error, a rejection note for the SR and SEG the PACS holds); a result whose
patient changed (demographics updated, merged) goes out as `corrected` to the RIS and
the EHR with the patient as it is now (the PACS keeps its own patient data from ADT, and
the SR's images have not changed, so nothing new goes there).

Called by the registry destination after it commits an ADT or order message; the marks
are durable, so if this fails or the node stops, the message's delivery is retried and
the next call sends the same revisions (same ids: receivers drop the duplicates).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from radbridge.engine.adapters import AdapterContext
from radbridge.engine.models import PublishedResult
from radbridge.engine.results import ledger
from radbridge.engine.results.assemble import ResultSource, source_of
from radbridge.engine.results.handing import Route, hand_on_dicom, hand_on_result
from radbridge.mappings.results import AiResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Revision:
    publication: ledger.Publication
    source: ResultSource
    result: AiResult
    route: Route


async def send_pending(context: AdapterContext, *, origin: str) -> int:
    """Hand on every pending revision; how many were sent."""
    sent = 0
    while True:
        ids = await asyncio.to_thread(_pending, context)
        if not ids:
            return sent
        progressed = False
        for row_id in ids:
            revision = await asyncio.to_thread(_plan, context, row_id, origin)
            if revision is None:
                continue
            await hand_on_result(context, revision.result, revision.source.run_id,
                                 revision.route)
            if revision.publication.superseded:  # a withdrawal: reject what the PACS holds
                await hand_on_dicom(context, revision.source, revision.result, revision.route,
                                    segmentation=False,
                                    superseded=revision.publication.superseded)
            if await asyncio.to_thread(_settle, context, revision):
                sent += 1
                progressed = True
                log.info("result %s revision %d (%s) handed on", revision.result.result_id,
                         revision.result.revision, revision.result.status.value)
        if not progressed:
            return sent


def _pending(context: AdapterContext) -> list[int]:
    with context.database.read() as session:
        return ledger.pending_ids(session)


def _plan(context: AdapterContext, row_id: int, origin: str) -> Revision | None:
    with context.database.read() as session:
        publication = ledger.next_revision(session, row_id)
        if publication is None:
            return None
        row = session.get_one(PublishedResult, row_id)
        if row.order_id is None:  # a study-only result owes nothing until it is linked
            return None
        source = source_of(session, row.run_id, row.order_id, endpoint=row.pacs_endpoint)
        route = Route(row.results_channel, row.pacs_channel, origin)
    result = replace(source.result, result_id=publication.result_id,
                     revision=publication.revision, status=publication.status,
                     revision_reason=publication.reason)
    return Revision(publication, source, result, route)


def _settle(context: AdapterContext, revision: Revision) -> bool:
    with context.database.write() as session:
        return ledger.settle_pending(session, revision.publication, revision.result,
                                     chain=f"{context.node_id}/results")

