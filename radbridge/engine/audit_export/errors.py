"""Errors of audit export and forwarding, under `RadbridgeError` (see `radbridge.errors`)::

    RadbridgeError
    └── AuditExportError
        ├── AuditFilterError      a filter or format that cannot be used (also a ValueError):
        │                         names the parameter and what was expected
        ├── SyslogTargetError     a syslog URL, CA, certificate or key that cannot be used
        │                         (also a ValueError): fixing the settings is the only cure
        └── CollectorError        the collector did not take a message: down, refused,
            │                     reset, timed out; the forwarder keeps its cursor and retries
            └── CollectorUntrusted  the TLS handshake failed: the collector's certificate is
                                  not signed by the configured CA or names another host

Messages name destinations, sequence numbers and peers, never patient data.
"""

from __future__ import annotations

from radbridge.errors import RadbridgeError


class AuditExportError(RadbridgeError):
    """Root of the audit export errors."""


class AuditFilterError(AuditExportError, ValueError):
    """A query filter or export format is invalid."""

    def __init__(self, name: str, expected: str) -> None:
        self.name = name
        self.expected = expected
        super().__init__(f"{name}: expected {expected}")


class SyslogTargetError(AuditExportError, ValueError):
    """The syslog destination settings are unusable (URL, CA, certificate, key)."""


class CollectorError(AuditExportError):
    """The syslog collector did not take a message; what was not confirmed is sent again."""

    def __init__(self, destination: str, reason: str) -> None:
        self.destination = destination
        self.reason = reason
        super().__init__(f"syslog collector {destination}: {reason}")


class CollectorUntrusted(CollectorError):
    """The collector's TLS certificate failed verification against the configured CA."""
