"""Runtime control over HTTP (admin): deploy, undeploy, pause, resume, reload.

    GET    /api/control/channels          deployed channels: paused?, where they came from
    POST   /api/channels                  deploy the channel(s) in a YAML body
                                          (?replace=true redeploys; ?file=NAME names it)
    DELETE /api/channels/{name}           undeploy
    POST   /api/channels/{name}/pause     stop taking in and sending
    POST   /api/channels/{name}/resume
    POST   /api/config/reload             make the node match its config files again

The node does the work and audits each change with the caller and the YAML diff
(radbridge.engine.node_control). A body that does not validate is a 400 whose `issues`
name the file, line, field and what was expected, as `radbridge validate` does.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from radbridge.engine.control import (
    ChannelChange,
    ChannelControl,
    ChannelExists,
    ControlFailed,
    ControlUnavailable,
)
from radbridge.errors import ConfigError, UnknownChannel
from radbridge.interfaces.api_support import (
    ApiError,
    actor_of,
    bool_param,
    context_of,
    query_params,
)

BODY_LIMIT = 1024 * 1024
"""Bytes of YAML a deploy takes (channel files are a few kilobytes)."""
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml",
              "text/plain", "application/json")


def _control(request: Request) -> ChannelControl:
    control = context_of(request).control
    if control is None:
        raise ApiError(503, "runtime control is not available: this API has no node behind it")
    return control


def _name(request: Request) -> str:
    name: str = request.path_params["name"]
    return name


def _changes(changes: list[ChannelChange], status: int = 200) -> Response:
    return JSONResponse({"changes": [change.as_json() for change in changes]},
                        status_code=status)


def _invalid(exc: ConfigError) -> Response:
    issues = [{"file": i.file, "line": i.line, "path": i.path, "message": i.message}
              for i in exc.issues]
    return JSONResponse({"error": f"{len(issues)} config problem(s); nothing changed: "
                                  f"{exc.issues[0]}", "issues": issues}, status_code=400)


def _refused(exc: Exception) -> Response:
    """A change that could not be made: 404 unknown, 409 conflict, 409 half-done."""
    if isinstance(exc, UnknownChannel):
        return JSONResponse({"error": str(exc)}, status_code=404)
    body: dict[str, object] = {"error": str(exc)}
    if isinstance(exc, ControlFailed):
        body["changes"] = [change.as_json() for change in exc.changes]
    return JSONResponse(body, status_code=409)


REFUSALS = (UnknownChannel, ChannelExists, ControlUnavailable, ControlFailed)


async def list_control(request: Request) -> Response:
    query_params(request, ())
    states = _control(request).states()
    return JSONResponse({"channels": [state.as_json() for state in states]})


async def deploy(request: Request) -> Response:
    params = query_params(request, ("replace", "file"))
    file = params.get("file") or "<request>"
    if len(file) > 255:
        raise ApiError(400, "query parameter 'file': expected at most 255 characters")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media not in YAML_TYPES:
        raise ApiError(415, f"expected a YAML body ({', '.join(YAML_TYPES[:3])}), "
                            f"got {media[:60]!r}")
    text = await _text_body(request)
    control = _control(request)
    try:
        changes = await control.deploy(text, file=file, actor=actor_of(request),
                                       replace=bool_param(params, "replace"))
    except ConfigError as exc:
        return _invalid(exc)
    except REFUSALS as exc:
        return _refused(exc)
    created = any(change.action == "deployed" for change in changes)
    return _changes(changes, 201 if created else 200)


async def _text_body(request: Request) -> str:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > BODY_LIMIT:
        raise ApiError(413, f"the body is larger than {BODY_LIMIT} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_LIMIT:
            raise ApiError(413, f"the body is larger than {BODY_LIMIT} bytes")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(400, "expected a UTF-8 YAML body") from None
    if not text.strip():
        raise ApiError(400, "expected a YAML body with a channel (name, source, destinations)")
    return text


async def undeploy(request: Request) -> Response:
    query_params(request, ())
    try:
        change = await _control(request).undeploy(_name(request), actor=actor_of(request))
    except REFUSALS as exc:
        return _refused(exc)
    return _changes([change])


async def pause(request: Request) -> Response:
    query_params(request, ())
    try:
        change = await _control(request).pause(_name(request), actor=actor_of(request))
    except REFUSALS as exc:
        return _refused(exc)
    return _changes([change])


async def resume(request: Request) -> Response:
    query_params(request, ())
    try:
        change = await _control(request).resume(_name(request), actor=actor_of(request))
    except REFUSALS as exc:
        return _refused(exc)
    return _changes([change])


async def reload(request: Request) -> Response:
    query_params(request, ())
    try:
        changes = await _control(request).reload(actor=actor_of(request))
    except ConfigError as exc:
        return _invalid(exc)
    except REFUSALS as exc:
        return _refused(exc)
    return _changes(changes)


ROUTES = [
    Route("/api/control/channels", list_control),
    Route("/api/channels", deploy, methods=["POST"]),
    Route("/api/channels/{name}", undeploy, methods=["DELETE"]),
    Route("/api/channels/{name}/pause", pause, methods=["POST"]),
    Route("/api/channels/{name}/resume", resume, methods=["POST"]),
    Route("/api/config/reload", reload, methods=["POST"]),
]
