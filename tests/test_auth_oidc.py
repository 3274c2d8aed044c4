"""OIDC bearer tokens: RSA keys made here, their JWKS served by a real HTTP server on
127.0.0.1, tokens signed with PyJWT. Valid ones get the role from the configured claim;
expired, wrong issuer or audience, wrong key, alg none, HMAC with the public key: 401."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.testclient import TestClient

from radbridge.engine import audit
from radbridge.engine.db import Database
from radbridge.interfaces.api import create_app
from radbridge.interfaces.auth.authenticator import Authenticator
from radbridge.interfaces.auth.errors import Unauthenticated, VerifierUnavailable
from radbridge.interfaces.auth.identity import Role
from radbridge.interfaces.auth.oidc import JwksKeys, OidcConfig, OidcVerifier
from radbridge.interfaces.auth.tokens import TokenVerifier
from tests.test_auth_api import PATIENT, authed_context, bearer, seed

ISSUER = "https://idp.example.org/realms/radiology"
AUDIENCE = "radbridge-api"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY, OTHER_KEY = _rsa(), _rsa()


class JwksServer:
    """Serves a JWKS document on 127.0.0.1 and counts the fetches; `down` answers 503."""

    def __init__(self, keys: dict[str, Any]) -> None:
        self.document = {"keys": [_jwk(key, kid) for kid, key in keys.items()]}
        self.fetches = 0
        self.down = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/jwks"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps(outer.document).encode()
                self.send_response(503 if outer.down else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _jwk(key: Any, kid: str) -> dict[str, Any]:
    document = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()) if isinstance(
        key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**document, "kid": kid, "use": "sig"}


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1234", "iat": now, "exp": now + 300,
              "radbridge_role": "analyst"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims: dict[str, Any], key: Any = KEY, kid: str = "k1",
          algorithm: str = "RS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer({"k1": KEY, "ec1": ec.generate_private_key(ec.SECP256R1())})
    yield server
    server.close()


def _verifier(jwks: JwksServer, role_claim: str = "radbridge_role") -> OidcVerifier:
    return OidcVerifier(OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url,
                                   role_claim=role_claim))


# --- the verifier ---------------------------------------------------------------------


def test_a_valid_token_names_its_subject_and_the_role_from_the_claim(jwks: JwksServer) -> None:
    identity = _verifier(jwks).verify(_sign(_claims()))
    assert (identity.actor, identity.roles) == ("oidc:u-1234", frozenset({Role.ANALYST}))


@pytest.mark.parametrize("role_claim, claims, roles", [
    ("roles", {"roles": ["offline_access", "compliance"]}, {Role.COMPLIANCE}),
    ("roles", {"roles": ["viewer", "admin"]}, {Role.VIEWER, Role.ADMIN}),
    ("realm_access.roles", {"realm_access": {"roles": ["analyst"]}}, {Role.ANALYST}),
    ("radbridge_role", {"radbridge_role": "superuser"}, set()),
    ("radbridge_role", {"radbridge_role": None}, set()),
    ("roles", {"roles": "admin"}, {Role.ADMIN}),
])
def test_roles_from_a_string_a_list_or_a_nested_claim(jwks: JwksServer, role_claim: str,
                                                     claims: dict[str, Any],
                                                     roles: set[Role]) -> None:
    identity = _verifier(jwks, role_claim).verify(_sign(_claims(**claims)))
    assert identity.roles == roles


def _none_token() -> str:
    return jwt.encode(_claims(radbridge_role="admin"), None, algorithm="none")


def _hmac_with_public_key() -> str:
    public_pem = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(_claims()).encode())
    signature = hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest()
    return (header + b"." + payload + b"." + jwt.utils.base64url_encode(signature)).decode()


@pytest.mark.parametrize("make, reason", [
    (lambda: _sign(_claims(exp=int(time.time()) - 3600)), "ExpiredSignatureError"),
    (lambda: _sign(_claims(iss="https://evil.example")), "InvalidIssuerError"),
    (lambda: _sign(_claims(aud="another-api")), "InvalidAudienceError"),
    (lambda: _sign(_claims(), key=OTHER_KEY), "InvalidSignatureError"),
    (lambda: _sign(_claims(), kid="unknown-kid"), "no key 'unknown-kid'"),
    (lambda: _sign(_claims(sub=None)), "MissingRequiredClaimError"),
    (lambda: _sign(_claims(exp=None)), "MissingRequiredClaimError"),
    (lambda: _sign(_claims(sub="x" * 121)), "subject: expected 1 to 120"),
    (_none_token, "algorithm 'none' not accepted"),
    (_hmac_with_public_key, "algorithm 'HS256' not accepted"),
    (lambda: "not.a.jwt", "malformed JWT"),
])
def test_bad_tokens_are_refused_with_the_reason_for_the_log(jwks: JwksServer, make: Any,
                                                            reason: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        _verifier(jwks).verify(make())
    assert reason in refused.value.reason


def test_an_ec_key_of_the_set_verifies_its_own_tokens_only(jwks: JwksServer) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks.document["keys"].append(_jwk(ec_key, "ec2"))
    verifier = _verifier(jwks)
    assert verifier.verify(_sign(_claims(), ec_key, "ec2", "ES256")).name == "u-1234"
    with pytest.raises(Unauthenticated, match="algorithm 'RS256' not accepted"):
        verifier.verify(_sign(_claims(), KEY, "ec2"))


def test_the_key_set_is_fetched_once_and_again_for_a_new_key_id(jwks: JwksServer) -> None:
    keys = JwksKeys(jwks.url, refresh=0.0)
    verifier = OidcVerifier(OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url),
                            keys)
    for _ in range(3):
        verifier.verify(_sign(_claims()))
    assert jwks.fetches == 1
    rotated = _rsa()
    jwks.document["keys"].append(_jwk(rotated, "k2"))
    assert verifier.verify(_sign(_claims(), rotated, "k2")).name == "u-1234"
    assert jwks.fetches == 2


def test_unknown_key_ids_do_not_make_the_node_hammer_the_provider(jwks: JwksServer) -> None:
    verifier = _verifier(jwks)
    verifier.verify(_sign(_claims()))
    for n in range(5):
        with pytest.raises(Unauthenticated):
            verifier.verify(_sign(_claims(), kid=f"made-up-{n}"))
    assert jwks.fetches == 1


def test_a_provider_that_is_down_is_unavailable_not_unauthenticated(jwks: JwksServer) -> None:
    jwks.down = True
    with pytest.raises(VerifierUnavailable):
        _verifier(jwks).verify(_sign(_claims()))


def test_a_pem_public_key_file_instead_of_a_key_set(tmp_path: Path) -> None:
    path = tmp_path / "idp.pem"
    path.write_bytes(KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    verifier = OidcVerifier(OidcConfig(issuer=ISSUER, audience=AUDIENCE, public_key=path))
    assert verifier.verify(_sign(_claims(), kid="any")).roles == {Role.ANALYST}
    with pytest.raises(Unauthenticated, match="InvalidSignatureError"):
        verifier.verify(_sign(_claims(), OTHER_KEY))


# --- through the API ------------------------------------------------------------------


@pytest.fixture
def client(database: Database, tmp_path: Path, jwks: JwksServer) -> Iterator[TestClient]:
    seed(database)
    context = authed_context(database, tmp_path)
    context.auth = Authenticator(TokenVerifier(database), _verifier(jwks))
    with TestClient(create_app(context)) as test_client:
        yield test_client


def test_the_api_takes_oidc_tokens_and_audits_the_subject(client: TestClient,
                                                          database: Database) -> None:
    answer = client.get("/api/messages", headers=bearer(_sign(_claims())))
    assert answer.status_code == 200 and answer.json()["messages"][0]["patient_id"] == PATIENT
    with database.read() as session:
        [event] = audit.query(session, audit.AuditQuery(action="message.listed"))
    assert event.actor == "oidc:u-1234"


@pytest.mark.parametrize("token, status", [
    (lambda: _sign(_claims(radbridge_role="viewer")), 403),
    (lambda: _sign(_claims(radbridge_role="nurse")), 403),
    (lambda: _sign(_claims(exp=int(time.time()) - 3600)), 401),
    (lambda: _sign(_claims(aud="another-api")), 401),
    (_none_token, 401),
])
def test_the_api_refuses_what_the_verifier_refuses(client: TestClient, token: Any,
                                                   status: int) -> None:
    answer = client.get("/api/messages", headers=bearer(token()))
    assert answer.status_code == status
    assert PATIENT not in answer.text


def test_the_api_answers_503_while_the_key_set_cannot_be_fetched(client: TestClient,
                                                                 jwks: JwksServer) -> None:
    jwks.down = True
    answer = client.get("/api/messages", headers=bearer(_sign(_claims())))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
