"""DICOM upper layer PDUs (PS3.8 section 9.3) as the acceptor reads and writes them.

Reading is the hot path of the C-STORE SCP: one `readexactly` for the 6-byte header and
one for the body, then the P-DATA-TF body is cut into PDVs as memoryviews over that one
bytes object, so a data fragment goes to the file without being copied again. The small
PDUs the acceptor sends (A-ASSOCIATE-AC/RJ, A-RELEASE-RP, A-ABORT, P-DATA-TF) are built
here as plain bytes.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from radbridge.errors import RadbridgeError

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07
KNOWN_TYPES = frozenset(range(A_ASSOCIATE_RQ, A_ABORT + 1))

HEADER = struct.Struct(">BxL")
"""PDU type, a reserved byte, PDU length (of what follows the header)."""
PDV_HEADER = struct.Struct(">LBB")
"""PDV item length (context id + control header + fragment), context id, control header."""
ITEM_HEADER = struct.Struct(">BxH")
"""Item type, a reserved byte, item length (variable items of A-ASSOCIATE)."""

ASSOCIATE_LIMIT = 1 << 20
"""Largest A-ASSOCIATE-RQ or other non-data PDU we read (a few hundred contexts fit)."""
PDU_SLACK = 6 + 1024
"""Room above the announced max PDU: some senders count the PDV headers in it."""


class AbortSource(IntEnum):
    SERVICE_USER = 0
    SERVICE_PROVIDER = 2


class AbortReason(IntEnum):
    """A-ABORT reasons when the source is the service provider (PS3.8 9.3.8)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


class UpperLayerError(RadbridgeError):
    """The peer broke the upper layer protocol: the association is aborted with `reason`."""

    def __init__(self, message: str,
                 reason: AbortReason = AbortReason.INVALID_PDU_PARAMETER_VALUE) -> None:
        self.reason = reason
        super().__init__(message)


class PeerClosed(RadbridgeError):
    """The peer closed the connection (cleanly or mid-PDU)."""


@dataclass(frozen=True, slots=True)
class Pdv:
    """One presentation data value: a fragment of a command or of a data set."""

    context_id: int
    is_command: bool
    is_last: bool
    data: memoryview


async def read_pdu(reader: asyncio.StreamReader, max_length: int) -> tuple[int, bytes]:
    """The next PDU's type and body (without its 6-byte header).

    Raises PeerClosed when the stream ends, UpperLayerError for an unknown type or a
    length over `max_length` (0: no limit), before reading such a body.
    """
    try:
        header = await reader.readexactly(6)
    except asyncio.IncompleteReadError as exc:
        raise PeerClosed("the peer closed the connection") from exc
    pdu_type, length = HEADER.unpack(header)
    if pdu_type not in KNOWN_TYPES:
        raise UpperLayerError(f"unrecognized PDU type 0x{pdu_type:02x}",
                              AbortReason.UNRECOGNIZED_PDU)
    if max_length and length > max_length:
        raise UpperLayerError(f"PDU of {length} bytes exceeds the limit of {max_length}")
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise PeerClosed(f"the peer closed the connection inside a PDU of type {pdu_type}"
                         ) from exc
    return pdu_type, body


def iter_pdvs(body: bytes) -> Iterator[Pdv]:
    """The PDVs of a P-DATA-TF body, as views into it (PS3.8 9.3.5 and annex E)."""
    view = memoryview(body)
    end = len(body)
    offset = 0
    if end == 0:
        raise UpperLayerError("P-DATA-TF without a PDV")
    while offset < end:
        if end - offset < 6:
            raise UpperLayerError("P-DATA-TF ends inside a PDV header")
        length, context_id, control = PDV_HEADER.unpack_from(body, offset)
        stop = offset + 4 + length
        if length < 2 or stop > end:
            raise UpperLayerError(f"PDV length {length} does not fit the P-DATA-TF")
        if context_id % 2 == 0 or control > 3:
            raise UpperLayerError(f"invalid PDV (context {context_id}, control {control})")
        yield Pdv(context_id, bool(control & 1), bool(control & 2), view[offset + 6:stop])
        offset = stop


def p_data_tf(context_id: int, is_command: bool, is_last: bool, fragment: bytes) -> bytes:
    """One P-DATA-TF PDU holding one PDV."""
    control = (1 if is_command else 0) | (2 if is_last else 0)
    length = len(fragment) + 2
    return (HEADER.pack(P_DATA_TF, length + 4) + PDV_HEADER.pack(length, context_id, control)
            + fragment)


def fragment_message(context_id: int, is_command: bool, content: bytes,
                     peer_max_pdu: int) -> list[bytes]:
    """`content` as P-DATA-TF PDUs none larger than the peer's maximum (0: unlimited)."""
    room = len(content) if peer_max_pdu == 0 else max(peer_max_pdu - 6, 1)
    pieces = [content[i:i + room] for i in range(0, len(content), room)] or [b""]
    last = len(pieces) - 1
    return [p_data_tf(context_id, is_command, n == last, piece)
            for n, piece in enumerate(pieces)]


def a_associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ: result 1 permanent / 2 transient; source and reason per PS3.8 9.3.4."""
    return HEADER.pack(A_ASSOCIATE_RJ, 4) + bytes((0, result, source, reason))


def a_release_rp() -> bytes:
    return HEADER.pack(A_RELEASE_RP, 4) + bytes(4)


def a_release_rq() -> bytes:
    return HEADER.pack(A_RELEASE_RQ, 4) + bytes(4)


def a_abort(source: AbortSource, reason: AbortReason = AbortReason.NOT_SPECIFIED) -> bytes:
    """A-ABORT; the reason is meaningful only when the provider is the source."""
    if source == AbortSource.SERVICE_USER:
        reason = AbortReason.NOT_SPECIFIED
    return HEADER.pack(A_ABORT, 4) + bytes((0, 0, source, reason))


def item(item_type: int, value: bytes) -> bytes:
    """A variable item or sub-item of A-ASSOCIATE: type, reserved, 2-byte length, value."""
    return ITEM_HEADER.pack(item_type, len(value)) + value


def pdu(pdu_type: int, body: bytes) -> bytes:
    """A whole PDU from its type and body."""
    return HEADER.pack(pdu_type, len(body)) + body
