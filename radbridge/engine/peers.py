"""Peers: whether each remote system a destination sends to could be reached lately.

A peer is named by where it listens (`host:port`, or a URL without credentials, query
or fragment), so two destinations sending to one server share one peer. Delivery
workers report every outcome here (radbridge.engine.dispatcher): a send the peer took,
or refused for good (a 4xx, an AE), says it is up; a send that could not connect
(refused, reset, unreachable, timed out, TLS failed) says it is down. Other failures (a
503, a local file that cannot be read, an adapter bug) say nothing about it.

The tracker is process-wide, like the Prometheus metrics it sets (one node per
process); the `alerts` source reads it for its peer-down rule, so that rule judges
the peers of the deliveries this process sends.
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from prometheus_client import Gauge

from radbridge.engine.config import (
    DicomRetrieveDestination,
    DimseDestination,
    FhirDestination,
    HttpDestination,
    InferenceDestination,
    MllpDestination,
    StowRsDestination,
)
from radbridge.engine.metrics import PEER_UP
from radbridge.engine.models import utcnow
from radbridge.errors import TransientDeliveryError

NETWORK_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.ETIMEDOUT, errno.EPIPE,
})
"""OS errors that say the network or the peer failed (not a local file or a bug)."""


class PeerUnreachable(TransientDeliveryError):
    """A destination could not reach its peer. Adapters whose library reports a failed
    connection without an OS error beneath it raise this (or chain an OSError) so the
    peer is counted down."""


def peer_label(config: object) -> str | None:
    """Where a destination sends to, without credentials; None when it has no peer."""
    if isinstance(config, MllpDestination):
        return _host_port(config.host, config.port)
    if isinstance(config, DimseDestination):
        return _host_port(config.peer.host, config.peer.port)
    if isinstance(config, DicomRetrieveDestination):
        if config.peer is not None:
            return _host_port(config.peer.host, config.peer.port)
        return None if config.dicomweb_url is None else clean_url(config.dicomweb_url)
    if isinstance(config, HttpDestination | FhirDestination | StowRsDestination):
        return clean_url(config.url)
    if isinstance(config, InferenceDestination) and config.triton is not None:
        return clean_url(config.triton.url)
    return None


def clean_url(url: str) -> str:
    """`url` without user, password, query and fragment (any may carry a secret)."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    scheme = f"{parts.scheme}://" if parts.scheme else ""
    return f"{scheme}{netloc}{parts.path}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_connection_failure(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, says the peer was not reached."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PeerUnreachable | ConnectionError | TimeoutError | ssl.SSLError
                      | socket.gaierror | socket.herror):
            return True
        if isinstance(current, OSError) and current.errno in NETWORK_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


@dataclass
class PeerState:
    """What this process knows of one peer."""

    peer: str
    up: bool
    since: datetime
    """When the peer last changed between up and down (or was first seen)."""
    consecutive_failures: int = 0
    """Connection failures since the last attempt that reached it."""
    destinations: set[str] = field(default_factory=set)
    """'channel/destination' of the destinations that send to it."""


class PeerTracker:
    """Up/down per peer from delivery outcomes; sets radbridge_peer_up. Thread-safe."""

    def __init__(self, gauge: Gauge = PEER_UP) -> None:
        self._gauge = gauge
        self._lock = threading.Lock()
        self._states: dict[str, PeerState] = {}

    def reached(self, peer: str, destination: str) -> None:
        """An attempt got an answer from the peer (success or a refusal)."""
        self._record(peer, destination, up=True)

    def unreachable(self, peer: str, destination: str) -> None:
        """An attempt could not connect to the peer."""
        self._record(peer, destination, up=False)

    def snapshot(self) -> list[PeerState]:
        """Copies of every peer's state, by peer name."""
        with self._lock:
            return [PeerState(s.peer, s.up, s.since, s.consecutive_failures,
                              set(s.destinations)) for _, s in sorted(self._states.items())]

    def forget(self, destination: str) -> None:
        """A destination was undeployed: peers no other destination uses are dropped."""
        with self._lock:
            for peer, state in list(self._states.items()):
                state.destinations.discard(destination)
                if not state.destinations:
                    del self._states[peer]
                    self._gauge.remove(peer)

    def _record(self, peer: str, destination: str, *, up: bool) -> None:
        with self._lock:
            state = self._states.get(peer)
            if state is None:
                state = self._states[peer] = PeerState(peer, up, utcnow())
            elif state.up != up:
                state.up, state.since = up, utcnow()
            state.consecutive_failures = 0 if up else state.consecutive_failures + 1
            state.destinations.add(destination)
            self._gauge.labels(peer).set(1 if up else 0)


PEERS = PeerTracker()
"""This process's peers (see the module docstring)."""
