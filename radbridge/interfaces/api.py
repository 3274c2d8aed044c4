"""The HTTP API: health, channels and their statistics, messages, replay, audit, metrics.

Route modules: this one, `dicomweb/stow.py` (STOW-RS); each has its `ROUTES`, gathered
in `ROUTES` below; what they share (the context, ApiError, parameter parsing) is in
`api_support.py`.

Also the `http` channel source: POST /api/channels/NAME/messages stores the body and
answers 202 only once it is committed. Every read of PHI (a message's metadata or
content, a list of messages, the audit trail, studies and inference runs) appends an
audit event naming the caller before the answer leaves. With `ApiContext.auth` set (as
`radbridge run` always does) every request passes the auth middleware first: the table
in `auth/policy.py` says which role each route needs. Database work runs in worker
threads, never on the event loop. Errors answer JSON `{"error": "..."}` with the status
code that says what went wrong.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

import anyio.from_thread
import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from radbridge.engine import audit, queries, replay, study_queries
from radbridge.engine.blobstore import BlobRef, BlobStore
from radbridge.engine.config import ChannelConfig, HttpSource
from radbridge.engine.correlation import queries as correlation_queries
from radbridge.engine.correlation import service
from radbridge.engine.db import Database
from radbridge.engine.inference_runs import queries as inference_queries
from radbridge.engine.lifecycle import MessageStatus
from radbridge.engine.metrics import StoreCollector, register_store_collector
from radbridge.engine.models import Message
from radbridge.engine.qa import queries as qa_queries
from radbridge.engine.receiver import Inbound
from radbridge.errors import NotFound, StoreError, StoreUnavailable, UnknownChannel
from radbridge.interfaces import api_audit, api_console, api_control
from radbridge.interfaces.api_support import (
    MAX_ID,
    ApiContext,
    ApiError,
    actor_of,
    audit_read,
    bool_param,
    chain_of,
    client_host,
    context_of,
    identity_of,
    int_param,
    json_body,
    query_params,
    read_query,
    text_param,
)
from radbridge.interfaces.auth.middleware import AuthMiddleware
from radbridge.interfaces.dicomweb import stow
from radbridge.qa.errors import QaConfigError

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
MESSAGE_PAGE = 500


def _message_id(request: Request) -> int:
    message_id: int = request.path_params["message_id"]
    if not 1 <= message_id <= MAX_ID:
        raise NotFound(f"no message {message_id}")
    return message_id


def _channel(request: Request) -> ChannelConfig:
    name: str = request.path_params["name"]
    channel = context_of(request).channels.get(name)
    if channel is None:
        raise UnknownChannel(f"no channel {name!r} is deployed")
    return channel


# --- health, readiness, metrics ------------------------------------------------------


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "node_id": context_of(request).node_id})


async def ready(request: Request) -> Response:
    context = context_of(request)
    if not context.is_ready():
        raise ApiError(503, "the node is not ready", {"Retry-After": str(RETRY_AFTER_SECONDS)})
    if not await run_in_threadpool(context.database.ping):
        raise ApiError(503, "the store does not answer", {"Retry-After": str(RETRY_AFTER_SECONDS)})
    return JSONResponse({"status": "ready", "node_id": context.node_id})


async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(generate_latest, context_of(request).registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


# --- channels ------------------------------------------------------------------------


def _channel_view(channel: ChannelConfig, statistics: Mapping[str, Any],
                  paused: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {
        "name": channel.name,
        "description": channel.description,
        "enabled": channel.enabled,
        "paused": channel.name in paused,
        "source": channel.source.type,
        "destinations": [
            {"name": destination.name, "type": getattr(destination, "type", None)}
            for destination in channel.destinations
        ],
        "statistics": statistics,
    }


def _statistics(database: Database, channels: list[ChannelConfig]) -> dict[str, Any]:
    destinations = {c.name: [d.name for d in c.destinations] for c in channels}
    with database.read() as session:
        return queries.channel_statistics(session, list(destinations), destinations=destinations)


async def list_channels(request: Request) -> Response:
    query_params(request, ())
    context = context_of(request)
    channels = [context.channels[name] for name in sorted(context.channels)]
    stats = await run_in_threadpool(_statistics, context.database, channels)
    paused = _paused(request)
    return JSONResponse({"channels": [_channel_view(c, stats[c.name], paused)
                                      for c in channels]})


async def get_channel(request: Request) -> Response:
    query_params(request, ())
    channel = _channel(request)
    stats = await run_in_threadpool(_statistics, context_of(request).database, [channel])
    return JSONResponse(_channel_view(channel, stats[channel.name], _paused(request)))


def _paused(request: Request) -> frozenset[str]:
    """The channels runtime control has paused on this node (none without control)."""
    control = context_of(request).control
    if control is None:
        return frozenset()
    return frozenset(state.name for state in control.states() if state.paused)


async def who_am_i(request: Request) -> Response:
    """Who the token (or OIDC subject) is and its roles: what the console shows."""
    query_params(request, ())
    identity = identity_of(request)
    if identity is None:  # authentication off (unit tests only)
        return JSONResponse({"name": None, "kind": None, "roles": []})
    return JSONResponse({"name": identity.name, "kind": identity.kind,
                         "roles": sorted(role.value for role in identity.roles)})


# --- the http source -----------------------------------------------------------------


async def post_message(request: Request) -> Response:
    """Store the body as a message of an `http`-source channel; 202 once committed."""
    context = context_of(request)
    channel = _channel(request)
    if not isinstance(channel.source, HttpSource):
        raise ApiError(409, f"channel {channel.name!r} takes messages from its "
                            f"{channel.source.type} source, not over HTTP")
    if not channel.enabled:
        raise ApiError(409, f"channel {channel.name!r} is disabled")
    if context.receive is None:
        raise ApiError(503, "this node does not receive messages",
                       {"Retry-After": str(RETRY_AFTER_SECONDS)})
    max_size = channel.source.max_size
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_size:
        raise _too_large(max_size)
    dedup_key = request.headers.get("idempotency-key")
    if dedup_key is not None and not 1 <= len(dedup_key) <= 255:
        raise ApiError(400, "header 'Idempotency-Key': expected 1 to 255 characters")
    content_type = request.headers.get("content-type") or "application/octet-stream"
    if len(content_type) > 127:
        raise ApiError(400, "header 'Content-Type': expected at most 127 characters")
    content, blob = await _read_body(request, context.blobs, context.inline_limit, max_size)
    receipt = await context.receive(Inbound(
        channel=channel.name, content_type=content_type, source=f"http:{client_host(request)}",
        content=content, blob=blob, dedup_key=dedup_key,
    ))
    return JSONResponse(
        {"message_id": receipt.message_id, "uid": receipt.uid, "duplicate": receipt.duplicate},
        status_code=202,
    )


def _too_large(max_size: int) -> ApiError:
    return ApiError(413, f"the body is larger than this channel's max_size ({max_size} bytes)")


async def _read_body(
    request: Request, blobs: BlobStore, inline_limit: int, max_size: int
) -> tuple[bytes | None, BlobRef | None]:
    """The body inline when it is at most `inline_limit` bytes, else streamed to a blob.

    At most `inline_limit` plus one chunk is held in memory; a body past `max_size`
    raises 413 as soon as it gets there (the partial blob is removed).
    """
    chunks = request.stream()
    buffered = bytearray()
    while len(buffered) <= inline_limit:
        chunk = await anext(chunks, None)
        if chunk is None:
            return bytes(buffered), None
        buffered += chunk
        if len(buffered) > max_size:
            raise _too_large(max_size)
    first = bytes(buffered)
    del buffered
    ref = await anyio.to_thread.run_sync(
        blobs.put_chunks, _chunks_from_loop(first, chunks, max_size)
    )
    return None, ref


def _chunks_from_loop(first: bytes, chunks: AsyncIterator[bytes], max_size: int) -> Iterator[bytes]:
    """Runs in a worker thread: pulls the rest of the body from the event loop."""
    yield first
    size = len(first)
    while (chunk := anyio.from_thread.run(_next_chunk, chunks)) is not None:
        size += len(chunk)
        if size > max_size:
            raise _too_large(max_size)
        yield chunk


async def _next_chunk(chunks: AsyncIterator[bytes]) -> bytes | None:
    return await anext(chunks, None)


# --- studies (the DICOM index) -------------------------------------------------------


async def list_studies(request: Request) -> Response:
    params = query_params(request, ("state", "accession", "patient_id", "modality", "channel",
                               "limit", "offset"))
    where = study_queries.StudyFilter(
        state=params.get("state"), accession=params.get("accession"),
        patient_id=params.get("patient_id"),
        modality=text_param(params, "modality", max_length=16),  # a DICOM CS value
        channel=params.get("channel"), limit=int_param(params, "limit", default=50, maximum=1000)
        or 50, offset=_offset(params))
    database = context_of(request).database
    rows = await run_in_threadpool(read_query, database, study_queries.list_studies, where)
    given = {k: v for k, v in params.items() if v}
    await _audit_reads(request, [audit.AuditRecord(
        action="study.listed", actor=actor_of(request), patient_id=row["patient_id"],
        accession=row["accession"], study_uid=row["study_uid"], detail={"filters": given},
    ) for row in rows])
    return JSONResponse({"studies": rows})


async def get_study(request: Request) -> Response:
    uid = request.path_params["study_uid"]
    with_instances = query_params(request, ("instances",)).get("instances") in ("1", "true")
    database = context_of(request).database
    detail = await run_in_threadpool(read_query, database, study_queries.study_detail, uid,
                                     with_instances=with_instances)
    if detail is None:
        raise ApiError(404, f"no study {uid}")
    detail["orders"] = await run_in_threadpool(
        read_query, database, correlation_queries.study_links, uid)
    detail["inference"] = await run_in_threadpool(
        read_query, database, inference_queries.study_runs, uid)
    await _audit_reads(request, [audit.AuditRecord(
        action="study.viewed", actor=actor_of(request), patient_id=detail["patient_id"],
        accession=detail["accession"], study_uid=uid,
        detail={"instances": with_instances, "runs": [r["id"] for r in detail["inference"]]},
    )])
    return JSONResponse(detail)


async def _audit_reads(request: Request, records: list[audit.AuditRecord]) -> None:
    """Append the read events (one per study shown) before the answer leaves."""
    if records:
        await run_in_threadpool(audit_read, context_of(request), records)


def _offset(params: QueryParams) -> int:
    raw = params.get("offset") or "0"
    value = _whole_number(raw)
    if value is None:
        raise ApiError(400, f"query parameter 'offset': expected 0 to {MAX_ID}, "
                            f"got {raw[:20]!r}")
    return value


def _whole_number(raw: str) -> int | None:
    """`raw` as 0 to MAX_ID when it is plain ASCII digits, else None (int() would take
    '٣' and fail on '²' or on 5,000 digits)."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_ID)):
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


# --- inference runs --------------------------------------------------------------------

RUN_STATUSES = ("done", "skipped", "failed-retryable", "failed-final")


async def list_inference(request: Request) -> Response:
    params = query_params(request, ("study_uid", "model", "status", "positive", "limit", "offset"))
    status = params.get("status")
    if status is not None and status not in RUN_STATUSES:
        raise ApiError(400, f"query parameter 'status': expected one of {', '.join(RUN_STATUSES)}")
    positive = params.get("positive")
    if positive not in (None, "true", "false"):
        raise ApiError(400, "query parameter 'positive': expected true or false")
    where = inference_queries.RunFilter(
        study_uid=params.get("study_uid"), model=params.get("model"), status=status,
        positive=None if positive is None else positive == "true",
        limit=int_param(params, "limit", default=50, maximum=1000) or 50, offset=_offset(params))
    runs = await run_in_threadpool(read_query, context_of(request).database,
                                   inference_queries.list_runs, where)
    per_study: dict[str, list[int]] = {}
    for run in runs:
        per_study.setdefault(run["study_uid"], []).append(run["id"])
    given = {k: v for k, v in params.items() if v}
    await _audit_reads(request, [audit.AuditRecord(
        action="inference.listed", actor=actor_of(request), study_uid=study_uid,
        detail={"filters": given, "runs": ids}) for study_uid, ids in per_study.items()])
    return JSONResponse({"runs": runs})


async def get_inference(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    if not 1 <= run_id <= MAX_ID:
        raise ApiError(404, f"no inference run {run_id}")
    detail = await run_in_threadpool(read_query, context_of(request).database,
                                     inference_queries.run_detail, run_id)
    if detail is None:
        raise ApiError(404, f"no inference run {run_id}")
    await _audit_reads(request, [audit.AuditRecord(
        action="inference.viewed", actor=actor_of(request), study_uid=detail["study_uid"],
        detail={"run": run_id})])
    return JSONResponse(detail)


# --- clinical QA: agreement and drift, counted in SQL (aggregates only, no PHI) ----------


async def qa_agreement(request: Request) -> Response:
    params = query_params(request, ("model", "version", "since", "until", "window", "by",
                               "min_group", "confidence"))
    try:
        today = datetime.now(UTC).date()
        if params.get("window") and (params.get("since") or params.get("until")):
            raise QaConfigError("window", "either window or since/until, not both")
        window = (qa_queries.Window.trailing(params["window"], today) if params.get("window")
                  else qa_queries.Window.between(_qa_date(params, "since"),
                                                 _qa_date(params, "until"), today))
        report = await run_in_threadpool(
            read_query, context_of(request).database, qa_queries.agreement,
            params.get("model") or None, params.get("version") or None, window,
            params.get("by") or None, min_group=_qa_int(params, "min_group", 30),
            confidence=_qa_float(params, "confidence", 0.95))
    except QaConfigError as exc:
        raise ApiError(400, f"query parameter {exc}") from exc
    return JSONResponse(report.as_json())


async def qa_drift(request: Request) -> Response:
    params = query_params(request, ("model", "version", "baseline", "current", "by_scanner",
                               "bins", "min_group"))
    model, by_scanner = params.get("model"), bool_param(params, "by_scanner")
    if not model:
        raise ApiError(400, "query parameter 'model': expected a model name")
    try:
        windows = qa_queries.drift_windows(
            datetime.now(UTC).date(),
            *(qa_queries.Window.parse(params[name], name) if params.get(name) else None
              for name in ("baseline", "current")))
        options = qa_queries.DriftOptions(bins=_qa_int(params, "bins", 10),
                                          min_group=_qa_int(params, "min_group", 30))
        reports = await run_in_threadpool(
            read_query, context_of(request).database, qa_queries.drift, model,
            params.get("version") or None, *windows, options)
    except QaConfigError as exc:
        raise ApiError(400, f"query parameter {exc}") from exc
    return JSONResponse({"reports": [r.as_json(scanners=by_scanner) for r in reports]})


def _qa_date(params: QueryParams, name: str) -> date | None:
    raw = params.get(name) or ""
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        raise QaConfigError(name, f"a date such as 2026-01-31, not {raw[:20]!r}") from None


def _qa_int(params: QueryParams, name: str, default: int) -> int:
    raw = params.get(name) or ""
    if not raw:
        return default
    value = _whole_number(raw)
    if value is None:
        raise QaConfigError(name, f"a whole number, not {raw[:20]!r}")
    return value


def _qa_float(params: QueryParams, name: str, default: float) -> float:
    raw = params.get(name) or ""
    try:
        return float(raw) if raw else default
    except ValueError:
        raise QaConfigError(name, f"a number, not {raw[:20]!r}") from None


# --- the reconciliation queue ----------------------------------------------------------


async def list_reconciliation(request: Request) -> Response:
    params = query_params(request, ("state", "limit", "before_id"))
    state = params.get("state", "open")
    if state not in ("open", "linked", "rejected", "superseded", "all"):
        raise ApiError(400, "query parameter 'state': expected open, linked, rejected, "
                            "superseded or all")
    items = await run_in_threadpool(
        read_query, context_of(request).database, correlation_queries.list_items,
        state=None if state == "all" else state,
        limit=int_param(params, "limit", default=50, maximum=1000) or 50,
        before_id=int_param(params, "before_id"))
    return JSONResponse({"items": items})


async def link_reconciliation(request: Request) -> Response:
    body = await json_body(request)
    order_ids = body.get("order_ids")
    if not isinstance(order_ids, list) or not order_ids \
            or not all(isinstance(i, int) for i in order_ids):
        raise ApiError(400, "field 'order_ids': expected a non-empty list of order ids")
    return await _decide(request, lambda session, item_id, actor, note: service.link_by_hand(
        session, item_id, order_ids, actor=actor, note=note, chain=chain_of(request)), body)


async def reject_reconciliation(request: Request) -> Response:
    body = await json_body(request)
    return await _decide(request, lambda session, item_id, actor, note: service.reject_by_hand(
        session, item_id, actor=actor, note=note, chain=chain_of(request)), body)


async def _decide(request: Request, decide: Callable[..., Any], body: dict[str, Any]
                  ) -> Response:
    note = body.get("note")
    if not isinstance(note, str) or not note.strip():
        raise ApiError(400, "field 'note': expected why (a non-empty string)")
    item_id = int(request.path_params["item_id"])
    context, actor = context_of(request), actor_of(request)

    def work() -> dict[str, Any]:
        with context.database.write() as session:
            item = decide(session, item_id, actor, note.strip())
            return correlation_queries.item_view(item)

    try:
        view = await run_in_threadpool(work)
    except service.CorrelationError as exc:
        raise ApiError(409, str(exc)) from exc
    return JSONResponse(view)


# --- messages ------------------------------------------------------------------------


async def list_messages(request: Request) -> Response:
    params = query_params(request, ("channel", "status", "patient_id", "accession",
                                    "before_id", "limit"))
    status = params.get("status") or None
    if status is not None and status not in set(MessageStatus):
        raise ApiError(400, f"query parameter 'status': expected one of "
                            f"{', '.join(MessageStatus)}, got {status!r}")
    channel = text_param(params, "channel", max_length=63)
    patient_id = text_param(params, "patient_id", max_length=64)  # their columns' sizes
    accession = text_param(params, "accession", max_length=64)
    before_id = int_param(params, "before_id")
    limit = int_param(params, "limit", default=50, maximum=MESSAGE_PAGE) or 50
    context, actor = context_of(request), actor_of(request)

    def work() -> list[dict[str, Any]]:
        with context.database.read() as session:
            rows = queries.list_messages(
                session, channel=channel, status=status, patient_id=patient_id,
                accession=accession, before_id=before_id, limit=limit
            )
        audit_read(context, [audit.AuditRecord(
            action="message.listed", actor=actor, channel=channel,
            patient_id=patient_id, accession=accession,
            detail={"filters": {k: v for k, v in params.items() if v},
                    "message_ids": [row["id"] for row in rows]},
        )])
        return rows

    rows = await run_in_threadpool(work)
    next_before_id = rows[-1]["id"] if len(rows) == limit else None
    return JSONResponse({"messages": rows, "next_before_id": next_before_id})


async def get_message(request: Request) -> Response:
    include_content = bool_param(query_params(request, ("content",)), "content")
    message_id = _message_id(request)
    context, actor = context_of(request), actor_of(request)

    def work() -> dict[str, Any]:
        with context.database.read() as session:
            detail = queries.message_detail(
                session, message_id, include_content=include_content,
                blobs=context.blobs, content_limit=context.content_limit,
            )
        audit_read(context, [audit.AuditRecord(
            action="message.viewed", actor=actor, channel=detail["channel"],
            message_id=message_id, patient_id=detail["patient_id"],
            accession=detail["accession"], study_uid=detail["study_uid"],
            detail={"content": include_content},
        )])
        return detail

    return JSONResponse(await run_in_threadpool(work))


async def reprocess_message(request: Request) -> Response:
    query_params(request, ())
    message_id = _message_id(request)
    context = context_of(request)
    ids = await run_in_threadpool(
        replay.reprocess, context.database, [message_id], actor=actor_of(request)
    )
    if context.wake is not None:
        context.wake()
    return JSONResponse({"reprocessed": ids})


async def retry_message(request: Request) -> Response:
    query_params(request, ())
    message_id = _message_id(request)
    context, actor = context_of(request), actor_of(request)

    def work() -> int:
        with context.database.read() as session:
            if session.get(Message, message_id) is None:
                raise NotFound(f"no message {message_id}")
        return replay.retry_dead(context.database, message_id=message_id, actor=actor)

    retried = await run_in_threadpool(work)
    if retried and context.wake is not None:
        context.wake()
    return JSONResponse({"message_id": message_id, "retried": retried})


# --- errors and the app --------------------------------------------------------------


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": reason}, status_code=status, headers=dict(headers or {}))


async def _on_api_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        return _error(exc.status, exc.reason, exc.headers)
    return await _on_server_error(request, exc)


async def _on_not_found(request: Request, exc: Exception) -> Response:
    return _error(404, str(exc))


async def _on_store_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, StoreUnavailable):
        log.warning("store unavailable for %s %s: %s", request.method, request.url.path, exc)
        return _error(503, str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})
    log.error("store error for %s %s: %s", request.method, request.url.path, exc)
    return _error(500, "the store failed; see the node's log")


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _error(exc.status_code, exc.detail, exc.headers)
    return await _on_server_error(request, exc)


async def _on_server_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error for %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal error; see the node's log")


ROUTES = [
    Route("/health", health),
    Route("/ready", ready),
    Route("/metrics", metrics),
    Route("/api/me", who_am_i),
    Route("/api/channels", list_channels),
    Route("/api/channels/{name}", get_channel),
    Route("/api/channels/{name}/messages", post_message, methods=["POST"]),
    Route("/api/messages", list_messages),
    Route("/api/messages/{message_id:int}", get_message),
    Route("/api/messages/{message_id:int}/reprocess", reprocess_message, methods=["POST"]),
    Route("/api/messages/{message_id:int}/retry", retry_message, methods=["POST"]),
    Route("/api/studies", list_studies),
    Route("/api/studies/{study_uid}", get_study),
    Route("/api/inference", list_inference),
    Route("/api/inference/{run_id:int}", get_inference),
    Route("/api/qa/agreement", qa_agreement),
    Route("/api/qa/drift", qa_drift),
    Route("/api/reconciliation", list_reconciliation),
    Route("/api/reconciliation/{item_id:int}/link", link_reconciliation, methods=["POST"]),
    Route("/api/reconciliation/{item_id:int}/reject", reject_reconciliation, methods=["POST"]),
    *stow.ROUTES,
    *api_console.ROUTES,
    *api_control.ROUTES,
    *api_audit.ROUTES,
]


def _register_gauges(context: ApiContext) -> StoreCollector | None:
    try:
        return register_store_collector(
            context.registry, context.database,
            lambda: {name: [d.name for d in c.destinations]
                     for name, c in context.channels.items()},
        )
    except ValueError as exc:  # another app already registered them on this registry
        log.warning("queue gauges not registered again: %s", exc)
        return None


class _RefuseNulInPath:
    """A path with NUL (%00) names nothing, and PostgreSQL refuses NUL in a query: 400
    before any route reads a path parameter into one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "\x00" in scope["path"]:
            await _error(400, "the path has a NUL character")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(context: ApiContext) -> Starlette:
    """The API app serving `context`; /metrics includes the queue gauges while it runs."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        collector = _register_gauges(context) if context.store_metrics else None
        try:
            yield
        finally:
            if collector is not None:
                context.registry.unregister(collector)

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        middleware=[Middleware(_RefuseNulInPath)] + (
            [] if context.auth is None
            else [Middleware(AuthMiddleware, authenticator=context.auth)]),
        exception_handlers={
            ApiError: _on_api_error,
            NotFound: _on_not_found,
            UnknownChannel: _on_not_found,
            StoreError: _on_store_error,
            HTTPException: _on_http_exception,
            500: _on_server_error,
        },
    )
    app.state.context = context
    return app
