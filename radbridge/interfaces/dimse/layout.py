"""Walks the elements of a received data set without reading their values.

pydicom reads a truncated file without complaint (it stops at the end of the file), and
reading to the end means reading the pixel data. This walk seeks over each value, so a
1 GB multi-frame instance costs a few reads: it finds where the Pixel Data element is
and how long it says it is, and proves every element fits in the bytes received, which
is how a truncated data set or a wrong transfer syntax is caught.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from radbridge.errors import RadbridgeError

PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                      b"UR", b"UT", b"UV"})
SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS",
                       b"LO", b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL",
                       b"US"})
VALID_VRS = LONG_VRS | SHORT_VRS
MAX_DEPTH = 32


class LayoutError(RadbridgeError):
    """The bytes are not a data set in the declared transfer syntax, or are cut short."""


@dataclass(frozen=True)
class Layout:
    """Where the top-level Pixel Data element is; length None when undefined (encapsulated)."""

    pixel_offset: int | None = None
    pixel_length: int | None = None
    value_offset: int | None = None
    """Where the Pixel Data value starts (after its element header)."""


def looks_explicit(head: bytes) -> bool:
    """Whether the first element header of a data set carries an explicit VR."""
    return len(head) >= 6 and head[4:6] in VALID_VRS


def walk(fp: BinaryIO, start: int, end: int, *, implicit: bool, little: bool,
         up_to_pixels: bool = False) -> Layout:
    """Walk the data set between `start` and `end` of `fp`; LayoutError if it does not fit.

    `up_to_pixels`: stop at a top-level Pixel Data element of defined length, whose value
    may lie beyond `end` (the head of a data set still arriving).
    """
    fp.seek(start)
    walker = _Walker(fp, end, implicit, "<" if little else ">", up_to_pixels)
    return walker.data_set(depth=0, delimited=False)


class _Walker:
    def __init__(self, fp: BinaryIO, end: int, implicit: bool, order: str,
                 up_to_pixels: bool = False) -> None:
        self.fp, self.end, self.implicit = fp, end, implicit
        self.up_to_pixels = up_to_pixels
        self.tag = struct.Struct(f"{order}HH")
        self.long = struct.Struct(f"{order}L")
        self.short = struct.Struct(f"{order}H")

    def header(self) -> tuple[int, bytes | None, int]:
        """The next element's tag, VR (None when implicit or an item) and value length."""
        raw = self.fp.read(8)
        if len(raw) < 8:
            raise LayoutError("the data set ends inside an element header")
        group, element = self.tag.unpack_from(raw)
        tag = group << 16 | element
        if self.implicit or group == 0xFFFE:
            return tag, None, self.long.unpack_from(raw, 4)[0]
        vr = raw[4:6]
        if vr in LONG_VRS:
            extra = self.fp.read(4)
            if len(extra) < 4:
                raise LayoutError("the data set ends inside an element header")
            return tag, vr, self.long.unpack(extra)[0]
        if vr not in SHORT_VRS:
            raise LayoutError(f"element ({group:04x},{element:04x}) has no valid VR: "
                              "not explicit VR as declared")
        return tag, vr, self.short.unpack_from(raw, 6)[0]

    def data_set(self, depth: int, delimited: bool) -> Layout:
        """Skip elements up to `end` (or an item delimiter when `delimited`)."""
        if depth > MAX_DEPTH:
            raise LayoutError("sequences nested too deep")
        found = Layout()
        while self.fp.tell() < self.end:
            at = self.fp.tell()
            tag, vr, length = self.header()
            if tag == ITEM_END and delimited:
                return found
            if tag in PIXEL_TAGS and depth == 0:
                found = Layout(at, None if length == UNDEFINED else length, self.fp.tell())
                if self.up_to_pixels and length != UNDEFINED:
                    return found
            if length == UNDEFINED:
                if vr not in (None, b"SQ", b"UN", b"OB", b"OW"):
                    raise LayoutError(f"undefined length on a {vr!r} element")
                self.items(depth + 1)
            else:
                self.skip(length)
        if delimited:
            raise LayoutError("the data set ends inside a sequence item")
        return found

    def items(self, depth: int) -> None:
        """Skip the items of an undefined-length sequence or encapsulated pixel data."""
        while True:
            tag, _, length = self.header()
            if tag == SEQUENCE_END:
                return
            if tag != ITEM:
                raise LayoutError(f"expected a sequence item, found tag {tag:08x}")
            if length == UNDEFINED:
                self.data_set(depth, delimited=True)
            else:
                self.skip(length)

    def skip(self, length: int) -> None:
        target = self.fp.tell() + length
        if target > self.end:
            raise LayoutError(f"an element of {length} bytes runs past the end: truncated")
        self.fp.seek(target)
