"""DIMSE command sets (PS3.7 section 9.3 and 10.3): decode requests, build responses.

A command set is a few group-0000 elements in implicit VR little endian. It is parsed
and built here with struct, not pydicom: every C-STORE carries one each way, and a
dozen tags do not need a general data set reader. Error comments carry reasons made
by Radbridge itself, never values from the data set (no PHI in a reply or a log).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from radbridge.interfaces.dimse.pdu import AbortReason, UpperLayerError

ELEMENT = struct.Struct("<HHL")
US = struct.Struct("<H")

# Command Field values
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
N_EVENT_REPORT_RQ, N_EVENT_REPORT_RSP = 0x0100, 0x8100
N_SET_RQ, N_SET_RSP = 0x0120, 0x8120
N_ACTION_RQ, N_ACTION_RSP = 0x0130, 0x8130
N_CREATE_RQ, N_CREATE_RSP = 0x0140, 0x8140
C_CANCEL_RQ = 0x0FFF

NO_DATA_SET = 0x0101
"""Command Data Set Type: no data set follows (any other value: one follows)."""
HAS_DATA_SET = 0x0000

# element numbers in group 0000
AFFECTED_SOP_CLASS = 0x0002
REQUESTED_SOP_CLASS = 0x0003
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
RESPONDED_TO = 0x0120
PRIORITY = 0x0700
DATA_SET_TYPE = 0x0800
STATUS = 0x0900
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE = 0x1000
REQUESTED_SOP_INSTANCE = 0x1001
EVENT_TYPE_ID = 0x1002
ACTION_TYPE_ID = 0x1008
MOVE_ORIGINATOR_AE = 0x1030
MOVE_ORIGINATOR_ID = 0x1031

_US = frozenset({COMMAND_FIELD, MESSAGE_ID, RESPONDED_TO, PRIORITY, DATA_SET_TYPE, STATUS,
                 EVENT_TYPE_ID, ACTION_TYPE_ID, MOVE_ORIGINATOR_ID})
_UI = frozenset({AFFECTED_SOP_CLASS, REQUESTED_SOP_CLASS, AFFECTED_SOP_INSTANCE,
                 REQUESTED_SOP_INSTANCE})


class Status:
    """DIMSE status codes used by this SCP (PS3.7 annex C, PS3.4 B.2.3)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    NO_SUCH_ATTRIBUTE = 0x0105
    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_INSTANCE = 0x0111
    NO_SUCH_SOP_CLASS = 0x0118
    CLASS_INSTANCE_CONFLICT = 0x0119
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    UNRECOGNIZED_OPERATION = 0x0211


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded command set: the values this SCP reads, by element number."""

    command_field: int
    message_id: int
    has_data_set: bool
    values: dict[int, int | str]

    def uid(self, element: int) -> str:
        value = self.values.get(element, "")
        return value if isinstance(value, str) else ""

    def number(self, element: int) -> int | None:
        value = self.values.get(element)
        return value if isinstance(value, int) else None

    @property
    def sop_class(self) -> str:
        return self.uid(AFFECTED_SOP_CLASS) or self.uid(REQUESTED_SOP_CLASS)

    @property
    def sop_instance(self) -> str:
        return self.uid(AFFECTED_SOP_INSTANCE) or self.uid(REQUESTED_SOP_INSTANCE)


def decode(data: bytes) -> Command:
    """Decode an implicit VR little endian command set; UpperLayerError when it is not one."""
    values: dict[int, int | str] = {}
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < 8:
            raise _bad("command set ends inside an element header")
        group, element, length = ELEMENT.unpack_from(data, offset)
        offset += 8
        if group != 0 or length > end - offset:
            raise _bad(f"invalid command element ({group:04x},{element:04x})")
        raw = data[offset:offset + length]
        offset += length
        if element in _US:
            if length != 2:
                raise _bad(f"command element (0000,{element:04x}) is not US")
            values[element] = US.unpack(raw)[0]
        elif element in _UI or element == MOVE_ORIGINATOR_AE:
            values[element] = raw.rstrip(b"\x00 ").decode("ascii", "replace")
    try:
        field = values[COMMAND_FIELD]
    except KeyError:
        raise _bad("command set without a Command Field") from None
    message_id = values.get(MESSAGE_ID, values.get(RESPONDED_TO, 0))
    data_set_type = values.get(DATA_SET_TYPE, NO_DATA_SET)
    return Command(int(field), int(message_id), data_set_type != NO_DATA_SET, values)


def _bad(message: str) -> UpperLayerError:
    return UpperLayerError(message, AbortReason.INVALID_PDU_PARAMETER_VALUE)


def encode(elements: dict[int, int | str]) -> bytes:
    """A command set from element number -> value (US for ints, UI/LO for strings),
    with its Command Group Length first."""
    parts = []
    for element in sorted(elements):
        value = elements[element]
        if isinstance(value, int):
            raw = US.pack(value)
        else:
            raw = value.encode("ascii", "replace")
            if len(raw) % 2:
                raw += b"\x00" if element in _UI else b" "
        parts.append(ELEMENT.pack(0, element, len(raw)) + raw)
    body = b"".join(parts)
    return ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + body


def response(request: Command, status: int, *, comment: str | None = None,
             has_data_set: bool = False, **extra: int | str) -> bytes:
    """The response to `request`: same SOP class and instance, `status`, and an
    ErrorComment (at most 64 characters, no PHI) for a failure."""
    elements: dict[int, int | str] = {
        COMMAND_FIELD: request.command_field | 0x8000,
        RESPONDED_TO: request.message_id,
        DATA_SET_TYPE: HAS_DATA_SET if has_data_set else NO_DATA_SET,
        STATUS: status,
    }
    if request.sop_class:
        elements[AFFECTED_SOP_CLASS] = request.sop_class
    if request.sop_instance:
        elements[AFFECTED_SOP_INSTANCE] = request.sop_instance
    if comment and status != Status.SUCCESS:
        elements[ERROR_COMMENT] = comment[:64]
    for name, value in extra.items():
        elements[_EXTRA[name]] = value
    return encode(elements)


_EXTRA = {"sop_instance": AFFECTED_SOP_INSTANCE, "action_type": ACTION_TYPE_ID,
          "event_type": EVENT_TYPE_ID}


def event_report(sop_class: str, sop_instance: str, message_id: int, event_type: int) -> bytes:
    """An N-EVENT-REPORT-RQ command (a data set follows it)."""
    return encode({
        AFFECTED_SOP_CLASS: sop_class, COMMAND_FIELD: N_EVENT_REPORT_RQ,
        MESSAGE_ID: message_id, DATA_SET_TYPE: HAS_DATA_SET,
        AFFECTED_SOP_INSTANCE: sop_instance, EVENT_TYPE_ID: event_type,
    })
