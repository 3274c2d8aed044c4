"""Reading a received DICOM Part 10 file's header without loading its pixel data.

STOW-RS parts are streamed to disk first; this reads the header from that file and
the Pixel Data element's declared length, so a 1 GB instance is judged while only its
header is in memory.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from radbridge.mappings.dicom.errors import DicomContentError

log = logging.getLogger(__name__)

PIXEL_GROUP = 0x7FE0
PIXEL_ELEMENTS = frozenset({0x0008, 0x0009, 0x0010})
"""Float, Double Float and Pixel Data: pydicom's stop_before_pixels stops at them."""
_IMAGE_KEYWORDS = ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")
UNDEFINED_LENGTH = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR",
                       b"UT", b"SV", b"UV"})


@dataclass(frozen=True)
class Part10Header:
    """A file's data set up to (not including) Pixel Data, and what the file says of it."""

    dataset: Dataset
    transfer_syntax_uid: str
    has_pixel_data: bool
    pixel_data_length: int | None
    """The Pixel Data element's declared length; None when absent or undefined."""
    missing_bytes: int
    """How many bytes the declared pixel data reaches past the end of the file."""
    truncated: bool = False
    """The last element before Pixel Data (or the end) does not end where it should."""

    def problems(self) -> list[str]:
        """What the file's own structure says is wrong (pydicom reads a cut file quietly)."""
        found = []
        if self.truncated:
            found.append("the file ends inside a data element (truncated)")
        if self.missing_bytes:
            found.append(f"the file ends {self.missing_bytes} bytes before the end of its "
                         "pixel data")
        if not self.has_pixel_data and all(k in self.dataset for k in _IMAGE_KEYWORDS):
            found.append("the Image Pixel attributes are there but Pixel Data is not "
                         "(truncated?)")
        return found


def read_part10_header(path: Path) -> Part10Header:
    """Raises DicomContentError when the file is not a readable DICOM Part 10 file."""
    with path.open("rb") as file:
        dataset = _dcmread(file)
        position = file.tell()
        element_header = file.read(12)
        size = path.stat().st_size
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    if not syntax:
        raise DicomContentError("TransferSyntaxUID", "is missing from the file meta information")
    uid = UID(str(syntax))
    if uid.is_deflated:  # positions are in the inflated stream: nothing more to see
        return Part10Header(dataset, str(uid), "PixelData" in dataset, None, 0)
    found = _pixel_element(element_header, uid)
    truncated = not _last_element_ends_at(dataset, position)
    if found is None:
        return Part10Header(dataset, str(uid), False, None, 0, truncated)
    header_length, length = found
    if length == UNDEFINED_LENGTH:
        return Part10Header(dataset, str(uid), True, None, 0, truncated)
    missing = max(0, position + header_length + length - size)
    return Part10Header(dataset, str(uid), True, length, missing, truncated)


def _last_element_ends_at(dataset: Dataset, position: int) -> bool:
    """Whether the last element read ends where reading stopped (False: cut inside it).

    Only elements still raw (not yet converted by pydicom) with a defined length can be
    judged; others count as complete.
    """
    tags = list(dataset.keys())
    if not tags:
        return True
    last = dataset.get_item(tags[-1])
    value_tell = getattr(last, "value_tell", None)
    length = getattr(last, "length", None)
    if not isinstance(value_tell, int) or not isinstance(length, int) \
            or length == UNDEFINED_LENGTH:
        return True
    return value_tell + length == position


def _dcmread(file: object) -> Dataset:
    try:
        return pydicom.dcmread(file, stop_before_pixels=True)  # type: ignore[arg-type]
    except Exception as exc:
        # Untrusted bytes reach deep into pydicom, which raises many types; each one means
        # "cannot understand". Only the type is kept: messages may quote values (PHI).
        log.debug("unreadable DICOM part: %s", type(exc).__name__)
        raise DicomContentError("", f"not a readable DICOM Part 10 file "
                                    f"({type(exc).__name__})") from exc


def _pixel_element(header: bytes, syntax: UID) -> tuple[int, int] | None:
    """(element header length, value length) when `header` starts the Pixel Data element."""
    if len(header) < 8:
        return None
    order = "<" if syntax.is_little_endian else ">"
    group, element = struct.unpack(f"{order}HH", header[:4])
    if group != PIXEL_GROUP or element not in PIXEL_ELEMENTS:
        return None
    if syntax.is_implicit_VR:
        return 8, int(struct.unpack(f"{order}I", header[4:8])[0])
    if header[4:6] in _LONG_VRS:
        if len(header) < 12:
            return None
        return 12, int(struct.unpack(f"{order}I", header[8:12])[0])
    return 8, int(struct.unpack(f"{order}H", header[6:8])[0])
