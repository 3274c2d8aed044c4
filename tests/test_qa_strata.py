"""Strata labels: age bands at birthdays, sex codes, blank header values, configured names."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radbridge.qa.errors import QaConfigError
from radbridge.qa.strata import (
    DIMENSIONS,
    Stratum,
    age_band,
    age_band_labels,
    age_years,
    band_of_age,
    group_value,
    sex_label,
    validate_strata,
)

BIRTH = date(2000, 6, 15)


@pytest.mark.parametrize(("at", "band"), [
    (date(2018, 6, 14), "<18"),   # the day before the 18th birthday: still 17
    (date(2018, 6, 15), "18-39"),
    (date(2040, 6, 14), "18-39"),
    (date(2040, 6, 15), "40-64"),
    (date(2065, 6, 14), "40-64"),
    (date(2065, 6, 15), "65-79"),
    (date(2080, 6, 15), "80+"),
    (date(2000, 6, 15), "<18"),   # born that day: age 0
])
def test_age_band_turns_over_on_the_birthday(at: date, band: str) -> None:
    assert age_band(BIRTH, at) == band


def test_a_leap_day_birthday_counts_from_the_first_of_march() -> None:
    assert age_years(date(2004, 2, 29), date(2022, 2, 28)) == 17
    assert age_years(date(2004, 2, 29), date(2022, 3, 1)) == 18


def test_missing_or_impossible_dates_give_unknown() -> None:
    assert age_band(None, date(2020, 1, 1)) == "unknown"
    assert age_band(BIRTH, None) == "unknown"
    assert age_band(BIRTH, date(1999, 1, 1)) == "unknown"


def test_default_labels_in_table_order() -> None:
    assert age_band_labels() == ("<18", "18-39", "40-64", "65-79", "80+", "unknown")


def test_configured_bands() -> None:
    assert age_band_labels((50,)) == ("<50", "50+", "unknown")
    assert band_of_age(49, (50,)) == "<50"
    assert band_of_age(50, (50,)) == "50+"
    assert band_of_age(None, (50,)) == "unknown"


@pytest.mark.parametrize("bands", [(), (40, 18), (18, 18), (0, 18), (18.5, 40)])
def test_bad_bands_are_refused_by_name(bands: tuple[int, ...]) -> None:
    with pytest.raises(QaConfigError, match="age_bands"):
        age_band(BIRTH, date(2020, 1, 1), bands)


@given(st.integers(0, 130))
def test_every_age_falls_in_exactly_the_band_its_label_names(age: int) -> None:
    label = band_of_age(age)
    if label.startswith("<"):
        assert age < int(label[1:])
    elif label.endswith("+"):
        assert age >= int(label[:-1])
    else:
        low, high = (int(part) for part in label.split("-"))
        assert low <= age <= high


@pytest.mark.parametrize(("code", "label"), [
    ("M", "male"), ("f", "female"), (" O ", "other"), ("A", "other"), ("U", "unknown"),
    ("N", "unknown"), ("", "unknown"), (None, "unknown"), ("Q", "unknown")])
def test_sex_codes(code: str | None, label: str) -> None:
    assert sex_label(code) == label


def test_blank_header_values_are_their_own_group() -> None:
    assert group_value(None) == "unknown"
    assert group_value("   ") == "unknown"
    assert group_value("  CT  ROOM 2 ") == "CT ROOM 2"


def test_a_stratum_below_min_group_is_flagged_small() -> None:
    assert Stratum.sized("station", "CT1", 29) == Stratum("station", "CT1", small=True)
    assert Stratum.sized("station", None, 30) == Stratum("station", "unknown", small=False)
    assert Stratum.sized("site", "North", 5, min_group=5).small is False


def test_a_stratum_needs_a_dimension() -> None:
    with pytest.raises(QaConfigError, match="dimension"):
        Stratum("", "x")


def test_the_built_in_dimensions() -> None:
    assert DIMENSIONS == ("manufacturer", "model", "station", "site", "sex", "age_band")


def test_extra_strata_names_pass_when_valid() -> None:
    assert validate_strata(["protocol", "body_part", "contrast2"]) == (
        "protocol", "body_part", "contrast2")
    assert validate_strata([]) == ()


@pytest.mark.parametrize(("names", "field"), [
    (["protocol", "Body Part"], "strata[1]"),
    (["1st"], "strata[0]"),
    (["protocol", "protocol"], "strata[1]"),
    (["station"], "strata[0]"),
    ("protocol", "strata"),
    ([7], "strata[0]"),
])
def test_bad_strata_names_are_refused_naming_the_entry(names: object, field: str) -> None:
    with pytest.raises(QaConfigError) as caught:
        validate_strata(names)  # type: ignore[arg-type]
    assert caught.value.field == field
