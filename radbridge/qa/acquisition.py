"""What each study was, as QA strata: its equipment, acquisition and demographics read
from a DICOM header (sex and an age band, never a birth date or an identifier). The
held-out evaluation groups by it; so does drift monitoring, per scanner and protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from pydicom.dataset import Dataset

from radbridge.mappings.dicom.values import decimal, dicom_date, text
from radbridge.qa.strata import UNKNOWN, age_years, band_of_age, group_value, sex_label


@dataclass(frozen=True)
class StudyFacts:
    """The equipment, acquisition and demographics of the series a model ran on: what the
    breakdowns group by. No identifiers: sex and an age band, never a birth date."""

    manufacturer: str = UNKNOWN
    scanner_model: str = UNKNOWN
    station: str = UNKNOWN
    sex: str = UNKNOWN
    age_band: str = UNKNOWN
    kvp: float | None = None
    slice_thickness: float | None = None
    pixel_spacing: tuple[float, ...] | None = None
    """PixelSpacing; ImagerPixelSpacing (at the detector) for projection images without it."""
    kernel: str | None = None

    @classmethod
    def from_header(cls, header: Dataset) -> StudyFacts:
        study_date = dicom_date(text(header, "StudyDate"))
        return cls(
            manufacturer=group_value(text(header, "Manufacturer")),
            scanner_model=group_value(text(header, "ManufacturerModelName")),
            station=group_value(text(header, "StationName")),
            sex=sex_label(text(header, "PatientSex")),
            age_band=band_of_age(_age(header, study_date)),
            kvp=decimal(header, "KVP"),
            slice_thickness=decimal(header, "SliceThickness"),
            pixel_spacing=_spacing(header),
            kernel=text(header, "ConvolutionKernel"))

    def strata(self) -> dict[str, str]:
        """By built-in dimension (as `qa.strata` names them)."""
        return {"manufacturer": self.manufacturer, "model": self.scanner_model,
                "station": self.station, "sex": self.sex, "age_band": self.age_band}

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


PER_YEAR = {"D": 365.25, "W": 365.25 / 7, "M": 12.0, "Y": 1.0}
"""PatientAge units (days, weeks, months, years) in a year."""


def _age(header: Dataset, study_date: date | None) -> int | None:
    """Whole years: PatientAge (nnnD/W/M/Y, written by the modality at the study), else
    the birth date against the study date."""
    age = text(header, "PatientAge") or ""
    if len(age) == 4 and age[:3].isdigit() and age[3] in PER_YEAR:
        return int(int(age[:3]) // PER_YEAR[age[3]])
    return age_years(dicom_date(text(header, "PatientBirthDate")), study_date)


def _spacing(header: Dataset) -> tuple[float, ...] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = text(header, keyword)
        if value:
            try:
                return tuple(float(v) for v in value.split("\\"))
            except ValueError:
                return None
    return None
