"""OIDC bearer tokens: JWTs from the site's identity provider, checked with PyJWT.

A token is accepted when its signature verifies with the provider's key (from its JWKS
URL, fetched with httpx and cached, or from a PEM file), its issuer and audience are the
configured ones, it has not expired (30 s leeway for clocks) and it names a subject. The
algorithm must suit the key: asymmetric only, so neither `none` nor an HMAC keyed with
the public key passes. Its roles come from one claim (`radbridge_role` by default; a
dotted path such as `realm_access.roles` reaches into an object); a string or a list of
strings, of which the Radbridge role names count. A valid token without one is
authenticated but may call only public routes (403 elsewhere).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from radbridge.interfaces.auth.errors import AuthSetupError, Unauthenticated, VerifierUnavailable
from radbridge.interfaces.auth.identity import Identity, known_roles

log = logging.getLogger(__name__)

LEEWAY_SECONDS = 30.0
JWKS_TTL_SECONDS = 300.0
JWKS_REFRESH_SECONDS = 10.0
"""Least time between fetches forced by an unknown key id (a key rotation), so that
tokens with made-up key ids cannot make the node hammer the provider."""
JWKS_TIMEOUT_SECONDS = 5.0
MAX_SUBJECT = 120
"""The subject goes into audit events as oidc:<subject> (128 characters at most)."""

_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC = ("ES256", "ES384", "ES512")
_EDDSA = ("EdDSA",)
ACCEPTED = (*_RSA, *_EC, *_EDDSA)
"""Asymmetric algorithms only: never `none`, never HMAC (whose key would be the public key)."""

PublicKey = (rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
             | ed448.Ed448PublicKey)


@dataclass(frozen=True)
class OidcConfig:
    """What an OIDC token is checked against; exactly one of `jwks_url`, `public_key`."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    public_key: Path | None = None
    role_claim: str = "radbridge_role"

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise AuthSetupError("OIDC needs both an issuer and an audience")
        if (self.jwks_url is None) == (self.public_key is None):
            raise AuthSetupError("OIDC needs exactly one of a JWKS URL and a public key file")


def algorithms_for(key: Any) -> tuple[str, ...]:
    """The JWS algorithms a key of this type verifies (none for anything else)."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _EC
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return _EDDSA
    return ()


class KeySource(Protocol):
    def key_for(self, kid: str | None) -> tuple[PublicKey, tuple[str, ...]]:
        """The key for this key id and the algorithms it may be used with."""


class PemKey:
    """One public key (or a certificate's) read from a PEM file at start-up."""

    def __init__(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AuthSetupError(f"OIDC public key {path}: {exc.strerror}") from exc
        try:
            loaded: Any = (x509.load_pem_x509_certificate(data).public_key()
                           if b"CERTIFICATE" in data else serialization.load_pem_public_key(data))
        except ValueError as exc:
            raise AuthSetupError(f"OIDC public key {path}: not a PEM public key or "
                                 "certificate") from exc
        self.algorithms = algorithms_for(loaded)
        if not self.algorithms:
            raise AuthSetupError(f"OIDC public key {path}: expected an RSA, EC or Ed25519 key")
        self.key: PublicKey = loaded

    def key_for(self, kid: str | None) -> tuple[PublicKey, tuple[str, ...]]:
        return self.key, self.algorithms


class JwksKeys:
    """The provider's key set, fetched with httpx, kept `ttl` seconds, fetched again early
    (at most every `refresh` seconds) when a token names a key id it lacks."""

    def __init__(self, url: str, *, ttl: float = JWKS_TTL_SECONDS,
                 refresh: float = JWKS_REFRESH_SECONDS, client: httpx.Client | None = None):
        self.url, self.ttl, self.refresh = url, ttl, refresh
        self._client = client or httpx.Client(timeout=JWKS_TIMEOUT_SECONDS)
        self._keys: dict[str | None, tuple[PublicKey, tuple[str, ...]]] = {}
        self._fetched: float | None = None
        self._lock = threading.Lock()

    def key_for(self, kid: str | None) -> tuple[PublicKey, tuple[str, ...]]:
        with self._lock:
            age = None if self._fetched is None else time.monotonic() - self._fetched
            if age is None or age > self.ttl or (kid not in self._keys and age > self.refresh):
                self._fetch(keep_old=age is not None)
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated(f"no key {kid!r} in the OIDC key set")
        return found

    def _fetch(self, *, keep_old: bool) -> None:
        try:
            response = self._client.get(self.url)
            response.raise_for_status()
            keys = _usable_keys(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            if keep_old and self._keys:  # serve from the old set; the provider may be back soon
                log.warning("OIDC key set %s not refreshed: %s", self.url, exc)
                self._fetched = time.monotonic()
                return
            raise VerifierUnavailable(f"OIDC key set {self.url}: {exc}") from exc
        self._keys, self._fetched = keys, time.monotonic()
        log.info("OIDC key set %s: %d key(s)", self.url, len(keys))


def _usable_keys(document: Any) -> dict[str | None, tuple[PublicKey, tuple[str, ...]]]:
    """Signing keys of a JWKS document by key id; keys of other uses or types are left out."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("expected a JSON Web Key Set: an object with a 'keys' list")
    keys: dict[str | None, tuple[PublicKey, tuple[str, ...]]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            log.info("OIDC key %r left out: %s", entry.get("kid"), exc)
            continue
        algorithms = algorithms_for(jwk.key)
        if entry.get("alg") is not None:
            algorithms = tuple(a for a in algorithms if a == entry["alg"])
        if algorithms:
            keys[jwk.key_id] = (jwk.key, algorithms)
    if not keys:
        raise ValueError("the key set has no usable signing key")
    return keys


class OidcVerifier:
    """Checks OIDC bearer tokens; see the module docstring."""

    def __init__(self, config: OidcConfig, keys: KeySource | None = None) -> None:
        self.config = config
        if keys is not None:
            self.keys = keys
        elif config.public_key is not None:
            self.keys = PemKey(config.public_key)
        else:
            self.keys = JwksKeys(str(config.jwks_url))

    def verify(self, bearer: str) -> Identity:
        try:
            header = jwt.get_unverified_header(bearer)
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"malformed JWT: {exc}") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ACCEPTED:
            raise Unauthenticated(f"JWT algorithm {str(algorithm)[:20]!r} not accepted")
        key, algorithms = self.keys.key_for(kid if isinstance(kid, str) else None)
        if algorithm not in algorithms:
            raise Unauthenticated(f"JWT algorithm {algorithm!r} not accepted for key {kid!r}")
        try:
            claims = jwt.decode(
                bearer, key, algorithms=list(algorithms), audience=self.config.audience,
                issuer=self.config.issuer, leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"JWT rejected: {type(exc).__name__}: {exc}") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT:
            raise Unauthenticated(f"JWT subject: expected 1 to {MAX_SUBJECT} characters")
        return Identity(kind="oidc", name=subject,
                        roles=known_roles(_role_values(claims, self.config.role_claim)))


def _role_values(claims: dict[str, Any], path: str) -> list[object]:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, list) else []
