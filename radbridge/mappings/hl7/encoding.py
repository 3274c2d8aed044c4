"""HL7 v2 wire text: escaping, data types, and segments built from field positions.

Builders never paste user text into a message themselves: a plain `str` handed to
`components`, `repetitions` or `segment` is escaped there, and what is already in wire
form travels as `Encoded`, which is never escaped twice. Lengths follow the v2.5.1
data types (ST 199, IS 20, NM 16, TX/FT 65536): an identifier that does not fit is an
`Hl7EncodingError` naming the field, a display text is cut to fit.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from radbridge.errors import RadbridgeError

VERSION = "2.5.1"
ENCODING_CHARACTERS = "^~\\&"
CHARACTER_SET = "UNICODE UTF-8"  # MSH-18: the payload is sent as UTF-8
SEGMENT_SEPARATOR = "\r"
PROCESSING_IDS = ("P", "T", "D")  # HL7 table 0103: production, training, debugging

ST_MAX = 199
IS_MAX = 20
NM_MAX = 16
TEXT_MAX = 65536

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class Hl7EncodingError(RadbridgeError, ValueError):
    """A value cannot be carried by its HL7 field; `field` names it ('PID-3.4').

    The message says why without quoting the value, which may be PHI.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class Encoded(str):
    """Text already in HL7 wire form: the joining helpers pass it through as it is."""

    __slots__ = ()


Value = str | Encoded | None


@dataclass(frozen=True)
class Endpoint:
    """An application and facility (MSH-3/4 or MSH-5/6), each an HD namespace id."""

    application: str = ""
    facility: str = ""


STANDARD_DELIMITERS = "|^~\\&"
"""MSH-1 followed by MSH-2: field, component, repetition, escape, subcomponent."""


@functools.cache
def _escapes(delimiters: str) -> dict[str, str]:
    field, component, repetition, esc, sub = (delimiters[i] for i in range(5))
    return {esc: f"{esc}E{esc}", field: f"{esc}F{esc}", component: f"{esc}S{esc}",
            sub: f"{esc}T{esc}", repetition: f"{esc}R{esc}"}


def _escape_char(char: str, delimiters: str = STANDARD_DELIMITERS) -> str:
    escapes = _escapes(delimiters)
    if char in escapes:
        return escapes[char]
    if ord(char) < 0x20 or ord(char) == 0x7F:
        esc = delimiters[3]
        return f"{esc}X{ord(char):02X}{esc}"  # control characters (CR, LF, MLLP framing)
    return char


def escape(text: str, delimiters: str = STANDARD_DELIMITERS) -> Encoded:
    """`text` with delimiters and control characters as HL7 escape sequences.

    `delimiters` is MSH-1 + MSH-2 of the message the text goes into: an ACK answers in
    its sender's delimiters.
    """
    if isinstance(text, Encoded):
        return text
    if text.isprintable() and not any(char in text for char in _escapes(delimiters)):
        return Encoded(text)  # the usual case (ids, names): nothing to escape
    return Encoded("".join(_escape_char(char, delimiters) for char in text))


def text_lines(text: str) -> list[str]:
    """`text` split at any line break, trailing blank lines dropped."""
    lines = _LINE_BREAK.split(text)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def formatted_text(lines: Iterable[str], field: str) -> Encoded:
    """Lines as one FT value, joined by the `\\.br\\` line-break command."""
    return _checked(Encoded("\\.br\\".join(escape(line) for line in lines)), field, TEXT_MAX)


def text(value: str, field: str) -> Encoded:
    """One TX/FT value without line breaks (a TX line of a multi-OBX report)."""
    return _checked(escape(value), field, TEXT_MAX)


def string(value: str, field: str, limit: int = ST_MAX) -> Encoded:
    """An identifier or code (ST): escaped, and an error if it is longer than `limit`."""
    return _checked(escape(value), field, limit)


def namespace(value: str, field: str) -> Encoded:
    """A namespace id (IS, at most 20 characters), e.g. an assigning authority."""
    return _checked(escape(value), field, IS_MAX)


def display(value: str, limit: int = ST_MAX) -> Encoded:
    """A display text (ST), cut so that its escaped form fits in `limit`."""
    out: list[str] = []
    size = 0
    for char in value:
        piece = _escape_char(char)
        if size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
    return Encoded("".join(out))


def _checked(value: Encoded, field: str, limit: int) -> Encoded:
    if len(value) > limit:
        raise Hl7EncodingError(field, f"{len(value)} characters escaped, at most {limit} fit")
    return value


def components(*parts: Value) -> Encoded:
    """Parts joined by '^', trailing empty ones dropped; plain strings are escaped."""
    return _join("^", parts)


def subcomponents(*parts: Value) -> Encoded:
    """Parts joined by '&', trailing empty ones dropped; plain strings are escaped."""
    return _join("&", parts)


def repetitions(*values: Value) -> Encoded:
    """Values joined by '~'; plain strings are escaped."""
    return _join("~", values)


def _join(separator: str, parts: Iterable[Value]) -> Encoded:
    items = ["" if part is None else escape(part) for part in parts]
    while items and not items[-1]:
        items.pop()
    return Encoded(separator.join(items))


def segment(name: str, fields: Mapping[int, Value]) -> str:
    """A segment from {position: value}; positions left out are empty."""
    last = max((position for position, value in fields.items() if value), default=0)
    values = [fields.get(position) for position in range(1, last + 1)]
    return "|".join([name, *("" if value is None else escape(value) for value in values)])


def msh(
    *, sending: Endpoint, receiving: Endpoint, time: datetime, message_type: tuple[str, str, str],
    control_id: str, processing_id: str = "P",
) -> str:
    """The MSH segment of a v2.5.1 message sent as UTF-8."""
    if processing_id not in PROCESSING_IDS:
        raise Hl7EncodingError("MSH-11", f"expected one of {', '.join(PROCESSING_IDS)}")
    fields: dict[int, Value] = {
        3: namespace(sending.application, "MSH-3"),
        4: namespace(sending.facility, "MSH-4"),
        5: namespace(receiving.application, "MSH-5"),
        6: namespace(receiving.facility, "MSH-6"),
        7: dtm(time),
        9: components(*message_type),
        10: string(control_id, "MSH-10", 20),
        11: processing_id,
        12: VERSION,
        18: CHARACTER_SET,
    }
    # MSH-1 is the field separator itself, so every later field sits one place left.
    shifted = {position - 1: value for position, value in fields.items()}
    return segment("MSH", {1: Encoded(ENCODING_CHARACTERS), **shifted})


def message(segments: Iterable[str]) -> str:
    """Segments joined by carriage returns (MLLP framing is the transport's job)."""
    return SEGMENT_SEPARATOR.join(segments)


def dtm(value: datetime) -> Encoded:
    """A DTM to the second with its UTC offset: 20240501101500+0200."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("a DTM needs a datetime with a time zone offset")
    if offset.total_seconds() % 60:  # DTM offsets are whole minutes: send UTC instead
        value, offset = value.astimezone(UTC), timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return Encoded(
        f"{value.year:04d}{value.month:02d}{value.day:02d}"
        f"{value.hour:02d}{value.minute:02d}{value.second:02d}{sign}{hours:02d}{minutes:02d}"
    )


def dt(value: date) -> Encoded:
    """A DT: 19700131."""
    return Encoded(f"{value.year:04d}{value.month:02d}{value.day:02d}")


def nm(value: float, field: str) -> Encoded:
    """A NM: plain decimal (no exponent), rounded to fit 16 characters."""
    if not math.isfinite(value):
        raise Hl7EncodingError(field, "NaN and infinity are not HL7 numbers")
    number = Decimal(repr(float(value)))
    whole = len(str(abs(int(number)))) + (number < 0)
    places = max(NM_MAX - whole - 1, 0)
    while True:
        plain = _plain(number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN))
        if len(plain) <= NM_MAX:
            return Encoded(plain)
        if places == 0:  # rounding cannot help: too many digits before the point
            raise Hl7EncodingError(field, f"more than {NM_MAX} characters before the point")
        places -= 1


def _plain(number: Decimal) -> str:
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def derived_control_id(*key: str) -> str:
    """A 20-character MSH-10 that is the same every time for the same key."""
    digest = hashlib.sha256("\x1f".join(key).encode("utf-8")).hexdigest().upper()
    return "RB" + digest[:18]
