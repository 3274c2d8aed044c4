"""The auth middleware: every request passes the policy before it reaches a route.

Public routes pass as they are. Any other request needs `Authorization: Bearer
<token>`: without one, or with one that is malformed, unknown, revoked, expired or
forged, the answer is 401 with a `WWW-Authenticate` challenge (RFC 6750) and a reason
that never says which of these it was; the node's log says (naming the token's id and
name, never its secret). A valid token whose roles the route's row does not allow gets
403. Otherwise the identity is put on the request (`request.state.identity`) for
`actor_of` and the route.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from radbridge.errors import StoreError, StoreUnavailable
from radbridge.interfaces.auth.authenticator import Authenticator
from radbridge.interfaces.auth.errors import Unauthenticated, VerifierUnavailable
from radbridge.interfaces.auth.identity import Identity
from radbridge.interfaces.auth.policy import POLICY, Access, Rule, access_for

log = logging.getLogger(__name__)

REALM = 'Bearer realm="radbridge"'
MAX_BEARER = 16 * 1024
RETRY_AFTER_SECONDS = 5
POLICY_VIOLATION = 1008
"""WebSocket close code for a refused handshake."""


class AuthMiddleware:
    """Pure ASGI: authenticate, authorise per `policy`, then call the app."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator,
                 policy: tuple[Rule, ...] = POLICY) -> None:
        self.app = app
        self.authenticator = authenticator
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        path = route_path(scope)
        access = access_for(method, path, self.policy)
        if access.public:
            await self.app(scope, receive, send)
            return
        outcome = await self._check(scope, method, path, access)
        if isinstance(outcome, Identity):
            scope.setdefault("state", {})["identity"] = outcome
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
        else:
            await outcome(scope, receive, send)

    async def _check(self, scope: Scope, method: str, path: str, access: Access
                     ) -> Identity | JSONResponse:
        """The caller's identity, or the answer that refuses the request."""
        where = f"{method} {path} from {_client(scope)}"
        try:
            identity = await run_in_threadpool(self.authenticator.authenticate,
                                               bearer_of(scope))
        except Unauthenticated as exc:
            log.warning("401 %s: %s", where, exc.reason)
            return _unauthenticated(exc)
        except (VerifierUnavailable, StoreUnavailable) as exc:
            log.warning("503 %s: cannot check the credentials: %s", where, exc)
            return _answer(503, "the credentials cannot be checked now; try again",
                           {"Retry-After": str(RETRY_AFTER_SECONDS)})
        except StoreError as exc:
            log.error("500 %s: the token store failed: %s", where, exc)
            return _answer(500, "the store failed; see the node's log")
        if not access.allows(identity):
            log.warning("403 %s: %s (%s) needs %s", where, identity.actor,
                        identity.role or "no role", access.describe())
            return _answer(403, f"role {identity.role or 'none'} may not {method} this "
                                f"path; it needs {access.describe()}",
                           {"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'})
        return identity


def bearer_of(scope: Scope) -> str:
    """The bearer token of the request's one Authorization header (Unauthenticated if none)."""
    values = [value for name, value in scope.get("headers", ()) if name == b"authorization"]
    if not values:
        raise Unauthenticated("no Authorization header", missing=True)
    if len(values) > 1:
        raise Unauthenticated("more than one Authorization header")
    header: bytes = values[0]
    scheme, _, token = header.decode("latin-1").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(f"no bearer token (Authorization scheme {scheme[:20]!r})",
                              missing=True)
    if len(token) > MAX_BEARER or " " in token:
        raise Unauthenticated("malformed bearer token")
    return token


def route_path(scope: Scope) -> str:
    """The path the router matches: the request path below the app's root path."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root):len(root) + 1] in ("", "/"):
        return path[len(root):] or "/"
    return path


def _unauthenticated(exc: Unauthenticated) -> JSONResponse:
    if exc.missing:
        return _answer(401, "this endpoint needs an 'Authorization: Bearer <token>' header",
                       {"WWW-Authenticate": REALM})
    return _answer(401, "the bearer token is not valid (unknown, revoked, expired or "
                        "malformed)", {"WWW-Authenticate": f'{REALM}, error="invalid_token"'})


def _answer(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
