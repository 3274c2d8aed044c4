"""The groups QA breaks results down by, and the labels each group is shown under.

Labels are plain strings so that the same value comes out whether a row is labelled in
Python or counted by SQL and labelled afterwards: SQL can group by whole years of age
(`age_years`) and map them with `band_of_age`, then add the `Counts` of a band together.
Missing values become the group "unknown", never a dropped row, so totals add up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import pairwise

from radbridge.qa.errors import QaConfigError
from radbridge.qa.metrics import DEFAULT_MIN_GROUP

UNKNOWN = "unknown"
DEFAULT_AGE_BANDS = (18, 40, 65, 80)

DIMENSIONS = ("manufacturer", "model", "station", "site", "sex", "age_band")
"""The built-in strata, always reported."""

DICOM_KEYWORDS = {"manufacturer": "Manufacturer", "model": "ManufacturerModelName",
                  "station": "StationName"}
"""Where the scanner dimensions come from in the DICOM header."""

_SEXES = {"M": "male", "F": "female", "O": "other", "A": "other", "X": "other",
          "U": UNKNOWN, "N": UNKNOWN}
_STRATUM_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


def age_years(birth: date | None, at: date | None) -> int | None:
    """Whole years from `birth` to `at` (a birthday not yet reached this year does not
    count); None when either is missing or `at` precedes `birth`, a data error."""
    if birth is None or at is None or at < birth:
        return None
    before_birthday = (at.month, at.day) < (birth.month, birth.day)
    return at.year - birth.year - int(before_birthday)


def _check_bands(bands: Sequence[int]) -> None:
    ok = (len(bands) > 0 and all(isinstance(b, int) and not isinstance(b, bool) and b > 0
                                 for b in bands)
          and all(a < b for a, b in pairwise(bands)))
    if not ok:
        raise QaConfigError("age_bands", "a non-empty, strictly increasing list of "
                            "whole years above 0, such as [18, 40, 65, 80]")


def age_band_labels(bands: Sequence[int] = DEFAULT_AGE_BANDS) -> tuple[str, ...]:
    """Every band's label in order, youngest first, then "unknown": table rows that
    should appear even when empty."""
    _check_bands(bands)
    middle = [f"{low}-{high - 1}" for low, high in pairwise(bands)]
    return (f"<{bands[0]}", *middle, f"{bands[-1]}+", UNKNOWN)


def band_of_age(age: int | None, bands: Sequence[int] = DEFAULT_AGE_BANDS) -> str:
    """The band label of an age in whole years ("<18", "18-39", ..., "80+", "unknown")."""
    labels = age_band_labels(bands)
    if age is None or age < 0:
        return UNKNOWN
    below = sum(1 for edge in bands if age >= edge)
    return labels[below]


def age_band(birth: date | None, at: date | None,
             bands: Sequence[int] = DEFAULT_AGE_BANDS) -> str:
    """The age band at the study date."""
    return band_of_age(age_years(birth, at), bands)


def sex_label(code: str | None) -> str:
    """A label for an HL7 table 0001 or DICOM PatientSex code: M, F, O (and HL7's A and
    X) map to male/female/other; U, N, empty and anything else to "unknown"."""
    if code is None:
        return UNKNOWN
    return _SEXES.get(code.strip().upper(), UNKNOWN)


def group_value(raw: object) -> str:
    """A header value as a group label: trimmed; None or blank becomes "unknown", since
    scanners often leave StationName empty and those studies must still be counted."""
    if raw is None:
        return UNKNOWN
    text = " ".join(str(raw).split())
    return text or UNKNOWN


@dataclass(frozen=True)
class Stratum:
    """One group of one dimension ("station", "CT-ROOM-2"); `small` marks too few studies
    to read much into, shown rather than hidden so that no subgroup silently disappears."""

    dimension: str
    value: str
    small: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.dimension, str) or not self.dimension:
            raise QaConfigError("dimension", "a non-empty stratum name")
        if not isinstance(self.value, str):
            raise QaConfigError("value", "a string label (use group_value)")

    @classmethod
    def sized(cls, dimension: str, value: object, n: int,
              min_group: int = DEFAULT_MIN_GROUP) -> Stratum:
        """The stratum of `n` studies, flagged small below `min_group`."""
        return cls(dimension, group_value(value), n < min_group)


def validate_strata(names: Iterable[str]) -> tuple[str, ...]:
    """Configured extra strata names, checked: lower-case identifiers (they become column
    aliases and JSON keys), no duplicates, none shadowing a built-in dimension."""
    if isinstance(names, str | bytes):
        raise QaConfigError("strata", "a list of names, not a single string")
    checked: list[str] = []
    for index, name in enumerate(names):
        field = f"strata[{index}]"
        if not isinstance(name, str) or not _STRATUM_NAME.fullmatch(name):
            raise QaConfigError(field, "a lower-case name of letters, digits and _ "
                                "starting with a letter, at most 63 characters")
        if name in DIMENSIONS:
            raise QaConfigError(field, f"a name other than the built-in {name!r}, "
                                "which is always reported")
        if name in checked:
            raise QaConfigError(field, f"a name not already listed ({name!r} repeats)")
        checked.append(name)
    return tuple(checked)
