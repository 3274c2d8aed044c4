"""The audit routes of the HTTP API (the compliance role's, see auth/policy.py).

    GET /api/audit                  search: filters, newest first, keyset pages
    GET /api/audit/export           the same filters streamed as csv, json, ndjson, fhir
                                    (AuditEvent NDJSON) or atna (DICOM audit messages)
    GET /api/audit/studies/{uid}    one study's cycle from receipt to report
    GET /api/audit/forwarding       how far each syslog collector has the ledger

Filters: patient_id, accession, study_uid, channel, actor, action (an exact name, or a
prefix ending in ".*"), outcome, message_id, since (inclusive), until (exclusive).
Each search, export and cycle view is itself an audit event naming the caller, written
before the answer leaves. An export is streamed page by page from short read
transactions, so its size is bounded by nothing but the filters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from radbridge.engine import audit
from radbridge.engine.audit_export import formats, queries
from radbridge.engine.audit_export.cycle import study_cycle
from radbridge.engine.audit_export.errors import AuditFilterError
from radbridge.engine.audit_export.event_map import AuditSource
from radbridge.engine.audit_export.forwarder import forwarding_status
from radbridge.interfaces.api_support import (
    ApiError,
    actor_of,
    audit_read,
    context_of,
    int_param,
    query_params,
    time_param,
)

AUDIT_PAGE = 1000
FILTER_PARAMS = (*queries.TEXT_FILTERS, "message_id", "since", "until")
MAX_UID = 64


def audit_filter(params: QueryParams) -> queries.AuditFilter:
    """The filters of a request; a bad value is a 400 naming the parameter."""
    try:
        return queries.AuditFilter(
            **{name: params.get(name) or None for name in queries.TEXT_FILTERS},
            message_id=int_param(params, "message_id"),
            since=time_param(params, "since"), until=time_param(params, "until"))
    except AuditFilterError as exc:
        raise ApiError(400, f"query parameter {exc}") from exc


async def search(request: Request) -> Response:
    params = query_params(request, (*FILTER_PARAMS, "before_seq", "after_seq", "limit"))
    filters = audit_filter(params)
    before, after = int_param(params, "before_seq"), int_param(params, "after_seq")
    if before is not None and after is not None:
        raise ApiError(400, "query parameter 'after_seq': give before_seq or after_seq, "
                            "not both")
    limit = int_param(params, "limit", default=100, maximum=AUDIT_PAGE) or 100
    context, actor = context_of(request), actor_of(request)

    def work() -> queries.Page:
        with context.database.read() as session:
            found = queries.page(session, filters, limit=limit, before_seq=before,
                                 after_seq=after, newest_first=after is None)
        audit_read(context, [_record("audit.queried", actor, filters, {
            "filters": {k: v for k, v in params.items() if v},
            "returned": len(found.events)})])
        return found

    found = await run_in_threadpool(work)
    key = "next_after_seq" if after is not None else "next_before_seq"
    return JSONResponse({"events": [e.as_json() for e in found.events], key: found.next_seq})


async def export(request: Request) -> Response:
    params = query_params(request, (*FILTER_PARAMS, "format", "limit", "order"))
    filters = audit_filter(params)
    try:
        chosen = formats.export_format(params.get("format") or "csv")
    except AuditFilterError as exc:
        raise ApiError(400, f"query parameter {exc}") from exc
    order = params.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise ApiError(400, "query parameter 'order': expected asc (oldest first) or desc")
    limit = int_param(params, "limit")
    context, actor = context_of(request), actor_of(request)
    await run_in_threadpool(audit_read, context, [_record("audit.exported", actor, filters, {
        "filters": {k: v for k, v in params.items() if v}, "format": chosen.name})])
    events = queries.stream(context.database, filters, newest_first=order == "desc",
                            max_events=limit)
    body = formats.chunked(chosen.render(events, AuditSource(context.node_id)))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(body, media_type=chosen.media_type, headers={
        "Content-Disposition": f'attachment; filename="audit-{stamp}.{chosen.extension}"'})


async def cycle(request: Request) -> Response:
    query_params(request, ())
    study_uid: str = request.path_params["study_uid"]
    if not 1 <= len(study_uid) <= MAX_UID:
        raise ApiError(404, f"no study {study_uid[:MAX_UID]}")
    context, actor = context_of(request), actor_of(request)

    def work() -> dict[str, Any] | None:
        with context.database.read() as session:
            found = study_cycle(session, study_uid)
        if found is not None:
            study = found["study"] or {}
            audit_read(context, [audit.AuditRecord(
                action="audit.study-cycle-viewed", actor=actor, study_uid=study_uid,
                patient_id=study.get("patient_id"), accession=study.get("accession"))])
        return found

    found = await run_in_threadpool(work)
    if found is None:
        raise ApiError(404, f"no study {study_uid}: nothing in the store names it")
    return JSONResponse(found)


async def forwarding(request: Request) -> Response:
    query_params(request, ())
    rows = await run_in_threadpool(forwarding_status, context_of(request).database)
    return JSONResponse({"destinations": rows})


def _record(action: str, actor: str, filters: queries.AuditFilter,
            detail: dict[str, Any]) -> audit.AuditRecord:
    """A search or export, filed under the patient, study and channel it asked about."""
    return audit.AuditRecord(
        action=action, actor=actor, channel=filters.channel, message_id=filters.message_id,
        patient_id=filters.patient_id, accession=filters.accession,
        study_uid=filters.study_uid, detail=detail)


ROUTES = [
    Route("/api/audit", search),
    Route("/api/audit/export", export),
    Route("/api/audit/studies/{study_uid}", cycle),
    Route("/api/audit/forwarding", forwarding),
]
