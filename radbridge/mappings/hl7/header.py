"""The hot path of HL7 v2 ingest: read what the acknowledgement and the store need.

A receiver must answer every message quickly and correctly, so this module reads only
the MSH fields, cut by the separators the MSH declares (python-hl7's full parse costs
~230 us, its parse of the MSH alone ~40 us; this whole read ~20 us), checks the segment
structure with plain string scans, and picks out the few identifiers the store indexes
(patient id, accession). Anything wrong becomes an `Hl7Rejection` that says which
acknowledgement code to answer (AE: the content is wrong; AR: we do not take this kind
of message), the HL7 error code (table 0357), where the problem is, and why. The full
parse, with python-hl7, happens later, off the acknowledgement path.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from radbridge.errors import RadbridgeError
from radbridge.mappings.hl7.reading import unescape

AckCode = Literal["AA", "AE", "AR"]

SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
_SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")

# HL7 table 0357 (message error condition codes) used here.
SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
UNSUPPORTED_PROCESSING_ID = 202
UNSUPPORTED_VERSION_ID = 203
APPLICATION_INTERNAL_ERROR = 207

ERROR_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}

STANDARD_MESSAGE_TYPES = frozenset("""
ACK ADR ADT BAR BPS BRP BRT BTS CCF CCI CCM CCQ CCR CCU CQU CRM CSU DFT DOC DSR EAC EAN
EAR EHC ESR ESU INR INU LSR LSU MDM MFD MFK MFN MFQ MFR NMD NMQ NMR OMB OMD OMG OMI OML
OMN OMP OMQ OMS OPL OPR OPU ORA ORB ORD ORF ORG ORI ORL ORM ORN ORP ORR ORS ORU OSM OSQ
OSR OSU OUL PEX PGL PIN PMU PPG PPP PPR PPT PPV PRR PTR PTU QBP QCK QCN QRY QSB QSX QVR
RAR RAS RCI RCL RDE RDR RDS RDY REF RER RGR RGV ROC ROD ROR RPA RPI RPL RPR RQA RQC RQI
RQP RRA RRD RRE RRG RRI RSP RTB SCN SDN SDR SIU SLN SLR SMD SQM SQR SRM SRR SSR SSU STC
STI SUR TBR TCR TCU UDM VXQ VXR VXU VXX
""".split())  # noqa: SIM905 (a table reads better as a block)
"""HL7 table 0076: what '*' in an accepted-types list stands for."""


class Hl7Rejection(RadbridgeError):
    """Why a message is refused, in the terms its negative acknowledgement needs."""

    def __init__(self, ack_code: AckCode, error_code: int, reason: str,
                 location: str | None = None) -> None:
        super().__init__(reason)
        self.ack_code: AckCode = ack_code
        self.error_code = error_code
        self.reason = reason
        self.location = location
        """Where: 'MSH-12', 'PID', or None for the message as a whole."""


@dataclass(frozen=True)
class Hl7Header:
    """The MSH fields and structure facts that receiving and acknowledging need."""

    field_separator: str
    encoding_characters: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_code: str
    trigger_event: str
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str
    charset: str
    segment_ids: tuple[str, ...]
    patient_id: str | None = None
    accession: str | None = None

    @property
    def message_type(self) -> str:
        return f"{self.message_code}^{self.trigger_event}" if self.trigger_event \
            else self.message_code

    @property
    def sender(self) -> str:
        return f"{self.sending_application}^{self.sending_facility}"

    @property
    def enhanced_mode(self) -> bool:
        """MSH-15 or MSH-16 valued: the sender asked for enhanced acknowledgement."""
        return bool(self.accept_ack_type or self.application_ack_type)


def split_segments(text: str) -> list[str]:
    """Segments of a message: CR is the separator; LF and CRLF are tolerated."""
    return [s for s in _SEGMENT_SPLIT.split(text) if s]


def read_header(text: str) -> Hl7Header:
    """Read the MSH and the segment structure; raises Hl7Rejection naming the problem."""
    segments = split_segments(text.lstrip("\x00 \t\r\n"))
    if not segments or not segments[0].startswith("MSH"):
        found = segments[0][:3] if segments else "nothing"
        raise Hl7Rejection("AE", SEGMENT_SEQUENCE_ERROR,
                           f"expected the message to start with an MSH segment, found {found!r}",
                           "MSH")
    msh = segments[0]
    separator = msh[3:4]
    if not separator or separator.isalnum() or separator.isspace():
        raise Hl7Rejection("AE", DATA_TYPE_ERROR,
                           f"MSH-1 (field separator) is {separator!r}; expected a punctuation"
                           " character such as '|'", "MSH-1")
    encoding = msh[4:].split(separator, 1)[0]
    _check_encoding_characters(encoding, separator)
    field_count = msh.count(separator) + 1
    if field_count < 12:
        hint = " (is the field separator right?)" if field_count < 3 else ""
        raise Hl7Rejection("AE", REQUIRED_FIELD_MISSING,
                           f"MSH has {field_count} fields; expected at least 12 (through"
                           f" MSH-12 version){hint}", f"MSH-{field_count + 1}")
    fields = _MshFields.read(msh, separator, encoding)
    segment_ids = _segment_ids(segments, separator)
    header = Hl7Header(
        field_separator=separator,
        encoding_characters=encoding,
        sending_application=_component(fields, 3),
        sending_facility=_component(fields, 4),
        receiving_application=_component(fields, 5),
        receiving_facility=_component(fields, 6),
        message_code=_component(fields, 9, 1),
        trigger_event=_component(fields, 9, 2),
        control_id=_text(fields, 10),
        processing_id=_component(fields, 11),
        version=_component(fields, 12),
        accept_ack_type=_text(fields, 15),
        application_ack_type=_text(fields, 16),
        charset=_component(fields, 18),
        segment_ids=segment_ids,
        patient_id=_first_component(segments, "PID", 3, separator, encoding),
        accession=(_first_component(segments, "OBR", 18, separator, encoding)
                   or _first_component(segments, "IPC", 1, separator, encoding)),
    )
    for number, value, name in ((9, header.message_code, "message type"),
                                (10, header.control_id, "message control id"),
                                (11, header.processing_id, "processing id"),
                                (12, header.version, "version id")):
        if not value:
            raise Hl7Rejection("AE", REQUIRED_FIELD_MISSING,
                               f"MSH-{number} ({name}) is empty", f"MSH-{number}")
    return header


def check_acceptance(
    header: Hl7Header,
    *,
    versions: Collection[str],
    message_types: Collection[str],
    processing_ids: Collection[str],
    required_segments: Mapping[str, Collection[str]],
) -> None:
    """Raise Hl7Rejection when a channel does not take this message; see MllpSource.accept."""
    if header.version not in versions:
        raise Hl7Rejection("AR", UNSUPPORTED_VERSION_ID,
                           f"version {header.version!r} is not accepted here; expected one of"
                           f" {', '.join(versions)}", "MSH-12")
    if header.processing_id not in processing_ids:
        raise Hl7Rejection("AR", UNSUPPORTED_PROCESSING_ID,
                           f"processing id {header.processing_id!r} is not accepted here;"
                           f" expected one of {', '.join(processing_ids)}", "MSH-11")
    if not _type_accepted(header, message_types):
        code = (UNSUPPORTED_MESSAGE_TYPE if header.message_code not in STANDARD_MESSAGE_TYPES
                or not any(p.split("^")[0] in (header.message_code, "*") for p in message_types)
                else UNSUPPORTED_EVENT_CODE)
        wanted = " or ".join("a standard type (HL7 table 0076)" if p == "*" else p
                             for p in message_types)
        raise Hl7Rejection("AR", code,
                           f"message type {header.message_type!r} is not accepted here;"
                           f" expected {wanted}", "MSH-9")
    present = set(header.segment_ids)
    for segment in required_segments.get(header.message_code, ()):
        if segment not in present:
            raise Hl7Rejection("AE", SEGMENT_SEQUENCE_ERROR,
                               f"required segment {segment} is missing from"
                               f" {header.message_type}", segment)


def _type_accepted(header: Hl7Header, patterns: Collection[str]) -> bool:
    for pattern in patterns:
        if pattern == "*":
            if header.message_code in STANDARD_MESSAGE_TYPES:
                return True
        elif fnmatch.fnmatchcase(header.message_type, pattern) or (
                "^" not in pattern and fnmatch.fnmatchcase(header.message_code, pattern)):
            return True
    return False


def _check_encoding_characters(encoding: str, separator: str) -> None:
    if not 4 <= len(encoding) <= 5 or len(set(encoding)) != len(encoding) \
            or separator in encoding or any(c.isalnum() or c.isspace() for c in encoding):
        raise Hl7Rejection("AE", DATA_TYPE_ERROR,
                           f"MSH-2 (encoding characters) is {encoding!r}; expected four or five"
                           " distinct punctuation characters such as '^~\\&'", "MSH-2")


def _segment_ids(segments: list[str], separator: str) -> tuple[str, ...]:
    ids = []
    for number, segment in enumerate(segments, start=1):
        segment_id = segment[:3]
        if not SEGMENT_ID.match(segment_id) or segment[3:4] not in ("", separator):
            raise Hl7Rejection("AE", SEGMENT_SEQUENCE_ERROR,
                               f"segment {number} starts with {segment[:8]!r}; expected a"
                               f" segment id followed by {separator!r}", f"segment {number}")
        ids.append(segment_id)
    return tuple(ids)


@dataclass(frozen=True)
class _MshFields:
    """The MSH's fields as raw text, numbered as HL7 numbers them (`fields[3]` is MSH-3).

    The listener reads only these, for every message before its ACK: cut by the
    separators MSH-1 and MSH-2 declare, as python-hl7 cuts them, without building
    python-hl7's containers (that parse was a quarter of the listener's CPU at 8
    connections). Messages whose content is used (registry, transformers, QA) are
    parsed whole with python-hl7 (`reading.read_message`).
    """

    fields: tuple[str, ...]
    separators: str
    """python-hl7's order: segment, field, repetition, component, subcomponent."""
    esc: str

    @classmethod
    def read(cls, msh: str, separator: str, encoding: str) -> _MshFields:
        # "MSH|^~\&|A" -> ("MSH", "|", "^~\&", "A"): MSH-1 is the separator itself.
        fields = ("MSH", separator, *msh.split(separator)[1:])
        return cls(fields, "\r" + separator + encoding[1] + encoding[0] + encoding[3],
                   encoding[2])

    def __len__(self) -> int:
        return len(self.fields)


def _text(fields: _MshFields, number: int) -> str:
    """A whole field as text (MSH-10 may hold a separator a sender forgot to escape)."""
    if number >= len(fields):
        return ""
    return unescape(fields.fields[number], fields.esc, fields.separators).strip()


def _component(fields: _MshFields, number: int, component: int = 1) -> str:
    """Component of the first repetition, unescaped by `reading.unescape`; '' when absent."""
    if number >= len(fields):
        return ""
    separators = fields.separators
    raw = fields.fields[number].split(separators[2])[0]
    parts = raw.split(separators[3])
    value = parts[component - 1] if component <= len(parts) else ""
    return unescape(value.split(separators[4])[0], fields.esc, separators).strip()


def _first_component(segments: list[str], segment_id: str, number: int,
                     separator: str, encoding: str) -> str | None:
    """Component 1 of the first repetition of a field of the first such segment."""
    for segment in segments:
        if segment.startswith(segment_id):
            parts = segment.split(separator)
            if len(parts) <= number:
                return None
            value = parts[number].split(encoding[1])[0].split(encoding[0])[0].strip()
            return value[:128] or None
    return None
