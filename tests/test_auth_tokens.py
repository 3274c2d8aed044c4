"""API tokens on both engines: made, checked, expired, revoked, listed without secrets;
`radbridge token create|list|revoke`; the first admin token `radbridge run` writes; the
API security settings."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from radbridge.engine import audit
from radbridge.engine.db import Database
from radbridge.engine.models import ApiToken, utcnow
from radbridge.engine.settings import OidcSettings, Settings
from radbridge.interfaces.auth.bootstrap import (
    ADMIN_TOKEN_FILE,
    BOOTSTRAP_NAME,
    check_api_security,
    ensure_admin_token,
)
from radbridge.interfaces.auth.errors import AuthSetupError, TokenError, Unauthenticated
from radbridge.interfaces.auth.identity import Identity, Role
from radbridge.interfaces.auth.tokens import (
    NewToken,
    TokenVerifier,
    create_token,
    list_tokens,
    looks_like_token,
    revoke_token,
)
from radbridge.interfaces.cli import main
from radbridge.interfaces.cli.messages_cmd import cli_actor


def _create(database: Database, name: str = "ci", role: Role = Role.ANALYST,
            expires_in: timedelta | None = None) -> NewToken:
    with database.write() as session:
        return create_token(session, name=name, role=role, created_by="cli:test",
                            expires_at=None if expires_in is None else utcnow() + expires_in)


def _events(database: Database, action: str) -> list[dict[str, object]]:
    with database.read() as session:
        return [audit.event_as_dict(e) for e in audit.query(session, audit.AuditQuery(
            action=action))]


# --- tokens ---------------------------------------------------------------------------


def test_a_new_token_is_kept_only_as_its_digest(database: Database) -> None:
    token = _create(database)
    assert looks_like_token(token.secret) and len(token.secret) == 4 + 43
    with database.read() as session:
        row = session.execute(select(ApiToken)).scalar_one()
        stored = [str(getattr(row, c.key)) for c in ApiToken.__table__.columns]
    assert row.secret_sha256 == hashlib.sha256(token.secret.encode()).hexdigest()
    assert not any(token.secret[4:20] in value for value in stored)
    [created] = _events(database, "token.created")
    assert created["actor"] == "cli:test"
    assert created["detail"] == {"token_id": token.id, "name": "ci", "role": "analyst",
                                 "expires_at": None}
    assert token.secret not in json.dumps(created)


def test_the_verifier_names_the_token_and_its_role(database: Database) -> None:
    token = _create(database, "ris-analyst", Role.ANALYST)
    identity = TokenVerifier(database).verify(token.secret)
    assert identity == Identity(kind="token", name="ris-analyst",
                                roles=frozenset({Role.ANALYST}))
    assert (identity.actor, identity.role) == ("token:ris-analyst", "analyst")


@pytest.mark.parametrize("bearer, reason", [
    ("rbt_" + "A" * 43, "unknown API token"),
    ("rbt_" + "A" * 42, "malformed API token"),
    ("rbt_" + "A" * 42 + "*", "malformed API token"),
    ("", "malformed API token"),
])
def test_unknown_and_malformed_tokens_are_refused(database: Database, bearer: str,
                                                  reason: str) -> None:
    _create(database)
    with pytest.raises(Unauthenticated) as refused:
        TokenVerifier(database).verify(bearer)
    assert refused.value.reason == reason


def test_a_forged_token_one_character_off_is_refused(database: Database) -> None:
    token = _create(database)
    last = token.secret[-1]
    forged = token.secret[:-1] + ("B" if last != "B" else "C")
    with pytest.raises(Unauthenticated, match="unknown API token"):
        TokenVerifier(database).verify(forged)


def test_an_expired_token_is_refused_from_its_expiry_on(database: Database) -> None:
    token = _create(database, expires_in=timedelta(days=90))
    assert TokenVerifier(database).verify(token.secret).name == "ci"
    later = TokenVerifier(database, clock=lambda: utcnow() + timedelta(days=90, seconds=1))
    with pytest.raises(Unauthenticated, match=rf"expired token {token.id} \(ci\)"):
        later.verify(token.secret)


def test_a_revoked_token_is_refused_at_once_and_revoking_twice_says_so(
        database: Database) -> None:
    token = _create(database)
    verifier = TokenVerifier(database)
    verifier.verify(token.secret)
    with database.write() as session:
        assert revoke_token(session, token.id, revoked_by="cli:test") is True
    with pytest.raises(Unauthenticated, match=rf"revoked token {token.id} \(ci\)"):
        verifier.verify(token.secret)
    with database.write() as session:
        assert revoke_token(session, token.id, revoked_by="cli:test") is False
    with pytest.raises(TokenError, match="no token 999"), database.write() as session:
        revoke_token(session, 999, revoked_by="cli:test")
    [revoked] = _events(database, "token.revoked")
    assert revoked["detail"] == {"token_id": token.id, "name": "ci", "role": "analyst"}


@pytest.mark.parametrize("name, role, error", [
    ("ci", "analyst", "already exists"),
    ("has space", "analyst", "expected 1 to 64 letters"),
    ("x" * 65, "analyst", "expected 1 to 64 letters"),
    ("-leading", "analyst", "expected 1 to 64 letters"),
    ("ok", "superuser", "expected one of viewer, analyst, compliance, admin"),
])
def test_names_are_unique_and_plain_and_roles_exist(database: Database, name: str, role: str,
                                                    error: str) -> None:
    _create(database, "ci")
    with pytest.raises(TokenError, match=error), database.write() as session:
        create_token(session, name=name, role=role, created_by="cli:test")


def test_last_use_is_written_at_most_once_per_interval(database: Database) -> None:
    token = _create(database)
    verifier = TokenVerifier(database, touch_every=3600)

    def last_used() -> object:
        with database.read() as session:
            return session.execute(select(ApiToken.last_used_at)).scalar_one()

    assert last_used() is None
    verifier.verify(token.secret)
    first = last_used()
    assert first is not None
    verifier.verify(token.secret)
    assert last_used() == first


def test_the_list_shows_states_and_never_a_secret_or_digest(database: Database) -> None:
    kept = _create(database, "kept")
    gone = _create(database, "gone")
    _create(database, "old", expires_in=timedelta(seconds=-1))
    with database.write() as session:
        revoke_token(session, gone.id, revoked_by="cli:test")
    with database.read() as session:
        listed = list_tokens(session)
    assert [(t["name"], t["state"]) for t in listed] == [
        ("kept", "active"), ("gone", "revoked"), ("old", "expired")]
    text = json.dumps(listed)
    assert kept.secret not in text and "sha256" not in text
    assert hashlib.sha256(kept.secret.encode()).hexdigest() not in text


# --- the CLI --------------------------------------------------------------------------


def _cli(database_url: str, tmp_path: Path, *args: str) -> list[str]:
    return ["token", *args, "--database-url", database_url, "--data-dir", str(tmp_path)]


def test_token_create_list_revoke_through_the_cli(
        database: Database, database_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(database_url, tmp_path, "create", "--role", "compliance", "--name",
                     "audit-team", "--expires", "90d", "--json")) == 0
    made = json.loads(capsys.readouterr().out)
    assert (made["name"], made["role"]) == ("audit-team", "compliance")
    assert TokenVerifier(database).verify(made["token"]).actor == "token:audit-team"

    assert main(_cli(database_url, tmp_path, "create", "--role", "viewer")) == 0
    out = capsys.readouterr()
    printed = out.out.splitlines()
    assert printed[0].startswith("token 2 (viewer-") and "no expiry" in printed[0]
    assert looks_like_token(printed[1]) and "shown only now" in out.err

    assert main(_cli(database_url, tmp_path, "list", "--json")) == 0
    listed = capsys.readouterr().out
    assert [(t["name"], t["state"]) for t in json.loads(listed)["tokens"]] == [
        ("audit-team", "active"), (printed[0].split()[2].strip("(,"), "active")]
    assert made["token"] not in listed and printed[1] not in listed

    assert main(_cli(database_url, tmp_path, "revoke", str(made["id"]))) == 0
    assert capsys.readouterr().out == f"token {made['id']} revoked\n"
    with pytest.raises(Unauthenticated):
        TokenVerifier(database).verify(made["token"])
    assert [e["actor"] for e in _events(database, "token.revoked")] == [cli_actor()]


@pytest.mark.parametrize("args, code, error", [
    (("revoke", "42"), 1, "no token 42"),
    (("create", "--role", "viewer", "--expires", "soon"), 2, "--expires: expected a duration"),
    (("create", "--role", "viewer", "--expires", "0s"), 2, "expected a positive duration"),
    (("create", "--role", "viewer", "--name", "bad name"), 1, "expected 1 to 64 letters"),
])
def test_token_cli_errors(database_url: str, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                          code: int, error: str) -> None:
    assert main(_cli(database_url, tmp_path, *args)) == code
    assert error in capsys.readouterr().err


# --- the first admin token ------------------------------------------------------------


def test_the_first_start_writes_an_admin_token_readable_by_its_owner_only(
        database: Database, tmp_path: Path) -> None:
    written = ensure_admin_token(database, tmp_path / "data", actor="system", chain="n/api")
    path = tmp_path / "data" / ADMIN_TOKEN_FILE
    assert written == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    identity = TokenVerifier(database).verify(secret)
    assert (identity.name, identity.roles) == (BOOTSTRAP_NAME, frozenset({Role.ADMIN}))
    assert [p.name for p in path.parent.iterdir()] == [ADMIN_TOKEN_FILE]

    assert ensure_admin_token(database, tmp_path / "data", actor="system",
                              chain="n/api") is None
    assert path.read_text().strip() == secret


def test_no_admin_token_is_written_for_a_store_that_has_tokens(database: Database,
                                                               tmp_path: Path) -> None:
    _create(database, "made-by-hand", Role.VIEWER)
    assert ensure_admin_token(database, tmp_path, actor="system", chain="n/api") is None
    assert not (tmp_path / ADMIN_TOKEN_FILE).exists()


# --- settings -------------------------------------------------------------------------


def test_tls_and_oidc_settings_come_from_the_command_line_over_the_environment(
        tmp_path: Path) -> None:
    env = {"RADBRIDGE_API_TLS_CERT": "/env/cert.pem", "RADBRIDGE_API_TLS_KEY": "/env/key.pem",
           "RADBRIDGE_OIDC_ISSUER": "https://idp.example", "RADBRIDGE_OIDC_AUDIENCE": "rb",
           "RADBRIDGE_OIDC_JWKS_URL": "https://idp.example/jwks"}
    oidc = OidcSettings.resolve(audience="radbridge-api", environ=env)
    settings = Settings.resolve(data_dir=str(tmp_path), api_tls_cert="/cli/cert.pem",
                                oidc=oidc, environ=env)
    assert (settings.api_tls_cert, settings.api_tls_key) == (Path("/cli/cert.pem"),
                                                             Path("/env/key.pem"))
    assert settings.oidc == OidcSettings(issuer="https://idp.example", audience="radbridge-api",
                                         jwks_url="https://idp.example/jwks")
    assert OidcSettings.resolve(environ={}) is None
    assert Settings.resolve(data_dir=str(tmp_path), environ={}).api_tls_cert is None


@pytest.mark.parametrize("settings, error", [
    ({"api_tls_cert": "/nowhere/cert.pem"}, "needs both --api-tls-cert and --api-tls-key"),
    ({"oidc": OidcSettings(issuer="https://idp", audience="")}, "issuer and an audience"),
    ({"oidc": OidcSettings(issuer="https://idp", audience="rb")}, "exactly one of"),
    ({"oidc": OidcSettings(issuer="https://idp", audience="rb",
                           public_key=Path("/nowhere.pem"))}, "/nowhere.pem"),
])
def test_unusable_api_security_settings_stop_the_start(tmp_path: Path, settings: dict[str, object],
                                                       error: str) -> None:
    with pytest.raises(AuthSetupError, match=error):
        check_api_security(Settings.resolve(data_dir=str(tmp_path), environ={},
                                            **settings))  # type: ignore[arg-type]


def test_radbridge_run_refuses_a_missing_certificate_before_starting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--data-dir", str(tmp_path), "--api-tls-cert", str(tmp_path / "c.pem"),
                 "--api-tls-key", str(tmp_path / "k.pem")])
    assert code == 1
    assert "cannot load" in capsys.readouterr().err
    assert not (tmp_path / ADMIN_TOKEN_FILE).exists()
