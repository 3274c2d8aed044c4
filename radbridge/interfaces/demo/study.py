"""The demo's head CT: the synthetic generator's study, re-sliced to the count asked for.

`generate_study("ich-ct")` makes 24 slices of 5 mm at 128x128. A demo or a benchmark of
"a 300-slice CT" needs the same head (and the same haemorrhage) as more instances, so
the volume is re-sampled along z over the same coverage (each new slice a copy of the
nearest generated one: interpolating the noisy volume twice, here and again in the
model's preprocessing, smooths its noise, and the demonstration model, trained on the
generator's noise, then flags negative studies), and optionally enlarged in plane
(each pixel repeated, so 512x512 is the matrix scanners send). Thin increments are
sent as an overlapping reconstruction: the nominal SliceThickness stays at least 2 mm
(what the ich-ct card accepts) while the positions step by the increment, as scanners
do for 0.5 mm increments of 2 mm slices.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radbridge.inference.demo.synthetic import PatientInfo, generate_study
from radbridge.interfaces.demo.messages import DemoCase

MIN_THICKNESS = 2.0
MATRICES = (128, 256, 512)


def head_ct(case: DemoCase, *, slices: int, positive: bool, seed: int = 4242,
            matrix: int = 128) -> list[Dataset]:
    """The case's head CT as `slices` instances (each with its file meta)."""
    if slices < 2:
        raise ValueError(f"slices: expected 2 or more, got {slices}")
    if matrix not in MATRICES:
        raise ValueError(f"matrix: expected one of {MATRICES}, got {matrix}")
    patient = PatientInfo(patient_id=case.patient_id, issuer=case.issuer,
                          name=case.patient_name, sex=case.sex, birth_date=case.birth_date)
    source = generate_study("ich-ct", positive=positive, seed=seed, patient=patient,
                            accession=case.accession, study_uid=case.study_uid).datasets
    source.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    stack = np.stack([np.frombuffer(ds.PixelData, dtype=np.uint16)
                      .reshape(int(ds.Rows), int(ds.Columns)) for ds in source])
    first, last = (float(source[i].ImagePositionPatient[2]) for i in (0, -1))
    increment = (last - first) / (slices - 1)
    factor = matrix // int(source[0].Columns)
    template = copy.deepcopy(source[0])
    del template.PixelData
    pixel = float(template.PixelSpacing[0]) / factor
    shift = (float(template.PixelSpacing[0]) - pixel) / 2
    origin = [float(v) - shift for v in template.ImagePositionPatient[:2]]
    template.Rows = template.Columns = matrix
    template.PixelSpacing = [f"{pixel:g}", f"{pixel:g}"]
    template.SliceThickness = f"{max(MIN_THICKNESS, increment):.3g}"
    if slices != len(source) or factor != 1:
        template.SeriesInstanceUID = generate_uid(
            entropy_srcs=[case.study_uid, "series", str(slices), str(matrix)])
    datasets = []
    for number, index in enumerate(range(slices - 1, -1, -1), start=1):
        z = first + index * increment
        image = _nearest(stack, (z - first) / (last - first) * (len(source) - 1))
        if factor > 1:
            image = image.repeat(factor, axis=0).repeat(factor, axis=1)
        ds = copy.deepcopy(template)
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[case.study_uid, str(slices),
                                                       str(matrix), str(index)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [f"{origin[0]:g}", f"{origin[1]:g}", f"{z:.4g}"]
        ds.SliceLocation = f"{z:.4g}"
        ds.PixelData = np.ascontiguousarray(image).tobytes()
        datasets.append(ds)
    return datasets


def _nearest(stack: np.ndarray, position: float) -> np.ndarray:
    """The slice of `stack` nearest to fractional index `position`."""
    nearest: np.ndarray = stack[min(round(position), stack.shape[0] - 1)]
    return nearest


def write_study(datasets: list[Dataset], folder: Path) -> list[Path]:
    """Each instance as a Part 10 file in `folder` (what a modality would send)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, dataset in enumerate(datasets):
        path = folder / f"{number:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
