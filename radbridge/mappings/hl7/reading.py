"""Field access, escapes, dates and character sets for reading whole HL7 v2 messages.

python-hl7 splits the message; this module addresses what it split the way the standard
numbers it (PID-3.4.1: field 3, component 4, subcomponent 1, first repetition) and turns
values into Python ones. Unescaping is done here rather than by `hl7.util.unescape`,
which logs the field's content on a malformed escape: content may be PHI.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

import hl7

from radbridge.mappings.hl7.errors import Hl7ContentError

_DTM = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?"
)
_UID = re.compile(r"\d+(?:\.\d+)*")
_CHARSETS = {
    "ASCII": "ascii", "ISOIR6": "ascii", "UNICODEUTF8": "utf-8", "UTF8": "utf-8",
    "ISOIR192": "utf-8", "ISOIR100": "latin-1", "ISOIR101": "iso8859-2",
    "ISOIR144": "iso8859-5", "ISOIR127": "iso8859-6", "ISOIR126": "iso8859-7",
    "ISOIR138": "iso8859-8", "ISOIR148": "iso8859-9", "GB180302000": "gb18030",
    "KSX1001": "euc-kr", "BIG5": "big5",
}


def decode(content: bytes) -> str:
    """The message's text: in MSH-18's character set if given, else UTF-8, else Latin-1."""
    charset = _declared_charset(content)
    if charset:
        try:
            return content.decode(codec_for(charset))
        except UnicodeDecodeError:
            raise Hl7ContentError("MSH-18 (character set)",
                                  f"says {charset[:20]!r} but the content is not") from None
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return content.decode("latin-1")


def codec_for(charset: str) -> str:
    """The Python codec for an MSH-18 value (HL7 table 0211 names, or a codec's own name).

    Raises Hl7ContentError for a name no codec answers to.
    """
    name = _CHARSETS.get(re.sub(r"[\s/_-]", "", charset.upper()))
    if name is None and (number := re.fullmatch(r"8859/(\d{1,2})", charset.strip())):
        name = f"iso8859-{number.group(1)}"
    try:
        return name or codecs.lookup(charset).name
    except LookupError:
        raise Hl7ContentError("MSH-18 (character set)",
                              f"{charset[:20]!r} is not a character set we know") from None


def _declared_charset(content: bytes) -> str:
    first = content.lstrip(b"\x0b \t\r\n").split(b"\r", 1)[0].split(b"\n", 1)[0]
    text = first.decode("latin-1")
    if not text.startswith("MSH") or len(text) < 8:
        return ""
    fields = text.split(text[3])
    return fields[17].split(text[5])[0].strip() if len(fields) > 17 else ""


class Segment:
    """One segment, addressed by the standard's 1-based field/component numbers."""

    def __init__(self, name: str, fields: list[Any], unescape: Callable[[str], str]) -> None:
        self.name = name
        self._fields = fields
        self._unescape = unescape

    @classmethod
    def empty(cls, name: str) -> Segment:
        """A segment the message does not have: every field reads as empty."""
        return cls(name, [name], lambda value: value)

    def repeats(self, field: int) -> int:
        return len(self._fields[field]) if field < len(self._fields) else 0

    def text(self, field: int, component: int = 1, sub: int = 1, *, rep: int = 1) -> str:
        """The unescaped value, '' when absent; HL7's null '""' also reads as ''."""
        value = self._unescape(self._raw(field, component, sub, rep)).strip()
        return "" if value == '""' else value

    def hd(self, field: int, component: int, rep: int = 1) -> str:
        """An HD component (assigning authority): its namespace id, else its universal id."""
        return self.text(field, component, 1, rep=rep) or self.text(field, component, 2, rep=rep)

    def joined(self, field: int, last: int, *, start: int = 1, rep: int = 1) -> str:
        """Components start..last of a repetition, '^'-joined, trailing empties dropped."""
        parts = [self.text(field, c, rep=rep) for c in range(start, last + 1)]
        return "^".join(parts).rstrip("^")

    def _raw(self, field: int, component: int, sub: int, rep: int) -> str:
        if field >= len(self._fields) or rep > len(self._fields[field]):
            return ""
        value: Any = self._fields[field][rep - 1]
        for index in (component, sub):
            if isinstance(value, str):
                return value if index == 1 else ""
            if index > len(value):
                return ""
            value = value[index - 1]
        return str(value)


class Reader:
    """A parsed message: its segments by name and the time zone its times default to."""

    def __init__(self, segments: list[Segment]) -> None:
        self._segments = segments
        self.default_tz: tzinfo = UTC
        msh_time = self.segment("MSH").text(7)
        match = _DTM.fullmatch(msh_time)
        if match and match.group(8):
            self.default_tz = _offset(match) or UTC

    def segment(self, name: str) -> Segment:
        return self.required(name, "")

    def optional(self, name: str) -> Segment | None:
        return next((s for s in self._segments if s.name == name), None)

    def required(self, name: str, why: str) -> Segment:
        found = self.optional(name)
        if found is None:
            raise Hl7ContentError(name, f"segment is missing{': ' + why if why else ''}")
        return found

    def groups(self, start: str) -> list[dict[str, Segment]]:
        """Each `start` segment with the first of each segment kind after it, up to the next."""
        groups: list[dict[str, Segment]] = []
        for segment in self._segments:
            if segment.name == start:
                groups.append({start: segment})
            elif groups:
                groups[-1].setdefault(segment.name, segment)
        return groups

    def datetime(self, segment: Segment, field: int, label: str,
                 component: int = 1) -> datetime | None:
        return hl7_datetime(segment.text(field, component), label, self.default_tz)


def read_message(text: str) -> Reader:
    """Split one message (CR, LF or CRLF between segments); batches are refused."""
    text = re.sub(r"\r\n|\n", "\r", text.strip("\x0b\x1c\x00 \t\r\n"))
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7ContentError("MSH", "segment is missing: the content does not start with MSH")
    if (count := len(re.findall(r"(?:^|\r)MSH", text))) > 1:
        raise Hl7ContentError("MSH", f"appears {count} times: one message per delivery, please")
    try:
        message = hl7.parse(text)
    except (hl7.HL7Exception, ValueError, IndexError) as exc:
        raise Hl7ContentError("MSH", f"the message does not parse ({type(exc).__name__})") \
            from exc
    esc, separators = str(message.esc), str(message.separators)
    segments = [Segment(str(raw[0][0]), list(raw), lambda v: unescape(v, esc, separators))
                for raw in message]
    return Reader(segments)


def unescape(value: str, esc: str, separators: str) -> str:
    r"""Replace \F\ \S\ \T\ \R\ \E\, \Xhh..\ and \.br\; drop formatting and unknown escapes.

    `separators` is python-hl7's: segment, field, repetition, component, subcomponent.
    """
    if esc not in value:
        return value
    known = {"F": separators[1], "R": separators[2], "S": separators[3],
             "T": separators[4], "E": esc, ".br": "\n"}

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in known:
            return known[code]
        if re.fullmatch(r"X(?:[0-9A-Fa-f]{2})+", code):
            raw = bytes.fromhex(code[1:])
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.decode("latin-1")
        return ""

    e = re.escape(esc)
    return re.sub(f"{e}([^{e}\r]*){e}", replace, value)


def hl7_datetime(value: str, label: str, default_tz: tzinfo) -> datetime | None:
    """YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ] as an aware UTC time; None when empty."""
    if not value:
        return None
    match = _DTM.fullmatch(value)
    if match is None:
        raise Hl7ContentError(label, "is not an HL7 date/time (YYYYMMDDHHMMSS[+ZZZZ])")
    year, month, day, hour, minute, second, fraction = match.groups()[:7]
    try:
        moment = datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
            int(second or 0), int((fraction or "0").ljust(6, "0")),
            tzinfo=_offset(match) or default_tz,
        )
    except ValueError:
        raise Hl7ContentError(label, "is not a valid date/time") from None
    return moment.astimezone(UTC)


def hl7_date(value: str, label: str) -> date | None:
    """The calendar date of an HL7 date or date/time, as written (its offset ignored)."""
    if not value:
        return None
    match = _DTM.fullmatch(value)
    if match is None:
        raise Hl7ContentError(label, "is not an HL7 date (YYYYMMDD)")
    year, month, day = match.groups()[:3]
    try:
        return date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        raise Hl7ContentError(label, "is not a valid date") from None


def dicom_uid(value: str, label: str) -> str | None:
    """A DICOM UID (digits and dots, at most 64 characters); None when empty."""
    if not value:
        return None
    if len(value) > 64 or not _UID.fullmatch(value):
        raise Hl7ContentError(label, "is not a DICOM UID (digits and dots, at most 64)")
    return value


def _offset(match: re.Match[str]) -> tzinfo | None:
    """The +/-ZZZZ offset written in the value, None if none; ValueError if out of range."""
    sign, hours, minutes = match.group(8), match.group(9), match.group(10)
    if sign is None:
        return None
    if int(hours) > 14 or int(minutes) > 59:
        raise ValueError("UTC offset out of range")
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-delta if sign == "-" else delta)
