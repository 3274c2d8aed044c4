"""THE access policy of the HTTP API: for each route (method + path pattern) the least
role that may call it. One table, so that what a role may do is read in one place.

Patterns are written exactly as the route's path in its module's `ROUTES`
(`/api/messages/{message_id:int}`) and compiled the way Starlette compiles them, so a
request resolves to the row of the route that will answer it. A request that no row
names (a new route without a row, a typo, a method the route does not have) needs
admin: forgetting a row closes a route instead of opening it, and tests check that
every route in `api.ROUTES` has its row.

A route module adds its rows here, one line per route. The levels:
- PUBLIC: no token (liveness and readiness probes, the console's static files).
- VIEWER: channel statistics, metrics, QA aggregates: no PHI.
- ANALYST: studies, inference, reconciliation, reprocess and retry, and putting
  messages in (the http source, STOW-RS).
- PHI_READER (analyst or compliance): messages and their content.
- COMPLIANCE: the audit trail.
- ADMIN: everything, and whatever no row names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from starlette.routing import compile_path

from radbridge.interfaces.auth.identity import INCLUDES, RANK, Identity, Role


@dataclass(frozen=True)
class Access:
    """Who may call a route: any identity holding one of `roles`; nobody needs to if public."""

    roles: frozenset[Role]
    public: bool = False

    def allows(self, identity: Identity) -> bool:
        return self.public or bool(self.roles & identity.roles)

    def describe(self) -> str:
        if self.public:
            return "public"
        return " or ".join(role.value for role in reversed(RANK) if role in self.roles)


def least(*roles: Role) -> Access:
    """Access for these roles and every role that includes one of them."""
    return Access(frozenset(holder for holder, has in INCLUDES.items() if has & set(roles)))


PUBLIC = Access(frozenset(Role), public=True)
VIEWER = least(Role.VIEWER)
ANALYST = least(Role.ANALYST)
COMPLIANCE = least(Role.COMPLIANCE)
PHI_READER = least(Role.ANALYST, Role.COMPLIANCE)
ADMIN = least(Role.ADMIN)


@dataclass(frozen=True)
class Rule:
    """One row: `method` on paths matching `path` (a Starlette route path) needs `access`."""

    method: str
    path: str
    access: Access
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", compile_path(self.path)[0])

    def matches(self, method: str, path: str) -> bool:
        return self.method == method and self.regex.match(path) is not None


POLICY: tuple[Rule, ...] = (
    Rule("GET", "/health", PUBLIC),
    Rule("GET", "/ready", PUBLIC),
    Rule("GET", "/metrics", VIEWER),
    Rule("GET", "/api/me", VIEWER),
    Rule("GET", "/api/channels", VIEWER),
    Rule("GET", "/api/channels/{name}", VIEWER),
    Rule("POST", "/api/channels/{name}/messages", ANALYST),
    Rule("GET", "/api/messages", PHI_READER),
    Rule("GET", "/api/messages/{message_id:int}", PHI_READER),
    Rule("POST", "/api/messages/{message_id:int}/reprocess", ANALYST),
    Rule("POST", "/api/messages/{message_id:int}/retry", ANALYST),
    Rule("GET", "/api/audit", COMPLIANCE),
    Rule("GET", "/api/audit/export", COMPLIANCE),
    Rule("GET", "/api/audit/studies/{study_uid}", COMPLIANCE),
    Rule("GET", "/api/audit/forwarding", COMPLIANCE),
    Rule("GET", "/api/studies", ANALYST),
    Rule("GET", "/api/studies/{study_uid}", ANALYST),
    Rule("GET", "/api/inference", ANALYST),
    Rule("GET", "/api/inference/{run_id:int}", ANALYST),
    Rule("GET", "/api/qa/agreement", VIEWER),
    Rule("GET", "/api/qa/drift", VIEWER),
    Rule("GET", "/api/reconciliation", ANALYST),
    Rule("POST", "/api/reconciliation/{item_id:int}/link", ANALYST),
    Rule("POST", "/api/reconciliation/{item_id:int}/reject", ANALYST),
    Rule("POST", "/dicomweb/{channel}/studies", ANALYST),
    Rule("POST", "/dicomweb/{channel}/studies/{study_uid}", ANALYST),
    Rule("GET", "/console", PUBLIC),
    Rule("GET", "/console/", PUBLIC),
    Rule("GET", "/console/{path:path}", PUBLIC),
    Rule("GET", "/api/control/channels", VIEWER),
    Rule("POST", "/api/channels", ADMIN),
    Rule("DELETE", "/api/channels/{name}", ADMIN),
    Rule("POST", "/api/channels/{name}/pause", ADMIN),
    Rule("POST", "/api/channels/{name}/resume", ADMIN),
    Rule("POST", "/api/config/reload", ADMIN),
)


def access_for(method: str, path: str, policy: tuple[Rule, ...] = POLICY) -> Access:
    """The access a request needs: its row's, else admin. HEAD is checked as GET."""
    wanted = "GET" if method == "HEAD" else method
    for rule in policy:
        if rule.matches(wanted, path):
            return rule.access
    return ADMIN


def rule_for(method: str, route_path: str, policy: tuple[Rule, ...] = POLICY) -> Rule | None:
    """The row written for exactly this route path and method (None: there is none)."""
    return next((r for r in policy if r.method == method and r.path == route_path), None)
