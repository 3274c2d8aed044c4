"""What `radbridge run` sets up for access control: the authenticator from the node's
settings, and on the first start of a store without any token, an admin token in
`<data dir>/admin-token` (mode 0600) so that someone can call the API at all.

The file is written inside the transaction that adds the token, after the insert: when
two nodes on one PostgreSQL store start together, the second one's insert fails on the
name and it writes no file; when the file cannot be written, no token is committed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from radbridge.engine.config import TlsConfig
from radbridge.engine.db import Database
from radbridge.engine.settings import OidcSettings, Settings
from radbridge.interfaces.auth.authenticator import Authenticator
from radbridge.interfaces.auth.errors import AuthSetupError, TokenError
from radbridge.interfaces.auth.identity import Role
from radbridge.interfaces.auth.oidc import OidcConfig, OidcVerifier
from radbridge.interfaces.auth.tokens import TokenVerifier, create_token, has_tokens
from radbridge.interfaces.tls import server_context

log = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin-token"
BOOTSTRAP_NAME = "bootstrap-admin"


def check_api_security(settings: Settings) -> None:
    """Before anything starts: the API's certificate and key load, the OIDC settings fit
    together and its PEM key reads (AuthSetupError or AdapterSetupError otherwise)."""
    cert, key = settings.api_tls_cert, settings.api_tls_key
    if (cert is None) != (key is None):
        raise AuthSetupError("API TLS needs both --api-tls-cert and --api-tls-key")
    if cert is not None and key is not None:
        server_context(TlsConfig(cert=str(cert), key=str(key)), Path)
    if settings.oidc is not None:
        OidcVerifier(_oidc_config(settings.oidc))


def prepare_auth(settings: Settings, database: Database, *, chain: str) -> Authenticator:
    """What `radbridge run` serves the API with: the first admin token written if the
    store has none, and the authenticator."""
    ensure_admin_token(database, settings.data_dir, actor="system", chain=chain)
    return authenticator_for(settings, database)


def authenticator_for(settings: Settings, database: Database) -> Authenticator:
    """API tokens from `database`; OIDC too when the settings name an issuer."""
    oidc = None if settings.oidc is None else OidcVerifier(_oidc_config(settings.oidc))
    return Authenticator(TokenVerifier(database), oidc)


def _oidc_config(oidc: OidcSettings) -> OidcConfig:
    return OidcConfig(issuer=oidc.issuer, audience=oidc.audience, jwks_url=oidc.jwks_url,
                      public_key=oidc.public_key, role_claim=oidc.role_claim)


def ensure_admin_token(database: Database, data_dir: Path, *, actor: str,
                       chain: str) -> Path | None:
    """The path of the admin token written now, or None when the store already has tokens."""
    path = data_dir / ADMIN_TOKEN_FILE
    try:
        with database.write() as session:
            if has_tokens(session):
                return None
            token = create_token(session, name=BOOTSTRAP_NAME, role=Role.ADMIN,
                                 created_by=actor, chain=chain)
            write_secret(path, token.secret)
    except (TokenError, IntegrityError):
        log.info("another node made the first admin token; %s not written", path)
        return None
    log.info("first start: admin token %d (%s) written to %s", token.id, BOOTSTRAP_NAME, path)
    return path


def write_secret(path: Path, secret: str) -> None:
    """Replace `path` with `secret`, readable by this user only (never briefly by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(secret + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as exc:
        raise AuthSetupError(f"cannot write the admin token to {path}: {exc.strerror}") from exc
