"""Why a caller of the HTTP API was refused, or a token command could not be done::

    RadbridgeError
    └── AuthError
        ├── Unauthenticated       no valid credentials: the API answers 401. `reason` is
        │                         for the node's log (token id and name, never the secret);
        │                         the caller only learns that the token is not valid.
        ├── VerifierUnavailable   credentials cannot be checked now (the OIDC key set does
        │                         not answer): 503, so a client does not drop a good token
        ├── TokenError            a token command that cannot be done (unknown id, a name
        │                         already taken, a role that does not exist)
        └── AuthSetupError        authentication cannot start (an unreadable key file, OIDC
                                  settings that do not fit together)
"""

from __future__ import annotations

from radbridge.errors import RadbridgeError


class AuthError(RadbridgeError):
    """Root of the access-control errors."""


class Unauthenticated(AuthError):
    """Missing, malformed, unknown, revoked, expired or forged credentials."""

    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing
        """No credentials at all (RFC 6750: then the challenge carries no error code)."""


class VerifierUnavailable(AuthError):
    """The credentials may be good but cannot be verified right now."""


class TokenError(AuthError):
    """A token command that cannot be done as asked."""


class AuthSetupError(AuthError):
    """Authentication settings that cannot be used; the node does not start."""
