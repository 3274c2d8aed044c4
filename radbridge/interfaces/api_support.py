"""What every part of the HTTP API shares: the context it serves from, the error that
becomes a JSON answer, and the parsing of query parameters and bodies (a typo or a bad
value is a 400 that names the parameter, never ignored). Route modules (`api.py`,
`dicomweb/stow.py`, ...) build on these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from starlette.datastructures import QueryParams
from starlette.requests import Request

from radbridge.engine import audit, queries
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import ChannelConfig
from radbridge.engine.control import ChannelControl
from radbridge.engine.db import Database
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.interfaces.auth.authenticator import Authenticator
from radbridge.interfaces.auth.identity import Identity

MAX_ID = 2**63 - 1


@dataclass
class ApiContext:
    """What the API serves from; the runtime builds one per node."""

    database: Database
    blobs: BlobStore
    channels: Mapping[str, ChannelConfig]
    node_id: str
    inline_limit: int
    is_ready: Callable[[], bool] = lambda: True
    receive: Callable[[Inbound], Awaitable[Receipt]] | None = None
    """Stores an inbound message durably (the node's group committer); None: no http source."""
    registry: CollectorRegistry = field(default_factory=lambda: REGISTRY)
    content_limit: int = queries.DEFAULT_CONTENT_LIMIT
    """Bytes of each stage's content that GET /api/messages/ID?content=true shows."""
    wake: Callable[[], None] | None = None
    """Called after a reprocess or retry so that workers look for work at once."""
    store_metrics: bool = True
    """Register the queue gauges (StoreCollector) on `registry` while the app runs."""
    auth: Authenticator | None = None
    """Checks every request against the access policy. None: authentication is off,
    which only unit tests do; `radbridge run` always sets it."""
    control: ChannelControl | None = None
    """Runtime control of the node the API runs in (deploy, pause, reload: api_control);
    None: an API without a node behind it, whose control routes answer 503."""


class ApiError(Exception):
    """An answer other than success, with the reason the client sees."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})


def context_of(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def audit_read(context: ApiContext, records: list[audit.AuditRecord]) -> None:
    """Append to this node's API chain (the API never waits on the engine's chains)."""
    audit.append_now(context.database, records, chain=f"{context.node_id}/api")


def client_host(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def identity_of(request: Request) -> Identity | None:
    """The caller the auth middleware identified (None when authentication is off)."""
    identity = request.scope.get("state", {}).get("identity")
    return identity if isinstance(identity, Identity) else None


def actor_of(request: Request) -> str:
    """Who audit events name: token:<name> or oidc:<subject>; api:<client> without auth."""
    identity = identity_of(request)
    return identity.actor if identity is not None else f"api:{client_host(request)}"


def query_params(request: Request, allowed: tuple[str, ...]) -> QueryParams:
    """The query parameters, refusing any not in `allowed` (a typo is not ignored)."""
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown query parameter {unknown[0][:40]!r}; expected any of "
                            f"{', '.join(allowed)}")
    for name, value in request.query_params.multi_items():
        if "\x00" in value:  # no column can hold it (PostgreSQL refuses it outright)
            raise ApiError(400, f"query parameter {name!r}: NUL is not allowed")
    return request.query_params


def text_param(params: QueryParams, name: str, *, max_length: int) -> str | None:
    """An exact-match filter of at most `max_length` characters (its column's size)."""
    value = params.get(name) or None
    if value is not None and len(value) > max_length:
        raise ApiError(400, f"query parameter {name!r}: expected at most {max_length} "
                            "characters")
    return value


def int_param(params: QueryParams, name: str, *, default: int | None = None,
         maximum: int = MAX_ID) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name!r}: expected an integer, "
                            f"got {raw[:40]!r}") from None
    if not 1 <= value <= maximum:
        raise ApiError(400, f"query parameter {name!r}: expected 1 to {maximum}, got {value}")
    return value


def time_param(params: QueryParams, name: str) -> datetime | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset past year 9999 in UTC
        raise ApiError(400, f"query parameter {name!r}: expected an ISO 8601 time such as "
                            f"2025-01-31T08:00:00Z, got {raw[:40]!r}") from None


def bool_param(params: QueryParams, name: str) -> bool:
    raw = (params.get(name) or "false").lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ApiError(400, f"query parameter {name!r}: expected true or false, got {raw!r}")
    return raw in ("true", "1", "yes")


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "expected a JSON object body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object body")
    return body


def chain_of(request: Request) -> str:
    return f"{context_of(request).node_id}/api"


def read_query(database: Database, query: Callable[..., Any], *args: Any,
                    **kwargs: Any) -> Any:
    """`query(session, ...)` in a read session: what route handlers run in a thread."""
    with database.read() as session:
        return query(session, *args, **kwargs)
