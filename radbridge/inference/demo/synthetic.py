"""Synthetic studies for the six demonstration use cases, as DICOM.

`generate_study` gives a complete study (every instance with its file meta, ready for
``dcmwrite(..., enforce_file_format=True)``) whose modality, geometry and DICOM form are
those of the real examination, with or without the finding the use case's model looks
for. The same seed gives the same study (pixels and UIDs); patient, scanner and study
identifiers can be given so that tests and the QA/drift simulation can build worklists and
equipment changes from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from radbridge.inference.demo import ct_anatomy, dicom_forms, fundus_anatomy
from radbridge.inference.demo import projection_anatomy as projection
from radbridge.inference.demo.dicom_forms import SeriesForm, StudyContext

USE_CASES: tuple[str, ...] = ("ich-ct", "lvo-cta", "pe-ctpa", "mammo-mass", "fracture-xr",
                              "dr-fundus")


@dataclass(frozen=True)
class Scanner:
    """The equipment. `shift` adds a constant to stored values (HU for CT) and `noise`
    scales the noise: an equipment change for the drift monitor to catch."""

    manufacturer: str = "Radbridge Synthetic"
    model: str = "SYN-1"
    station: str = "SYNSTATION1"
    shift: float = 0.0
    noise: float = 1.0


@dataclass(frozen=True)
class PatientInfo:
    patient_id: str = "SYN0001"
    issuer: str = "RADBRIDGE"
    name: str = "SYNTHETIC^PATIENT"
    sex: str = "F"
    birth_date: str = "19600101"


@dataclass(frozen=True)
class SyntheticStudy:
    use_case: str
    """The model card's name, e.g. "ich-ct"."""
    positive: bool
    datasets: list[Dataset]
    """Every instance, file meta complete."""
    lesion_centre: tuple[float, float, float] | None
    """Patient coordinates in mm (x, y, z) for CT; for a projection image or photograph,
    (column mm, row mm, 0) from the centre of the top-left pixel. None if negative."""


class UnknownUseCase(ValueError):
    """A use case that is not one of USE_CASES."""


def _ich(rng: np.random.Generator, positive: bool, context: StudyContext, noise: float
         ) -> tuple[list[Dataset], tuple[float, float, float] | None]:
    volume = ct_anatomy.head_ct(rng, positive, noise)
    form = SeriesForm("CT", "HEAD", "HEAD W/O 5.0mm", "CT HEAD WITHOUT CONTRAST",
                      kernel="H30s", window=(40.0, 80.0))
    return dicom_forms.ct_series(volume, context, form), volume.lesion


def _lvo(rng: np.random.Generator, positive: bool, context: StudyContext, noise: float
         ) -> tuple[list[Dataset], tuple[float, float, float] | None]:
    volume = ct_anatomy.head_cta(rng, positive, noise)
    form = SeriesForm("CT", "HEAD", "CTA HEAD 2.5mm", "CT ANGIOGRAPHY HEAD",
                      contrast="IOHEXOL", kernel="H20f", window=(200.0, 700.0))
    return dicom_forms.ct_series(volume, context, form), volume.lesion


def _pe(rng: np.random.Generator, positive: bool, context: StudyContext, noise: float
        ) -> tuple[list[Dataset], tuple[float, float, float] | None]:
    volume = ct_anatomy.chest_ctpa(rng, positive, noise)
    form = SeriesForm("CT", "CHEST", "CTPA 3.0mm", "CT PULMONARY ANGIOGRAPHY",
                      contrast="IOPAMIDOL", kernel="B31f", window=(100.0, 700.0))
    return dicom_forms.ct_series(volume, context, form), volume.lesion


def _mammo(rng: np.random.Generator, positive: bool, context: StudyContext, noise: float
           ) -> tuple[list[Dataset], tuple[float, float, float] | None]:
    image = projection.mammogram(rng, positive, noise)
    form = SeriesForm("MG", "BREAST", f"{image.laterality}{image.view}",
                      "MAMMOGRAPHY SCREENING", kvp="29", window=(1700.0, 2600.0))
    inverted = bool(rng.random() < 0.35)
    return [dicom_forms.radiograph(image, context, form, inverted=inverted)], image.lesion


def _fracture(rng: np.random.Generator, positive: bool, context: StudyContext, noise: float
              ) -> tuple[list[Dataset], tuple[float, float, float] | None]:
    image = projection.limb(rng, positive, noise)
    part = str(rng.choice(["ARM", "LEG"]))
    form = SeriesForm("DX", part, f"{part} AP", f"XR {part}", kvp="60",
                      window=(1600.0, 3000.0))
    return [dicom_forms.radiograph(image, context, form)], image.lesion


def _fundus(rng: np.random.Generator, positive: bool, context: StudyContext, noise: float
            ) -> tuple[list[Dataset], tuple[float, float, float] | None]:
    photo = fundus_anatomy.fundus(rng, positive, noise)
    form = SeriesForm("OP", "EYE", f"FUNDUS {photo.laterality} 45", "FUNDUS PHOTOGRAPHY")
    return [dicom_forms.photograph(photo, context, form)], photo.lesion


Maker = Callable[[np.random.Generator, bool, StudyContext, float],
                 tuple[list[Dataset], tuple[float, float, float] | None]]
MAKERS: dict[str, Maker] = {"ich-ct": _ich, "lvo-cta": _lvo, "pe-ctpa": _pe,
                            "mammo-mass": _mammo, "fracture-xr": _fracture,
                            "dr-fundus": _fundus}


def generate_study(use_case: str, *, positive: bool, seed: int,
                   patient: PatientInfo | None = None, scanner: Scanner | None = None,
                   accession: str | None = None, study_uid: str | None = None,
                   study_date: str | None = None) -> SyntheticStudy:
    """A synthetic study of `use_case` (see the module docstring)."""
    if use_case not in MAKERS:
        raise UnknownUseCase(f"unknown use case {use_case!r}; one of {', '.join(USE_CASES)}")
    patient = patient or PatientInfo()
    scanner = scanner or Scanner()
    index = USE_CASES.index(use_case)
    entropy = [use_case, str(seed), str(positive)]
    study = study_uid or generate_uid(entropy_srcs=[*entropy, "study"])

    def uid(part: str) -> UID:
        return generate_uid(entropy_srcs=[*entropy, study, part])

    context = StudyContext(
        patient.patient_id, patient.issuer, patient.name, patient.sex, patient.birth_date,
        study, accession or f"SYN{index}{seed % 10 ** 9:09d}", study_date or "20240301",
        f"{8 + seed % 10:02d}{seed % 60:02d}{(seed // 60) % 60:02d}", scanner.manufacturer,
        scanner.model, scanner.station, scanner.shift, uid)
    rng = np.random.default_rng([index, seed, int(positive)])
    datasets, lesion = MAKERS[use_case](rng, positive, context, scanner.noise)
    return SyntheticStudy(use_case, positive, datasets, lesion)
