"""Syslog for audit messages: RFC 5424 messages over UDP (RFC 5426, one datagram each)
or TLS (RFC 5425, octet-counting framing), behind one small `Transport` interface.

A message: `<PRI>1 TIMESTAMP HOSTNAME radbridge PROCID MSGID - BOM XML`; facility 10
(security/authorization), severity by outcome; MSGID "IHE+RFC-3881" as IHE ATNA's
Record Audit Event transaction names it; no structured data; the MSG is UTF-8 with its
byte order mark, as RFC 5424 asks of a UTF-8 MSG.

What a transport can know. Syslog has no acknowledgement. Over TLS a batch counts as
taken when it was written and the connection is still up a moment later (`confirm`:
a collector that died or reset the connection by then makes the batch go again, so
events are sent at least once; what the collector's TCP stack took and its process then
lost is beyond any syslog sender). Over UDP a datagram counts as taken when the kernel
sent it; a closed port is noticed through the ICMP error Linux reports on a connected
socket (then the batch goes again), a datagram lost on the way is not noticed at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from radbridge.engine.audit_export.errors import (
    CollectorError,
    CollectorUntrusted,
    SyslogTargetError,
)

APP_NAME = "radbridge"
MSGID = "IHE+RFC-3881"
FACILITY_SECURITY = 10
BOM = b"\xef\xbb\xbf"
DEFAULT_PORTS = {"udp": 514, "tls": 6514}
UDP_MAX = 65_507
"""The largest UDP payload over IPv4."""
SEVERITY = {"0": 5, "4": 4, "8": 3, "12": 2}
"""EventOutcomeIndicator -> severity: notice, warning, error, critical."""


@dataclass(frozen=True)
class SyslogTarget:
    """Where audit messages go: `udp://host:port` or `tls://host:port` (+ CA, client cert)."""

    protocol: Literal["udp", "tls"]
    host: str
    port: int
    ca: Path | None = None
    """The CA that signed the collector's certificate (default: the system's CAs)."""
    cert: Path | None = None
    key: Path | None = None
    """A client certificate and key, for collectors that require one (mutual TLS)."""

    @classmethod
    def parse(cls, url: str, *, ca: str | Path | None = None, cert: str | Path | None = None,
              key: str | Path | None = None) -> SyslogTarget:
        """From `udp://HOST[:PORT]` or `tls://HOST[:PORT]`; SyslogTargetError if unusable."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise SyslogTargetError(f"syslog destination {url!r}: expected udp://HOST:PORT or "
                                    "tls://HOST:PORT")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise SyslogTargetError(f"syslog destination {url!r}: {exc}") from exc
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise SyslogTargetError(f"syslog destination {url!r}: expected a host and port "
                                    "only")
        if parts.scheme == "udp" and (ca or cert or key):
            raise SyslogTargetError("a CA or client certificate is for tls:// destinations, "
                                    "not udp://")
        if (cert is None) != (key is None):
            raise SyslogTargetError("a client certificate needs both its certificate and key")
        protocol: Literal["udp", "tls"] = "udp" if parts.scheme == "udp" else "tls"
        return cls(protocol, parts.hostname, port, *(Path(p) if p else None
                                                    for p in (ca, cert, key)))

    @classmethod
    def resolve(cls, *, url: str | None = None, ca: str | None = None, cert: str | None = None,
                key: str | None = None, environ: Mapping[str, str] | None = None
                ) -> SyslogTarget | None:
        """Command-line values over RADBRIDGE_ATNA_* variables; None (no forwarding)
        without a URL."""
        env = os.environ if environ is None else environ
        url = url or env.get("RADBRIDGE_ATNA_SYSLOG")
        if not url:
            return None
        return cls.parse(url, ca=ca or env.get("RADBRIDGE_ATNA_CA") or None,
                         cert=cert or env.get("RADBRIDGE_ATNA_CERT") or None,
                         key=key or env.get("RADBRIDGE_ATNA_KEY") or None)

    @property
    def name(self) -> str:
        """The destination's name: its forwarding cursor is kept under it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.protocol}://{host}:{self.port}"

    def transport(self, *, timeout: float = 10.0, settle: float = 0.2) -> Transport:
        if self.protocol == "udp":
            return UdpTransport(self, settle=settle)
        return TlsTransport(self, timeout=timeout, settle=settle)


def syslog_message(body: bytes, *, at: datetime, outcome: str, hostname: str,
                   procid: str | None = None) -> bytes:
    """An RFC 5424 message carrying `body` (UTF-8) as MSG."""
    pri = FACILITY_SECURITY * 8 + SEVERITY.get(outcome, 2)
    stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    header = (f"<{pri}>1 {stamp} {header_field(hostname, 255)} {APP_NAME} "
              f"{header_field(procid or str(os.getpid()), 128)} {MSGID} -")
    return header.encode("ascii") + b" " + BOM + body


def header_field(value: str, limit: int) -> str:
    """A header field as RFC 5424 allows it: printable ASCII without spaces, or "-"."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
    return cleaned or "-"


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 framing: the length in decimal, a space, the message."""
    return b"%d %s" % (len(message), message)


class Transport(Protocol):
    """Sends a batch of syslog messages in order; `CollectorError` when it could not."""

    def send(self, messages: Sequence[bytes]) -> None: ...

    def confirm(self) -> None:
        """Raise CollectorError if the collector failed since the last `send`."""

    def close(self) -> None: ...


class UdpTransport:
    """One datagram per message, on a connected socket (so ICMP errors are reported)."""

    def __init__(self, target: SyslogTarget, *, settle: float = 0.2) -> None:
        self._target = target
        self._settle = settle
        self._socket: socket.socket | None = None

    def send(self, messages: Sequence[bytes]) -> None:
        sock = self._connected()
        try:
            self._raise_pending(sock)
            for message in messages:
                if len(message) > UDP_MAX:
                    raise CollectorError(self._target.name,
                                         f"a message of {len(message)} bytes is larger than "
                                         "a UDP datagram can be")
                sock.send(message)
        except OSError as exc:
            self.close()
            raise CollectorError(self._target.name, _reason(exc)) from exc

    def confirm(self) -> None:
        if self._socket is None:
            return
        time.sleep(self._settle)
        try:
            self._raise_pending(self._socket)
        except OSError as exc:
            self.close()
            raise CollectorError(self._target.name, _reason(exc)) from exc

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _connected(self) -> socket.socket:
        if self._socket is None:
            try:
                family, kind, proto, _, address = socket.getaddrinfo(
                    self._target.host, self._target.port, type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(family, kind, proto)
                sock.connect(address)
            except OSError as exc:
                raise CollectorError(self._target.name, _reason(exc)) from exc
            self._socket = sock
        return self._socket

    @staticmethod
    def _raise_pending(sock: socket.socket) -> None:
        """An ICMP error Linux holds for this socket (port unreachable), as OSError."""
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))


class TlsTransport:
    """RFC 5425: one TLS connection, kept open; re-opened when the collector closed it."""

    def __init__(self, target: SyslogTarget, *, timeout: float = 10.0,
                 settle: float = 0.2) -> None:
        self._target = target
        self._timeout = timeout
        self._settle = settle
        self._context = client_context(target)
        self._socket: ssl.SSLSocket | None = None

    def send(self, messages: Sequence[bytes]) -> None:
        if self._socket is not None and _peer_closed(self._socket):
            self.close()
        sock = self._socket or self._connect()
        try:
            sock.sendall(b"".join(octet_counted(m) for m in messages))
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise CollectorError(self._target.name, _reason(exc)) from exc

    def confirm(self) -> None:
        if self._socket is None:
            return
        time.sleep(self._settle)
        if _peer_closed(self._socket):
            self.close()
            raise CollectorError(self._target.name, "the collector closed the connection "
                                 "after the batch was written; it goes again")

    def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None

    def _connect(self) -> ssl.SSLSocket:
        name = self._target.name
        try:
            raw = socket.create_connection((self._target.host, self._target.port),
                                           timeout=self._timeout)
        except OSError as exc:
            raise CollectorError(name, _reason(exc)) from exc
        try:
            sock = self._context.wrap_socket(raw, server_hostname=self._target.host)
        except ssl.SSLCertVerificationError as exc:
            raw.close()
            raise CollectorUntrusted(name, f"certificate not trusted: {exc.verify_message}") \
                from exc
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise CollectorError(name, f"TLS handshake failed: {_reason(exc)}") from exc
        self._socket = sock
        return sock


def client_context(target: SyslogTarget) -> ssl.SSLContext:
    """TLS 1.2+, the collector verified against `target.ca` (or the system's CAs) and its
    host name, and the client certificate when given."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(target.ca) if target.ca else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if target.cert is not None and target.key is not None:
            context.load_cert_chain(target.cert, target.key)
    except (OSError, ssl.SSLError) as exc:
        raise SyslogTargetError(f"syslog TLS settings for {target.name}: cannot load the CA "
                                f"or client certificate: {exc}") from exc
    return context


def _peer_closed(sock: ssl.SSLSocket) -> bool:
    """Whether the collector closed or reset the connection. A collector never sends
    data, so a readable socket means a close, a reset, or a TLS message after the
    handshake (a session ticket), which the read below consumes."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    if not readable and not sock.pending():
        return False
    previous = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False
    except (OSError, ssl.SSLError):
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == \
            errno.ECONNREFUSED:
        return "connection refused (the collector is down)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:300]
