"""Associations with a DICOM peer as a client (SCU), on pynetdicom, and how they fail.

pynetdicom blocks: every call here is synchronous and runs in a worker thread
(`asyncio.to_thread`), never on the event loop. Timeouts, AE titles and TLS come from a
`DicomPeerConfig`. pynetdicom reports trouble as flags and empty status datasets; this
module turns them into exceptions that name the peer::

    RadbridgeError
    └── DimseError                 a DIMSE exchange with a named peer went wrong
        ├── AssociationFailed      no connection, rejected, aborted, or no answer in time
        ├── NoAcceptedContext      the peer accepts no presentation context for an object
        └── DimseStatusError       the peer answered a failure status (`status` keeps it)
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE, SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext, build_context

from radbridge.engine.config import DicomPeerConfig
from radbridge.errors import RadbridgeError
from radbridge.interfaces.tls import Resolve, client_context

log = logging.getLogger(__name__)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
"""Transfer syntaxes pynetdicom converts between by itself (no pixel transcoding)."""
LITTLE_ENDIAN: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
MAX_CONTEXTS = 128
"""PS3.8 allows at most 128 presentation contexts (odd ids 1-255) in one request."""

Handlers = Sequence[tuple[evt.InterventionEvent | evt.NotificationEvent, Callable[..., Any]]]


class DimseError(RadbridgeError):
    """A DIMSE exchange with `peer` (AE@host:port) went wrong."""

    def __init__(self, peer: str, message: str) -> None:
        self.peer = peer
        super().__init__(f"{peer}: {message}")


class AssociationFailed(DimseError):
    """No usable association: connection refused, rejected, aborted or timed out."""


class NoAcceptedContext(DimseError):
    """The peer accepted no presentation context for this SOP class and transfer syntax."""


class DimseStatusError(DimseError):
    """The peer answered with a failure status."""

    def __init__(self, peer: str, status: int, message: str) -> None:
        self.status = status
        super().__init__(peer, f"{message} (status 0x{status:04X})")


def peer_name(config: DicomPeerConfig) -> str:
    return f"{config.ae_title}@{config.host}:{config.port}"


class DicomClient:
    """Opens associations to one peer with its AE titles, timeouts and TLS."""

    def __init__(self, config: DicomPeerConfig, *, resolve: Resolve = Path,
                 max_pdu: int = 0) -> None:
        self.config = config
        self.name = peer_name(config)
        self._tls = (None if config.tls is None else client_context(config.tls, resolve))
        self._max_pdu = max_pdu

    def associate(self, contexts: Sequence[PresentationContext], *,
                  roles: Sequence[SCP_SCU_RoleSelectionNegotiation] = (),
                  handlers: Handlers = ()) -> Association:
        """An established association, or AssociationFailed saying why not."""
        config = self.config
        ae = AE(ae_title=config.calling_ae)
        ae.connection_timeout = config.connect_timeout
        ae.acse_timeout = config.connect_timeout
        ae.dimse_timeout = config.response_timeout
        ae.network_timeout = max(config.response_timeout, 60.0)
        rejection: list[A_ASSOCIATE] = []
        opened: list[bool] = []

        def on_acse(event: evt.Event) -> None:
            primitive = event.primitive  # type: ignore[attr-defined]
            if isinstance(primitive, A_ASSOCIATE) and primitive.result in (0x01, 0x02):
                rejection.append(primitive)

        tls_args = None
        if self._tls is not None:
            tls_args = (self._tls, config.host)
        try:
            assoc = ae.associate(
                config.host, config.port, list(contexts), ae_title=config.ae_title,
                max_pdu=self._max_pdu, ext_neg=list(roles) or None, tls_args=tls_args,
                evt_handlers=[(evt.EVT_ACSE_RECV, on_acse),
                              (evt.EVT_CONN_OPEN, lambda _event: opened.append(True)),
                              *handlers])
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise AssociationFailed(self.name, f"cannot associate: {exc}") from exc
        if assoc.is_established:
            _no_delay(assoc)
            return assoc
        if rejection:
            rj = rejection[0]
            raise AssociationFailed(self.name, f"association rejected ({rj.result_str}):"
                                               f" {rj.reason_str} [{rj.source_str}]")
        if not opened:
            # the cause says "network": the delivery worker marks the peer down on it
            raise AssociationFailed(self.name, "cannot connect (refused or timed out within"
                                               f" {config.connect_timeout:g}s)") \
                from ConnectionRefusedError(f"{config.host}:{config.port}")
        raise AssociationFailed(self.name, "no association: aborted, no answer within"
                                           f" {config.connect_timeout:g}s, or no presentation"
                                           " context accepted")


def _no_delay(assoc: Association) -> None:
    """Nagle off: a C-STORE is written as several PDUs and each would wait ~40 ms."""
    sock = getattr(assoc.dul.socket, "socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def release(assoc: Association | None) -> None:
    """Release an association politely; abort when the release is not answered."""
    if assoc is None or not assoc.is_established:
        return
    assoc.release()
    if assoc.is_established:
        assoc.abort()


def check_status(peer: str, status: Dataset, what: str) -> int:
    """The status code of a response; AssociationFailed when none came (timeout, abort)."""
    code = status.get("Status") if status is not None else None
    if code is None:
        raise AssociationFailed(
            peer, f"no valid {what} response (timed out or the association was aborted)")
    return int(code)


def echo(client: DicomClient) -> int:
    """C-ECHO on a fresh association; the status code the peer answered."""
    assoc = client.associate([build_context(VERIFICATION)])
    try:
        return check_status(client.name, assoc.send_c_echo(), "C-ECHO")
    finally:
        release(assoc)


class SharedAssociation:
    """One association reused for every object sent to a peer.

    It proposes, for each SOP class seen so far, one context in the object's own transfer
    syntax and one in little endian, so nothing is transcoded when the peer takes the
    object as it is. It is opened again when the peer released or aborted it, and when
    an object needs a context the open association did not propose.
    """

    def __init__(self, client: DicomClient) -> None:
        self.client = client
        self._wanted: dict[str, set[str]] = {}
        self._assoc: Association | None = None
        self._proposed: dict[str, set[str]] = {}
        self.opened = 0
        """How many associations were opened so far (each re-open counts)."""

    def want(self, sop_class: str, transfer_syntax: str) -> None:
        """Propose this pair from the next association on (say all before a batch)."""
        self._wanted.setdefault(sop_class, set()).add(transfer_syntax)

    def for_object(self, sop_class: str, transfer_syntax: str) -> Association:
        """An established association that proposed contexts for this object."""
        self.want(sop_class, transfer_syntax)
        proposed = self._proposed.get(sop_class, set())
        if self._assoc is not None and (not self._assoc.is_established
                                        or transfer_syntax not in proposed):
            self.close()
        if self._assoc is None:
            contexts = self._contexts()
            self._assoc = self.client.associate(contexts)
            self.opened += 1
            log.info("associated with %s, %d contexts proposed", self.client.name,
                     len(contexts))
        return self._assoc

    def discard(self) -> None:
        """Forget the association after a failure on it (abort it if still up)."""
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.abort()
        self._assoc = None

    def close(self) -> None:
        release(self._assoc)
        self._assoc = None

    def _contexts(self) -> list[PresentationContext]:
        while True:
            contexts = []
            for sop_class, syntaxes in self._wanted.items():
                for syntax in sorted(syntaxes):
                    contexts.append(build_context(sop_class, syntax))
                contexts.append(build_context(sop_class, LITTLE_ENDIAN))
            if len(contexts) <= MAX_CONTEXTS:
                break
            del self._wanted[next(iter(self._wanted))]  # the SOP class seen longest ago
        self._proposed = {k: set(v) | set(LITTLE_ENDIAN) for k, v in self._wanted.items()}
        return contexts
