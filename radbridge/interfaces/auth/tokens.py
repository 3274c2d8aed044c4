"""API tokens: made by `radbridge token create`, checked on every API request.

A token is `rbt_` and 43 base64url characters (32 random bytes). The store keeps only
the SHA-256 of the whole token: the secret has full entropy, so a salt or a slow hash
would add nothing, and a lookup by digest needs no scan. The secret is printed once,
when it is made, and never logged (logs name the token's id and name).

Making and revoking a token is an audit event in the same transaction, naming who did it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radbridge.engine import audit
from radbridge.engine.db import Database
from radbridge.engine.models import ApiToken, utcnow
from radbridge.engine.queries import iso
from radbridge.errors import StoreError
from radbridge.interfaces.auth.errors import TokenError, Unauthenticated
from radbridge.interfaces.auth.identity import Identity, Role, known_roles

log = logging.getLogger(__name__)

PREFIX = "rbt_"
_SHAPE = re.compile(r"rbt_[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
TOUCH_EVERY = 60.0
"""Seconds between writes of a token's `last_used_at` (a write per request would queue
every API read behind the engine's writers on SQLite)."""
_DECOY = hashlib.sha256(b"no such token").hexdigest()


def looks_like_token(bearer: str) -> bool:
    """Whether `bearer` has the shape of an API token (it may still be unknown or forged)."""
    return _SHAPE.fullmatch(bearer) is not None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise TokenError(f"token name {name[:80]!r}: expected 1 to 64 letters, digits or "
                         "._@- (starting with a letter or digit)")
    return name


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise TokenError(f"role {role[:40]!r}: expected one of "
                         f"{', '.join(r.value for r in Role)}") from None


@dataclass(frozen=True)
class NewToken:
    """A token just made: `secret` is the token itself, shown this once."""

    id: int
    name: str
    role: Role
    expires_at: datetime | None
    secret: str


def create_token(session: Session, *, name: str, role: Role | str, created_by: str,
                 expires_at: datetime | None = None, chain: str = "cli") -> NewToken:
    """Add a token in the caller's transaction (flushed, so a taken name raises here)."""
    name, role = check_name(name), check_role(str(role))
    if session.execute(select(exists().where(ApiToken.name == name))).scalar():
        raise TokenError(f"a token named {name!r} already exists")
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, role=role.value, secret_sha256=digest(secret),
                   created_by=created_by[:128], expires_at=expires_at)
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # another writer took the name since the check above
        raise TokenError(f"a token named {name!r} already exists") from exc
    audit.append(session, [audit.AuditRecord(
        action="token.created", actor=created_by,
        detail={"token_id": row.id, "name": name, "role": role.value,
                "expires_at": iso(expires_at)})], chain)
    return NewToken(id=row.id, name=name, role=role, expires_at=expires_at, secret=secret)


def revoke_token(session: Session, token_id: int, *, revoked_by: str,
                 chain: str = "cli") -> bool:
    """Revoke at once (the next request with it is refused); False if it already was."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise TokenError(f"no token {token_id}")
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    audit.append(session, [audit.AuditRecord(
        action="token.revoked", actor=revoked_by,
        detail={"token_id": row.id, "name": row.name, "role": row.role})], chain)
    return True


def has_tokens(session: Session) -> bool:
    return bool(session.execute(select(exists().select_from(ApiToken))).scalar())


def list_tokens(session: Session) -> list[dict[str, Any]]:
    """Every token, oldest first, without secrets or digests."""
    now = utcnow()
    return [token_view(row, now) for row in
            session.execute(select(ApiToken).order_by(ApiToken.id)).scalars()]


def token_view(row: ApiToken, now: datetime) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "role": row.role, "state": _state(row, now),
            "created_at": iso(row.created_at), "created_by": row.created_by,
            "expires_at": iso(row.expires_at), "revoked_at": iso(row.revoked_at),
            "last_used_at": iso(row.last_used_at)}


def _state(row: ApiToken, now: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


class TokenVerifier:
    """Checks API tokens against the store on every request, so a revocation holds at once."""

    def __init__(self, database: Database, *, touch_every: float = TOUCH_EVERY,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.database = database
        self.touch_every = touch_every
        self.clock = clock
        self._touched: dict[int, float] = {}
        self._lock = threading.Lock()

    def verify(self, bearer: str) -> Identity:
        """The token's identity; Unauthenticated (with the reason, for the log) otherwise."""
        if not looks_like_token(bearer):
            raise Unauthenticated("malformed API token")
        wanted = digest(bearer)
        with self.database.read() as session:
            row = session.execute(
                select(ApiToken).where(ApiToken.secret_sha256 == wanted)).scalar_one_or_none()
        stored = row.secret_sha256 if row is not None else _DECOY
        if row is None or not hmac.compare_digest(stored, wanted):
            raise Unauthenticated("unknown API token")
        where = f"token {row.id} ({row.name})"
        if row.revoked_at is not None:
            raise Unauthenticated(f"revoked {where}")
        if row.expires_at is not None and row.expires_at <= self.clock():
            raise Unauthenticated(f"expired {where}")
        self._touch(row.id)
        return Identity(kind="token", name=row.name, roles=known_roles([row.role]))

    def _touch(self, token_id: int) -> None:
        """Record the use, at most once per `touch_every` seconds per token."""
        now = time.monotonic()
        with self._lock:
            last = self._touched.get(token_id)
            if last is not None and now - last < self.touch_every:
                return
            self._touched[token_id] = now
        try:
            with self.database.write(redoable=True) as session:
                session.execute(update(ApiToken).where(ApiToken.id == token_id)
                                .values(last_used_at=self.clock()))
        except StoreError as exc:  # the request is still good; the time is only a hint
            log.warning("could not record the use of token %d: %s", token_id, exc)
