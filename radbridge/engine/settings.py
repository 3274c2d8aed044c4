"""Node settings: where state lives and how this node is reached.

Read once, at start-up, from the command line with the environment as fallback; never
at import time, so tests and several nodes in one process do not share them by accident.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from radbridge.engine.audit_export.syslog import SyslogTarget
from radbridge.engine.db import sqlite_url

DEFAULT_DATA_DIR = "radbridge-data"


@dataclass(frozen=True)
class OidcSettings:
    """Where the API's OIDC bearer tokens come from (radbridge.interfaces.auth.oidc)."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    public_key: Path | None = None
    role_claim: str = "radbridge_role"

    @classmethod
    def resolve(cls, *, issuer: str | None = None, audience: str | None = None,
                jwks_url: str | None = None, public_key: str | None = None,
                role_claim: str | None = None, environ: Mapping[str, str] | None = None
                ) -> OidcSettings | None:
        """Command line over RADBRIDGE_OIDC_* variables; None (OIDC off) without an issuer."""
        env = os.environ if environ is None else environ
        issuer = issuer or env.get("RADBRIDGE_OIDC_ISSUER")
        if not issuer:
            return None
        key = public_key or env.get("RADBRIDGE_OIDC_PUBLIC_KEY")
        return cls(issuer=issuer, audience=audience or env.get("RADBRIDGE_OIDC_AUDIENCE", ""),
                   jwks_url=jwks_url or env.get("RADBRIDGE_OIDC_JWKS_URL"),
                   public_key=Path(key) if key else None,
                   role_claim=role_claim or env.get("RADBRIDGE_OIDC_ROLE_CLAIM")
                   or "radbridge_role")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    node_id: str = ""
    inline_limit: int = 64 * 1024
    """Content up to this many bytes is kept in the database; larger goes to blobs."""
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None
    """With both, the API answers HTTPS only."""
    oidc: OidcSettings | None = None
    audit_syslog: SyslogTarget | None = None
    """Where the audit ledger is forwarded as IHE ATNA syslog messages (None: nowhere)."""

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @classmethod
    def resolve(
        cls,
        *,
        data_dir: str | None = None,
        database_url: str | None = None,
        api_host: str | None = None,
        api_port: int | None = None,
        node_id: str | None = None,
        api_tls_cert: str | None = None,
        api_tls_key: str | None = None,
        oidc: OidcSettings | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Command-line values win over RADBRIDGE_* environment variables over defaults."""
        env = os.environ if environ is None else environ
        directory = Path(data_dir or env.get("RADBRIDGE_DATA_DIR") or DEFAULT_DATA_DIR).resolve()
        port = api_port if api_port is not None else int(env.get("RADBRIDGE_API_PORT", "8080"))
        host = api_host or env.get("RADBRIDGE_API_HOST", "127.0.0.1")
        tls_cert = api_tls_cert or env.get("RADBRIDGE_API_TLS_CERT")
        tls_key = api_tls_key or env.get("RADBRIDGE_API_TLS_KEY")
        return cls(
            data_dir=directory,
            database_url=database_url or env.get("RADBRIDGE_DATABASE_URL") or sqlite_url(directory),
            api_host=host,
            api_port=port,
            node_id=node_id or env.get("RADBRIDGE_NODE_ID") or f"{socket.gethostname()}:{port}",
            api_tls_cert=Path(tls_cert).resolve() if tls_cert else None,
            api_tls_key=Path(tls_key).resolve() if tls_key else None,
            oidc=oidc,
        )
