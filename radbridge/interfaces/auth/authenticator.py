"""One entry point for every kind of bearer token the API takes.

An API token has its own shape (`rbt_...`); anything else with the three dot-separated
parts of a JWT goes to the OIDC verifier when one is configured. Runs in a worker
thread: both kinds may touch the store or the network.
"""

from __future__ import annotations

from radbridge.interfaces.auth.errors import Unauthenticated
from radbridge.interfaces.auth.identity import Identity
from radbridge.interfaces.auth.oidc import OidcVerifier
from radbridge.interfaces.auth.tokens import TokenVerifier, looks_like_token


class Authenticator:
    """API tokens always; OIDC JWTs where configured."""

    def __init__(self, tokens: TokenVerifier, oidc: OidcVerifier | None = None) -> None:
        self.tokens = tokens
        self.oidc = oidc

    def authenticate(self, bearer: str) -> Identity:
        if looks_like_token(bearer):
            return self.tokens.verify(bearer)
        if self.oidc is not None and bearer.count(".") == 2:
            return self.oidc.verify(bearer)
        raise Unauthenticated("malformed bearer token (neither an API token nor a JWT)")
