"""Reading single attribute values out of a dataset without tripping over bad ones.

pydicom converts a value when it is first touched, and a malformed IS or DS then either
raises or warns with the value in the message (which may be PHI). Numbers are therefore
read from the element's raw bytes where pydicom has not converted them yet, and every
helper here answers None instead of raising for a value it cannot read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from radbridge.mappings.dicom.errors import DicomContentError

MAX_UID_LENGTH = 64
_UID = re.compile(r"\d+(?:\.\d+)*")
PAD = " \x00"
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
Key = str | int
"""An attribute as a keyword ("PatientID") or a tag (0x00100020), private ones included."""


def is_valid_uid(value: str) -> bool:
    """Digits and dots, no empty component, at most 64 characters.

    Components with a leading zero are accepted: modalities in the field send them and
    refusing their images would help nobody.
    """
    return len(value) <= MAX_UID_LENGTH and _UID.fullmatch(value) is not None


def element(dataset: Dataset, keyword: Key) -> DataElement | RawDataElement | None:
    """The element for a keyword, left raw if pydicom has not converted it yet."""
    found = dataset.get_item(_tag(keyword))
    return found if isinstance(found, DataElement | RawDataElement) else None


def text(dataset: Dataset, keyword: Key) -> str | None:
    """The value as trimmed text, multi-values joined by a backslash; None when empty.

    Raw values of VRs that are ASCII whatever the character set (UIDs, codes, dates,
    numbers as strings) are decoded here: pydicom's conversion costs several times more,
    and this runs for every attribute of every received instance.
    """
    raw = element(dataset, keyword)
    if raw is None:
        return None
    if isinstance(raw, RawDataElement) and _raw_vr(raw, keyword) in _ASCII_VRS:
        return _trim_joined(_decode_ascii(raw.value))
    try:
        value = dataset[_tag(keyword)].value
    except (ValueError, TypeError, LookupError, OverflowError):
        return None
    return _as_text(value)


def integer(dataset: Dataset, keyword: Key) -> int | None:
    """An IS or US/UL/SS/SL value as int; None when absent, multi-valued or not a number."""
    value = text(dataset, keyword)
    if value is None or "\\" in value:
        return None
    try:
        return int(value)
    except ValueError:
        number = decimal(dataset, keyword)
    return int(number) if number is not None and number.is_integer() else None


def decimal(dataset: Dataset, keyword: Key) -> float | None:
    """A DS/FL/FD value as float; None when absent, multi-valued or not a finite number."""
    value = text(dataset, keyword)
    if value is None or "\\" in value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def first_item(dataset: Dataset, keyword: Key) -> Dataset | None:
    """The first item of a sequence attribute, or None when absent or empty."""
    items = sequence(dataset, keyword)
    return items[0] if items else None


def sequence(dataset: Dataset, keyword: Key) -> list[Dataset]:
    """The items of a sequence attribute ([] when absent, empty or not a sequence)."""
    if element(dataset, keyword) is None:
        return []
    try:
        value = dataset[_tag(keyword)].value
    except (ValueError, TypeError, LookupError):
        return []
    return list(value) if isinstance(value, Sequence) else []


def required_uid(dataset: Dataset, keyword: str, where: str = "") -> str:
    """A UID attribute that must be present and valid; raises DicomContentError naming it."""
    return checked_uid(text(dataset, keyword), f"{where}{keyword}")


def checked_uid(value: str | None, attribute: str) -> str:
    """`value` if it is a valid UID, else DicomContentError naming `attribute`."""
    if not value:
        raise DicomContentError(attribute, "is missing or empty")
    if len(value) > MAX_UID_LENGTH:
        raise DicomContentError(attribute, f"is longer than {MAX_UID_LENGTH} characters")
    if not is_valid_uid(value):
        raise DicomContentError(attribute, "is not a valid UID (digits and dots)")
    return value


@lru_cache(maxsize=4096)
def dicom_date(value: str | None) -> date | None:
    """A DA value (YYYYMMDD) as a date; None when empty or not a valid date."""
    if not value:
        return None
    try:
        return datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _tag(keyword: Key) -> BaseTag:
    return Tag(keyword)


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: BaseTag) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _raw_vr(raw: RawDataElement, keyword: Key) -> str:
    """The VR a raw element was sent with; the dictionary's when implicit or UN."""
    if raw.VR and raw.VR != "UN":
        return str(raw.VR)
    return _dictionary_vr(_tag(keyword))


def _decode_ascii(value: bytes | None) -> str:
    return value.decode("ascii", errors="replace") if value else ""


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return _trim_joined(value.decode("latin-1"))
    if isinstance(value, Sequence | Dataset):
        return None
    if isinstance(value, MultiValue | list | tuple):
        return _join(value)
    return _trim_joined(str(value))


def _join(values: Iterable[Any]) -> str | None:
    parts = [_trim(str(part)) if part is not None else "" for part in values]
    return "\\".join(parts) if any(parts) else None


def _trim_joined(value: str) -> str | None:
    return _join(value.split("\\"))


def _trim(value: str) -> str:
    return value.strip(PAD)
