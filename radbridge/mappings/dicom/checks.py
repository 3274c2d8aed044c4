"""Checks that an instance is what its header and its transport say it is.

The SCP and the STOW-RS endpoint store an instance that fails one of these as rejected
(kept for inspection, never processed) instead of passing it to inference. Every reason
names attributes and numbers only, never a value that could be PHI.
"""

from __future__ import annotations

from typing import Literal

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pydicom.valuerep import VR

from radbridge.mappings.dicom import values

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_VR_CODES = frozenset(vr.value.encode("ascii") for vr in VR)
_FIRST_GROUP_LIMIT = 0x00FF
"""A data set's first group is 0008 (SOP Class UID) or below it in every composite
object; the groups that MPPS and commitment data sets start with are below 00FF too."""


def expected_pixel_bytes(dataset: Dataset) -> int | None:
    """Bytes native (uncompressed) pixel data must have: rows x columns x samples x frames
    x bits allocated / 8, padded to an even length; None when an attribute it needs is
    missing or not a positive number.
    """
    rows = values.integer(dataset, "Rows")
    columns = values.integer(dataset, "Columns")
    bits = values.integer(dataset, "BitsAllocated")
    samples = _optional_count(dataset, "SamplesPerPixel")
    frames = _optional_count(dataset, "NumberOfFrames")
    factors = (rows, columns, bits, samples, frames)
    if any(factor is None or factor <= 0 for factor in factors):
        return None
    total_bits = 1
    for factor in factors:
        total_bits *= factor or 1
    length = -(-total_bits // 8)
    return length + length % 2


def instance_problems(
    dataset: Dataset,
    *,
    pixel_data_length: int | None,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
    transfer_syntax_uid: str | None = None,
    has_pixel_data: bool | None = None,
) -> list[str]:
    """Why this instance should not be processed; an empty list when it is fine.

    `pixel_data_length` is the length in the Pixel Data element's header, None when the
    data set has no pixel data or when it is undefined (encapsulated, compressed). The
    length is only checked for native transfer syntaxes. `sop_class_uid` and
    `sop_instance_uid` are what the transport said (the C-STORE's Affected SOP Class and
    Instance UIDs); `has_pixel_data` says there is pixel data when a header-only
    `dataset` cannot show it (default: the length is known or the dataset has it).
    """
    problems = _identity_problems(dataset, sop_class_uid, sop_instance_uid)
    if has_pixel_data is None:
        has_pixel_data = pixel_data_length is not None or any(
            keyword in dataset for keyword in _PIXEL_KEYWORDS)
    if has_pixel_data:
        problems += _pixel_problems(dataset, pixel_data_length, transfer_syntax_uid)
    return problems


def looks_like_wrong_syntax(first_bytes: bytes, declared_uid: str) -> str | None:
    """Why the data set's first element does not look encoded in `declared_uid`, or None.

    `first_bytes` are the first bytes of the data set (after the File Meta Information
    of a file, or a DIMSE data set); eight are enough. A file whose meta header says
    explicit VR but whose data set is implicit VR (or the reverse) parses into garbage
    or fails deep inside a parser; this tells which at the first element. Deflated and
    unknown transfer syntaxes, and too few bytes, are not judged (None).
    """
    syntax = _known_syntax(declared_uid)
    if syntax is None or syntax.is_deflated or len(first_bytes) < 8:
        return None
    order: Literal["little", "big"] = "little" if syntax.is_little_endian else "big"
    group = int.from_bytes(first_bytes[0:2], order)
    swapped = int.from_bytes(first_bytes[0:2], "big" if order == "little" else "little")
    if group > _FIRST_GROUP_LIMIT >= swapped:
        return f"the data set is not in the declared byte order ({order} endian)"
    element = int.from_bytes(first_bytes[2:4], order)
    vr_code = first_bytes[4:6]
    if syntax.is_implicit_VR:
        if vr_code in _VR_CODES and _could_be_vr(group, element, vr_code):
            return "the data set is explicit VR but implicit VR was declared"
    elif vr_code not in _VR_CODES:
        return "the data set is implicit VR but explicit VR was declared"
    return None


def _identity_problems(
    dataset: Dataset, sop_class_uid: str | None, sop_instance_uid: str | None
) -> list[str]:
    problems = []
    for keyword, transported in (("SOPClassUID", sop_class_uid),
                                 ("SOPInstanceUID", sop_instance_uid)):
        if transported is None:
            continue
        in_dataset = values.text(dataset, keyword)
        if in_dataset != transported.strip(values.PAD):
            problems.append(f"{keyword} in the data set differs from the one it was sent as")
    return problems


def _pixel_problems(
    dataset: Dataset, pixel_data_length: int | None, transfer_syntax_uid: str | None
) -> list[str]:
    missing = [keyword for keyword in ("Rows", "Columns", "BitsAllocated")
               if values.integer(dataset, keyword) is None]
    if missing:
        return [f"pixel data without a usable {', '.join(missing)}"]
    if pixel_data_length is None or not _is_native(transfer_syntax_uid, dataset):
        return []
    expected = expected_pixel_bytes(dataset)
    if expected is None:
        return ["pixel data with a non-positive Rows, Columns, BitsAllocated, "
                "SamplesPerPixel or NumberOfFrames"]
    if pixel_data_length in (expected, _unpadded(dataset, expected)):
        return []
    relation = "shorter" if pixel_data_length < expected else "longer"
    return [f"pixel data is {pixel_data_length} bytes, {relation} than the {expected} "
            "that Rows, Columns, SamplesPerPixel, NumberOfFrames and BitsAllocated give"]


def _unpadded(dataset: Dataset, expected: int) -> int:
    """The odd length some writers leave unpadded (8-bit, odd rows x columns)."""
    return expected - 1 if expected % 2 == 0 and values.integer(
        dataset, "BitsAllocated") in (1, 8) else expected


def _is_native(transfer_syntax_uid: str | None, dataset: Dataset) -> bool:
    """Whether pixel data is native; unknown syntaxes are treated as compressed."""
    uid = transfer_syntax_uid
    if uid is None:
        meta = getattr(dataset, "file_meta", None)
        uid = values.text(meta, "TransferSyntaxUID") if meta is not None else None
    if uid is None:
        return True
    syntax = _known_syntax(uid)
    return syntax is not None and not syntax.is_encapsulated


def _known_syntax(uid: str) -> UID | None:
    uid = uid.strip(values.PAD)
    if not values.is_valid_uid(uid):
        return None
    syntax = UID(uid)
    return syntax if syntax.is_transfer_syntax else None


def _optional_count(dataset: Dataset, keyword: str) -> int | None:
    """A count that defaults to 1 when absent; None when present but unreadable."""
    if values.element(dataset, keyword) is None or values.text(dataset, keyword) is None:
        return 1
    return values.integer(dataset, keyword)


def _could_be_vr(group: int, element: int, vr_code: bytes) -> bool:
    """Whether two bytes read as a VR fit the element's dictionary VR (any, if unknown)."""
    try:
        known = dictionary_VR((group << 16) | element)
    except KeyError:
        return True
    return vr_code.decode("ascii") in known.split(" or ") or known in ("UN", "NONE")
