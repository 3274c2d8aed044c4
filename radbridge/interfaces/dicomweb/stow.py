"""The STOW-RS endpoint: POST /dicomweb/{channel}/studies[/{study_uid}] on the API server.

Only channels whose source type is `stow-rs` take it. The request is checked here (the
channel, the Content-Type, the declared size); the body is then consumed in a worker
thread by `StowIngest`, which stores each instance (message and index row committed)
before this answers. The answer is the PS3.18 STOW-RS response in the DICOM JSON model:
200 all stored, 202 some failed, 409 none stored; 400 for a broken multipart body, 413
past the channel's max_size, 415 for a Content-Type other than multipart/related with
application/dicom parts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import anyio.from_thread
import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from radbridge.engine.config import StowRsSource
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.interfaces.dicomweb.multipart import MultipartError, boundary_of, media_type
from radbridge.interfaces.dicomweb.stow_ingest import (
    BodyTooLarge,
    BrokenStowBody,
    StowIngest,
    StowRequest,
)
from radbridge.interfaces.dicomweb.stow_response import MEDIA_TYPE
from radbridge.mappings.dicom.records import CONTENT_TYPE

if TYPE_CHECKING:
    from radbridge.interfaces.api_support import ApiContext

RETRY_AFTER_SECONDS = 5
Receive = Callable[[Inbound], Awaitable[Receipt]]


class _Refused(Exception):
    """The request is refused before its body is read."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


async def store_instances(request: Request) -> Response:
    """STOW-RS: store every application/dicom part; answer once all are committed."""
    try:
        context, source, receive = _stow_channel(request)
        boundary = _boundary(request.headers.get("content-type", ""))
        _check_declared_size(request, source.max_size)
    except _Refused as refused:
        return JSONResponse({"error": refused.reason}, status_code=refused.status,
                            headers=refused.headers)
    channel: str = request.path_params["channel"]
    base = str(request.base_url).rstrip("/")
    ingest = StowIngest(
        StowRequest(channel=channel, client=request.client.host if request.client else "unknown",
                    boundary=boundary, max_size=source.max_size,
                    study_uid=request.path_params.get("study_uid"),
                    study_url=lambda study: f"{base}/dicomweb/{channel}/studies/{study}"),
        context.blobs,
        lambda inbound: _receive_from_thread(receive, inbound),
    )
    stream = request.stream()
    try:
        response = await anyio.to_thread.run_sync(ingest.run, _chunks_from_loop(stream))
    except BrokenStowBody as broken:
        return JSONResponse({"error": f"broken multipart body: {broken.reason}",
                             **broken.response.to_json()}, status_code=400)
    except BodyTooLarge as exc:
        return JSONResponse({"error": str(exc)}, status_code=413)
    return JSONResponse(response.to_json(), status_code=response.status_code,
                        media_type=MEDIA_TYPE)


def _stow_channel(request: Request) -> tuple[ApiContext, StowRsSource, Receive]:
    context: ApiContext = request.app.state.context
    name: str = request.path_params["channel"]
    channel = context.channels.get(name)
    if channel is None:
        raise _Refused(404, f"no channel {name!r} is deployed")
    if not isinstance(channel.source, StowRsSource):
        raise _Refused(404, f"channel {name!r} takes messages from its {channel.source.type} "
                            "source, not by STOW-RS")
    if not channel.enabled:
        raise _Refused(409, f"channel {name!r} is disabled")
    if context.receive is None:
        raise _Refused(503, "this node does not receive messages",
                       {"Retry-After": str(RETRY_AFTER_SECONDS)})
    return context, channel.source, context.receive


def _boundary(content_type: str) -> bytes:
    kind, params = media_type(content_type)
    if kind != "multipart/related":
        raise _Refused(415, f"expected Content-Type multipart/related; type=\"{CONTENT_TYPE}\", "
                            f"got {content_type[:100]!r}")
    part_type = params.get("type", CONTENT_TYPE).lower()
    if part_type != CONTENT_TYPE:
        raise _Refused(415, f"only {CONTENT_TYPE} parts are accepted, not {part_type[:60]!r}")
    try:
        return boundary_of(content_type)
    except MultipartError as exc:
        raise _Refused(400, str(exc)) from exc


def _check_declared_size(request: Request, max_size: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_size:
        raise _Refused(413, f"the body is larger than this channel's max_size ({max_size} bytes)")


def _chunks_from_loop(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """Runs in the worker thread: pulls the body from the event loop, chunk by chunk.

    A client that goes away ends the body early, which the parser reports as broken.
    """
    while True:
        try:
            chunk = anyio.from_thread.run(_next_chunk, stream)
        except ClientDisconnect:
            return
        if chunk is None:
            return
        if chunk:
            yield chunk


async def _next_chunk(stream: AsyncIterator[bytes]) -> bytes | None:
    return await anext(stream, None)


def _receive_from_thread(receive: Receive, inbound: Inbound) -> Receipt:
    async def call() -> Receipt:
        return await receive(inbound)

    return anyio.from_thread.run(call)


ROUTES = [
    Route("/dicomweb/{channel}/studies", store_instances, methods=["POST"]),
    Route("/dicomweb/{channel}/studies/{study_uid}", store_instances, methods=["POST"]),
]
