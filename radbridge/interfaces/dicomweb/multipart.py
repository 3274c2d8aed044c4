"""A streaming parser for multipart/related bodies (RFC 2046, RFC 2387), as STOW-RS sends.

A STOW-RS request may carry a study of several gigabytes, so the body is never held
whole: `MultipartParser.feed` takes the bytes as they arrive and returns events
(`PartStart` with the part's headers, `PartData` slices of its body, `PartEnd`), so the
caller streams each part to disk. At most one fed chunk plus the delimiter length is
buffered. Errors (all `MultipartError`)::

    MultipartError
    ├── BoundaryError    the Content-Type has no usable boundary parameter
    ├── MalformedBody    no delimiter, a broken delimiter line, or no closing delimiter
    ├── PartHeaderError  a part without headers, or headers that do not parse
    └── PartTooLarge     a part larger than the limit the caller set
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from enum import Enum

from radbridge.errors import RadbridgeError

MAX_HEADER_SIZE = 16 * 1024
"""Bytes a part's header block may take; more means it is not a header block."""
MAX_PADDING = 256
"""Bytes of transport padding (spaces, tabs) allowed after a delimiter before its CRLF."""
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
"""RFC 2046 bchars: 1 to 70 characters, the last not a space."""


class MultipartError(RadbridgeError):
    """A multipart body (or its Content-Type) that cannot be parsed."""


class BoundaryError(MultipartError):
    """The Content-Type names no boundary, or one RFC 2046 does not allow."""


class MalformedBody(MultipartError):
    """The body breaks the delimiter rules: none found, a broken one, or no closing one."""


class PartHeaderError(MultipartError):
    """A part has no header block or one that does not parse."""


class PartTooLarge(MultipartError):
    """A part is larger than the parser's `max_part_size`."""


@dataclass(frozen=True)
class PartStart:
    """A new part begins; header names are lower-cased."""

    index: int
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-cased ('' when absent)."""
        return media_type(self.headers.get("content-type", ""))[0]


@dataclass(frozen=True)
class PartData:
    """The next bytes of the current part's body."""

    index: int
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    """The current part is complete: `size` bytes of body."""

    index: int
    size: int


Event = PartStart | PartData | PartEnd


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """A Content-Type split into its lower-cased media type and its parameters.

    Parameter names are lower-cased; quoted values are unquoted (RFC 2045 syntax).
    """
    message = Message()
    message["content-type"] = value
    params = message.get_params(failobj=[]) or []
    kind = value.split(";", 1)[0].strip().lower()
    return kind, {name.lower(): str(val) for name, val in params[1:]}


def boundary_of(content_type: str) -> bytes:
    """The boundary a multipart Content-Type names; raises BoundaryError."""
    _, params = media_type(content_type)
    boundary = params.get("boundary")
    if boundary is None or boundary == "":
        raise BoundaryError(f"the Content-Type {content_type[:200]!r} has no boundary parameter")
    if not _BOUNDARY.match(boundary):
        raise BoundaryError(f"invalid boundary {boundary[:80]!r}: expected 1 to 70 characters "
                            "of digits, letters and '()+_,-./:=? (not ending in a space)")
    return boundary.encode("ascii")


class _State(Enum):
    PREAMBLE = "preamble"
    DELIMITER = "after a delimiter"
    HEADERS = "in part headers"
    BODY = "in a part body"
    EPILOGUE = "after the closing delimiter"


class MultipartParser:
    """Push parser: `feed` chunks in any sizes, then `close` once the body has ended."""

    def __init__(self, boundary: bytes, *, max_part_size: int | None = None,
                 max_header_size: int = MAX_HEADER_SIZE) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._max_part_size = max_part_size
        self._max_header_size = max_header_size
        self._buffer = bytearray(b"\r\n")  # the first delimiter may open the body
        self._state = _State.PREAMBLE
        self._index = -1
        self._part_size = 0
        self.received = 0
        """Bytes fed so far."""

    @property
    def done(self) -> bool:
        """True once the closing delimiter was read."""
        return self._state is _State.EPILOGUE

    @property
    def pending(self) -> bytes:
        """Bytes held but not yet parsed (at most one fed chunk plus a delimiter)."""
        return bytes(self._buffer)

    @property
    def parts(self) -> int:
        """Parts begun so far."""
        return self._index + 1

    def feed(self, data: bytes) -> Iterator[Event]:
        """The events that `data` completes, lazily: consume them all before feeding more.

        A broken body raises a MultipartError at the event where it breaks, after the
        events before it (the parts that were fine) were delivered.
        """
        self.received += len(data)
        if self._state is _State.EPILOGUE:
            return
        self._buffer += data
        events: list[Event] = []
        while self._step(events):
            yield from events
            events.clear()
        yield from events

    def close(self) -> None:
        """Say the body has ended; raises MalformedBody unless it ended properly."""
        if self._state is _State.EPILOGUE:
            return
        if self._state is _State.PREAMBLE:
            raise MalformedBody(f"no delimiter --{self._boundary} in the body")
        where = f"part {self._index + 1}" if self._index >= 0 else "the body"
        raise MalformedBody(f"the body ended {self._state.value} of {where} without the "
                            f"closing delimiter --{self._boundary}--")

    @property
    def _boundary(self) -> str:
        return self._delimiter[4:].decode("ascii", "replace")

    def _step(self, events: list[Event]) -> bool:
        """Advance one state if the buffer allows; False when more input is needed."""
        if self._state is _State.PREAMBLE:
            return self._preamble()
        if self._state is _State.DELIMITER:
            return self._after_delimiter()
        if self._state is _State.HEADERS:
            return self._headers(events)
        if self._state is _State.BODY:
            return self._body(events)
        self._buffer.clear()
        return False

    def _preamble(self) -> bool:
        found = self._buffer.find(self._delimiter)
        if found < 0:
            keep = len(self._delimiter) - 1
            del self._buffer[:max(0, len(self._buffer) - keep)]
            return False
        del self._buffer[:found + len(self._delimiter)]
        self._state = _State.DELIMITER
        return True

    def _after_delimiter(self) -> bool:
        if len(self._buffer) < 2:
            return False
        if self._buffer[:2] == b"--":
            self._state = _State.EPILOGUE
            self._buffer.clear()
            return False
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_PADDING or self._buffer.strip(b" \t\r"):
                raise self._broken_delimiter()
            return False
        if self._buffer[:end].strip(b" \t"):
            raise self._broken_delimiter()
        del self._buffer[:end + 2]
        self._index += 1
        self._state = _State.HEADERS
        return True

    def _broken_delimiter(self) -> MalformedBody:
        # the bytes themselves are not quoted: they may be a patient's data
        return MalformedBody(f"the delimiter --{self._boundary} in part {self._index + 2} is "
                             "followed by something other than '--' or a line end")

    def _headers(self, events: list[Event]) -> bool:
        part = self._index + 1
        if len(self._buffer) < 2:
            return False
        if self._buffer[:2] == b"\r\n":
            raise PartHeaderError(f"part {part} has no headers (expected at least Content-Type)")
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > self._max_header_size:
                raise PartHeaderError(f"the headers of part {part} exceed "
                                      f"{self._max_header_size} bytes")
            return False
        if end > self._max_header_size:
            raise PartHeaderError(f"the headers of part {part} exceed "
                                  f"{self._max_header_size} bytes")
        headers = _parse_headers(bytes(self._buffer[:end]), part)
        del self._buffer[:end + 4]
        events.append(PartStart(self._index, headers))
        self._part_size = 0
        self._state = _State.BODY
        return True

    def _body(self, events: list[Event]) -> bool:
        found = self._buffer.find(self._delimiter)
        if found < 0:
            safe = len(self._buffer) - (len(self._delimiter) - 1)
            if safe > 0:
                self._emit(events, bytes(self._buffer[:safe]))
                del self._buffer[:safe]
            return False
        if found:
            self._emit(events, bytes(self._buffer[:found]))
        del self._buffer[:found + len(self._delimiter)]
        events.append(PartEnd(self._index, self._part_size))
        self._state = _State.DELIMITER
        return True

    def _emit(self, events: list[Event], data: bytes) -> None:
        self._part_size += len(data)
        if self._max_part_size is not None and self._part_size > self._max_part_size:
            raise PartTooLarge(f"part {self._index + 1} is larger than "
                               f"{self._max_part_size} bytes")
        events.append(PartData(self._index, data))


def _parse_headers(block: bytes, part: int) -> dict[str, str]:
    """RFC 5322 header fields (folded lines joined); names lower-cased."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PartHeaderError(f"the headers of part {part} are not UTF-8 text") from exc
    headers: dict[str, str] = {}
    name = ""
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t") and name:
            headers[name] = f"{headers[name]} {line.strip()}".strip()
            continue
        key, colon, value = line.partition(":")
        key = key.strip().lower()
        if not colon or not key or " " in key:
            # the line is not quoted: in a body that lost its framing it may be patient data
            raise PartHeaderError(f"part {part}: a header line is not 'Name: value'")
        name = key
        headers[name] = value.strip()
    return headers
