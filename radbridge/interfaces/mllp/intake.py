"""What an HL7 listener does with each framing event: the record to store, the answer to give.

Every event leaves a stored record, good or bad: a good message is stored for
processing (and acknowledged AA/CA once committed); a refused one is stored as
rejected, for inspection, and answered AE/AR with an ERR segment that says why. The
only events without an answer are those with nobody to answer: stray bytes and a frame
the peer cut off by closing. A repeated MSH-10 from the same sender within the
dedup window is answered again and not stored twice (the receiver's dedup key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from radbridge.engine.config import MllpSource
from radbridge.engine.receiver import Inbound
from radbridge.interfaces.mllp.framing import Event, Frame, Oversize, Stray, Unterminated
from radbridge.mappings.hl7.ack import build_ack
from radbridge.mappings.hl7.errors import Hl7ContentError
from radbridge.mappings.hl7.header import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    SEGMENT_SEQUENCE_ERROR,
    AckCode,
    Hl7Header,
    Hl7Rejection,
    check_acceptance,
    read_header,
)
from radbridge.mappings.hl7.reading import codec_for

CONTENT_TYPE = "application/hl7-v2"


@dataclass(frozen=True)
class Examined:
    """One framing event, judged: what to store and how to answer once it is stored."""

    inbound: Inbound
    header: Hl7Header | None
    rejection: Hl7Rejection | None
    answer: bool
    """False when nobody is waiting for an answer (stray bytes, a frame cut by a close)."""

    @property
    def code(self) -> AckCode:
        return "AA" if self.rejection is None else self.rejection.ack_code


class Hl7Intake:
    """Judges events for one channel's listener; holds no connection state."""

    def __init__(self, channel: str, config: MllpSource) -> None:
        self._channel = channel
        self._config = config

    def examine(self, event: Event, peer: str) -> Examined:
        if isinstance(event, Frame):
            return self._frame(event.content, peer)
        if isinstance(event, Oversize):
            header = _header_or_none(event.kept)
            problem = Hl7Rejection(
                "AR", APPLICATION_INTERNAL_ERROR,
                f"message of {event.size} bytes exceeds this channel's max_message_size of"
                f" {self._config.max_message_size} bytes; the first {len(event.kept)} bytes"
                " are kept")
            return self._refused(event.kept, header, problem, peer, answer=True)
        if isinstance(event, Unterminated):
            how = ("the connection closed" if event.at_close
                   else "a new start block (0x0B) arrived")
            problem = Hl7Rejection(
                "AE", SEGMENT_SEQUENCE_ERROR,
                f"MLLP frame of {event.size} bytes has no end block (0x1C 0x0D): {how}"
                " before it ended")
            return self._refused(event.kept, _header_or_none(event.kept), problem, peer,
                                 answer=not event.at_close)
        stray: Stray = event
        problem = Hl7Rejection("AE", SEGMENT_SEQUENCE_ERROR,
                               f"{stray.size} bytes arrived outside an MLLP frame (no start"
                               " block 0x0B before them)")
        return self._refused(stray.kept, None, problem, peer, answer=False)

    def acknowledgement(self, examined: Examined, *, stored: bool,
                        paused: bool = False) -> bytes | None:
        """The framed-ready ACK bytes; AR when the record could not be stored, saying
        why: the channel is paused, or the store is unavailable."""
        rejection = examined.rejection
        code = examined.code
        if not stored:
            code = "AR"
            why = "the channel is paused" if paused else "the message store is unavailable"
            rejection = Hl7Rejection("AR", APPLICATION_INTERNAL_ERROR,
                                     f"the channel cannot accept messages now: {why};"
                                     " send again later")
        text = build_ack(examined.header, code, application=self._config.ack_application,
                         facility=self._config.ack_facility, at=datetime.now(UTC),
                         rejection=rejection)
        if text is None:
            return None
        return text.encode(_codec(examined.header) or "utf-8", errors="replace")

    def _frame(self, content: bytes, peer: str) -> Examined:
        header: Hl7Header | None = None
        try:
            header = read_header(content.decode("latin-1"))
            _decode(content, header, self._config.accept.encoding)
            accept = self._config.accept
            check_acceptance(header, versions=accept.versions,
                             message_types=accept.message_types,
                             processing_ids=accept.processing_ids,
                             required_segments=accept.required_segments)
        except Hl7Rejection as problem:
            return self._refused(content, header, problem, peer, answer=True)
        inbound = Inbound(
            channel=self._channel, content_type=CONTENT_TYPE, source=f"mllp:{peer}",
            content=content, dedup_key=f"hl7:{header.sender}:{header.control_id}"[:255],
            dedup_window=self._config.dedup_window, patient_id=header.patient_id,
            accession=header.accession, metadata=_metadata(header),
        )
        return Examined(inbound, header, None, answer=True)

    def _refused(self, content: bytes, header: Hl7Header | None, problem: Hl7Rejection,
                 peer: str, *, answer: bool) -> Examined:
        inbound = Inbound(
            channel=self._channel, content_type=CONTENT_TYPE, source=f"mllp:{peer}",
            content=content, rejected=_describe(problem),
            patient_id=header.patient_id if header else None,
            accession=header.accession if header else None,
            metadata=_metadata(header) if header else {},
        )
        return Examined(inbound, header, problem, answer=answer)


def _describe(problem: Hl7Rejection) -> str:
    where = f" at {problem.location}" if problem.location else ""
    return f"{problem.ack_code} {problem.error_code}{where}: {problem.reason}"


def _metadata(header: Hl7Header) -> dict[str, str]:
    """What channel filters and ordering keys may use (identifiers, never names)."""
    return {
        "hl7.type": header.message_type, "hl7.control_id": header.control_id[:64],
        "hl7.sender": header.sender[:128], "hl7.version": header.version[:16],
        "hl7.processing_id": header.processing_id[:8],
    }


def _header_or_none(content: bytes) -> Hl7Header | None:
    try:
        return read_header(content.decode("latin-1"))
    except Hl7Rejection:
        return None


def _codec(header: Hl7Header | None) -> str | None:
    if header is None or not header.charset:
        return None
    try:
        return codec_for(header.charset)
    except Hl7ContentError:
        return None


def _decode(content: bytes, header: Hl7Header, default: str) -> str:
    try:
        codec = codec_for(header.charset) if header.charset else default
    except Hl7ContentError as exc:
        raise Hl7Rejection("AE", DATA_TYPE_ERROR,
                           f"MSH-18 character set {header.charset[:20]!r} is not one we know",
                           "MSH-18") from exc
    try:
        return content.decode(codec)
    except UnicodeDecodeError as exc:
        declared = f"MSH-18 says {header.charset!r}" if header.charset else \
            f"no MSH-18, so the channel's encoding {default!r} applies"
        raise Hl7Rejection("AE", DATA_TYPE_ERROR,
                           f"content is not valid {codec} at byte {exc.start} ({declared})",
                           "MSH-18") from exc
