"""Who is calling: the roles and the identity the auth middleware puts on each request.

The roles are a partial order, not a ladder: analyst and compliance both include viewer
and admin includes everything, but neither analyst nor compliance includes the other
(an analyst reprocesses messages but does not search the audit trail; compliance reads
the audit trail and messages but changes nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    VIEWER = "viewer"
    ANALYST = "analyst"
    COMPLIANCE = "compliance"
    ADMIN = "admin"


INCLUDES: dict[Role, frozenset[Role]] = {
    Role.VIEWER: frozenset({Role.VIEWER}),
    Role.ANALYST: frozenset({Role.ANALYST, Role.VIEWER}),
    Role.COMPLIANCE: frozenset({Role.COMPLIANCE, Role.VIEWER}),
    Role.ADMIN: frozenset(Role),
}
"""Each role and the roles whose rights it has too."""

RANK = (Role.ADMIN, Role.COMPLIANCE, Role.ANALYST, Role.VIEWER)
"""The order roles are named in when an identity has several."""


def known_roles(values: Iterable[object]) -> frozenset[Role]:
    """The values that name a role; anything else (a role of another application) is left out."""
    names = {str(value) for value in values if isinstance(value, str)}
    return frozenset(role for role in Role if role.value in names)


@dataclass(frozen=True)
class Identity:
    """An authenticated caller. `name` is the token's name or the OIDC subject."""

    kind: Literal["token", "oidc"]
    name: str
    roles: frozenset[Role]
    """Usually one; an OIDC claim may list several; empty when none is a Radbridge role."""

    @property
    def actor(self) -> str:
        """How audit events name this caller: token:<name> or oidc:<subject>."""
        return f"{self.kind}:{self.name}"

    @property
    def role(self) -> str:
        """The roles for display, strongest first ("admin", "analyst+compliance"; "" if none)."""
        return "+".join(role.value for role in RANK if role in self.roles)
