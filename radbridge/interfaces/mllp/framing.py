"""MLLP framing without I/O: bytes in, frames and framing faults out.

A frame is 0x0B, the message, 0x1C 0x0D. TCP delivers it in arbitrary pieces: one read
may hold half a frame, several frames, or an end marker split across two reads. The
decoder keeps memory bounded: a frame longer than `max_size` is not buffered further
(its first `keep` bytes are kept for the record) and is reported when its end arrives.
Faults are events, not exceptions, so one bad frame never costs the connection the
frames that follow it:

    Frame         a complete message
    Oversize      a frame longer than max_size (first `keep` bytes, total size)
    Unterminated  a frame cut short by a new start block, or by the end of the stream
    Stray         bytes outside any frame (whitespace between frames is ignored)
"""

from __future__ import annotations

from dataclasses import dataclass

END = b"\x1c\x0d"
_START_BYTE = b"\x0b"
KEEP = 64 * 1024


@dataclass(frozen=True)
class Frame:
    content: bytes


@dataclass(frozen=True)
class Oversize:
    kept: bytes
    size: int


@dataclass(frozen=True)
class Unterminated:
    kept: bytes
    size: int
    at_close: bool


@dataclass(frozen=True)
class Stray:
    kept: bytes
    size: int


Event = Frame | Oversize | Unterminated | Stray


def frame(content: bytes) -> bytes:
    """Wrap one message in MLLP's start and end blocks."""
    return b"\x0b" + content + END


class FrameDecoder:
    """Incremental MLLP decoder; see the module docstring for the events."""

    def __init__(self, max_size: int, keep: int = KEEP) -> None:
        self._max_size = max_size
        self._keep = min(keep, max_size)
        self._in_frame = False
        self._buffer = bytearray()
        self._size = 0  # bytes of the current frame, counting those not buffered
        self._oversize = False
        self._stray = bytearray()
        self._stray_size = 0

    @property
    def buffered(self) -> int:
        """Bytes held for the frame being read (bounded by max_size + 1)."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        view = memoryview(data)
        position = 0
        while position < len(data):
            if self._in_frame:
                position = self._read_frame(data, view, position, events)
            else:
                position = self._read_outside(data, view, position, events)
        return events

    def close(self) -> list[Event]:
        """The stream ended: report a frame left open and stray bytes."""
        events: list[Event] = []
        if self._in_frame:
            events.append(Unterminated(bytes(self._buffer[:self._keep]), self._size, True))
            self._reset_frame()
        self._flush_stray(events)
        return events

    def _read_outside(self, data: bytes, view: memoryview, position: int,
                      events: list[Event]) -> int:
        start = data.find(_START_BYTE, position)
        end = len(data) if start < 0 else start
        if end > position:
            self._note_stray(view[position:end])
        if start < 0:
            return len(data)
        self._flush_stray(events)
        self._in_frame = True
        return start + 1

    def _read_frame(self, data: bytes, view: memoryview, position: int,
                    events: list[Event]) -> int:
        # An end marker may straddle reads: 0x1C ended the last one, 0x0D begins this one.
        if self._buffer.endswith(b"\x1c") and data[position] == 0x0D:
            self._buffer.pop()
            self._size -= 1
            self._finish_frame(events)
            return position + 1
        end = data.find(END, position)
        restart = data.find(_START_BYTE, position, len(data) if end < 0 else end)
        if restart >= 0:
            self._append(view[position:restart])
            events.append(Unterminated(bytes(self._buffer[:self._keep]), self._size, False))
            self._reset_frame()
            self._in_frame = True
            return restart + 1
        if end < 0:
            self._append(view[position:])
            return len(data)
        self._append(view[position:end])
        self._finish_frame(events)
        return end + len(END)

    def _append(self, chunk: memoryview) -> None:
        self._size += len(chunk)
        if self._oversize:
            # Only the kept prefix and a possible half end marker are held.
            tail = bytes(chunk[-1:])
            self._buffer[self._keep:] = tail
            return
        self._buffer += chunk
        if len(self._buffer) > self._max_size:
            self._oversize = True
            tail = bytes(self._buffer[-1:])
            del self._buffer[self._keep:]
            self._buffer += tail

    def _finish_frame(self, events: list[Event]) -> None:
        if self._oversize:
            events.append(Oversize(bytes(self._buffer[:self._keep]), self._size))
        else:
            events.append(Frame(bytes(self._buffer)))
        self._reset_frame()

    def _reset_frame(self) -> None:
        self._in_frame = False
        self._buffer = bytearray()
        self._size = 0
        self._oversize = False

    def _note_stray(self, chunk: memoryview) -> None:
        if not self._stray_size and not bytes(chunk).strip():
            return  # CR/LF or spaces between frames: common, harmless
        self._stray_size += len(chunk)
        room = self._keep - len(self._stray)
        if room > 0:
            self._stray += chunk[:room]

    def _flush_stray(self, events: list[Event]) -> None:
        if self._stray_size:
            events.append(Stray(bytes(self._stray), self._stray_size))
        self._stray = bytearray()
        self._stray_size = 0
