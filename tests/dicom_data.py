"""DICOM test data: generated CT series and single objects, real compressed samples, and a
large multi-frame file written frame by frame.

Generated objects are valid CT Image Storage (explicit VR little endian, 16-bit
MONOCHROME2); give `seed` to get the same UIDs and pixels on every run. Real files come
from pydicom's test data and the pydicom-data package; nobody here made them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    PYDICOM_ROOT_UID,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

UID_PREFIX = PYDICOM_ROOT_UID
"""Prefix of generated UIDs: pydicom's root, for which it makes unique suffixes."""
MULTIFRAME_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.7.3")
"""Multi-frame Grayscale Word Secondary Capture Image Storage (no functional groups)."""
CT_ONLY = ("SliceLocation", "SliceThickness", "KVP", "ConvolutionKernel", "ImagePositionPatient",
           "ImageOrientationPatient", "FrameOfReferenceUID", "PositionReferenceIndicator",
           "BodyPartExamined", "PatientPosition", "AcquisitionNumber")
"""Attributes of the CT image modules that a secondary capture must not carry."""
MAX_PIXEL_BYTES = 0xFFFFFFFE
"""Largest explicit length a Pixel Data element can carry."""


def new_uid(*entropy: object) -> UID:
    """A random UID, or a deterministic one when `entropy` is given (same input, same UID)."""
    if not entropy:
        return generate_uid(prefix=UID_PREFIX)
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[repr(item) for item in entropy])


def _uid(seed: int | None, *parts: object) -> UID:
    """Deterministic from `seed` and `parts` when a seed is given, else random."""
    return new_uid(seed, *parts) if seed is not None else new_uid()


# -- generated CT ---------------------------------------------------------------------

def _phantom(rows: int, columns: int) -> np.ndarray:
    """A smooth body-like slice in stored values (HU + 1024): air, soft tissue, a bone ring."""
    y, x = np.ogrid[-1:1:rows * 1j, -1:1:columns * 1j]
    radius = np.sqrt((x / 0.85) ** 2 + (y / 0.7) ** 2)
    image = np.where(radius < 1.0, 1064.0, 24.0)
    image = np.where((radius > 0.35) & (radius < 0.42), 1724.0, image)
    return image.astype(np.uint16)


def _slices(rows: int, columns: int, count: int, seed: int) -> Iterator[np.ndarray]:
    """`count` deterministic slices: the phantom plus seeded noise."""
    rng = np.random.default_rng(seed)
    base = _phantom(rows, columns)
    for _ in range(count):
        noise = rng.integers(0, 24, size=(rows, columns), dtype=np.uint16)
        yield base + noise


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _ct_header(rows: int, columns: int, study_uid: str, series_uid: str,
               frame_of_reference: str, patient_id: str, patient_name: str,
               accession: str, modality: str) -> Dataset:
    """The attributes shared by every slice of a series."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240115"
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.Manufacturer = "Radbridge Test"
    ds.InstitutionName = "Radbridge Test Hospital"
    ds.ReferringPhysicianName = "REFERRER^TEST"
    ds.StationName = "RBCT01"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = "AXIAL 1.25mm"
    ds.ManufacturerModelName = "Synthetic CT"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.25"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def _apply(ds: Dataset, attributes: dict[str, Any]) -> None:
    """Set attributes by keyword; None removes one (to build deliberately broken objects)."""
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)


def _slice(header: Dataset, index: int, pixels: np.ndarray, sop_uid: str,
           spacing: float) -> Dataset:
    ds = header.copy()
    z = -index * spacing
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = index + 1
    ds.ContentTime = f"1015{index % 60:02d}"
    ds.AcquisitionDateTime = f"20240115101500.{index:06d}"
    ds.ImagePositionPatient = [-179.2, -179.2, round(z, 3)]
    ds.SliceLocation = round(z, 3)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = _file_meta(ds.SOPClassUID, sop_uid)
    return ds


def make_ct_series(folder: str | Path, count: int, *, rows: int = 512, columns: int = 512,
                   study_uid: str | None = None, series_uid: str | None = None,
                   patient_id: str = "RB-TEST-1", patient_name: str = "TEST^PATIENT",
                   accession: str = "ACC-1", modality: str = "CT", seed: int | None = None,
                   slice_spacing: float = 1.25, **attributes: Any) -> list[Path]:
    """Write `count` slices of one CT series to `folder` (CT0001.dcm, ...); returns paths.

    `seed` makes UIDs and pixels repeatable (pixels use seed 0 when it is None); extra
    keyword attributes (DICOM keywords) are set on every slice, None removes one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or _uid(seed, "study")
    series_uid = series_uid or _uid(seed, study_uid, "series")
    frame_of_reference = _uid(seed, series_uid, "frame")
    header = _ct_header(rows, columns, study_uid, series_uid, frame_of_reference, patient_id,
                        patient_name, accession, modality)
    _apply(header, attributes)
    paths = []
    for index, pixels in enumerate(_slices(rows, columns, count, seed or 0)):
        sop_uid = _uid(seed, series_uid, index)
        ds = _slice(header, index, pixels, sop_uid, slice_spacing)
        path = folder / f"CT{index + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_instance(*, rows: int = 64, columns: int = 64, seed: int | None = None,
                  **attributes: Any) -> Dataset:
    """One CT instance (with file meta, ready for `save_as`); keywords override attributes
    (None removes one, e.g. ``make_instance(StudyInstanceUID=None)``)."""
    header = _ct_header(rows, columns, _uid(seed, "study"), _uid(seed, "series"),
                        _uid(seed, "frame"), "RB-TEST-1", "TEST^PATIENT", "ACC-1", "CT")
    pixels = next(_slices(rows, columns, 1, seed or 0))
    ds = _slice(header, 0, pixels, _uid(seed, "sop"), 1.25)
    _apply(ds, attributes)
    if "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "SOPClassUID" in ds:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return ds


# -- real files -------------------------------------------------------------------------

def testdata(name: str) -> Path | None:
    """A file of pydicom's test data or pydicom-data, or None (never downloads)."""
    found = get_testdata_file(name, download=False)
    return Path(found) if isinstance(found, str) else None


REAL_FILES = (
    ("CT_small.dcm",),
    ("MR_small.dcm",),
    ("emri_small.dcm", "rtdose.dcm"),
    ("examples_rgb_color.dcm", "SC_rgb.dcm"),
    ("rtdose.dcm",),
)
"""CT, MR, an Enhanced MR multi-frame, an RGB ultrasound, an implicit-VR 32-bit RT dose
(first available name of each row)."""


def real_files() -> list[Path]:
    """A handful of varied real files (distinct SOP Instance UIDs); read them, never edit."""
    found: list[Path] = []
    for names in REAL_FILES:
        path = next((p for p in map(testdata, names) if p is not None), None)
        if path is not None and path not in found:
            found.append(path)
    return found


SAMPLES: dict[str, tuple[str, ...]] = {
    JPEGBaseline8Bit: ("SC_rgb_jpeg_dcmtk.dcm",),
    JPEGLosslessSV1: ("JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm"),
    JPEGLSLossless: ("MR_small_jpeg_ls_lossless.dcm",),
    JPEGLSNearLossless: ("JPEGLSNearLossless_16.dcm",),
    JPEG2000Lossless: ("MR_small_jp2klossless.dcm", "US1_J2KR.dcm"),
    JPEG2000: ("JPEG2000.dcm",),
    RLELossless: ("MR_small_RLE.dcm",),
    DeflatedExplicitVRLittleEndian: ("image_dfl.dcm",),
}
"""Transfer syntax -> real files in it (first found wins)."""

ENCODABLE = (RLELossless, JPEGLSLossless, JPEG2000Lossless)
"""What pydicom's encoders can make when no real sample is installed."""


def _relabel(source: Path, target: Path, syntax: str) -> None:
    """Copy `source` with a SOP Instance UID of its own (several samples derive from one
    MR image, and a PACS keeps only the first of equal UIDs); the identifiers a PACS needs
    (patient id, study and series UIDs) are filled in where the sample lacks them."""
    ds = pydicom.dcmread(source)
    uid = new_uid("sample", syntax)
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.PatientID = ds.get("PatientID") or "RB-SAMPLE"
    ds.StudyInstanceUID = ds.get("StudyInstanceUID") or new_uid("sample-study", syntax)
    ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or new_uid("sample-series", syntax)
    ds.save_as(target, enforce_file_format=True)


def _encode(target: Path, syntax: str) -> None:
    ds = make_instance(seed=7, SOPInstanceUID=new_uid("sample", syntax))
    ds.compress(syntax)
    ds.save_as(target, enforce_file_format=True)


def compressed_samples(folder: str | Path) -> dict[str, Path]:
    """One file per transfer syntax (JPEG baseline, JPEG lossless SV1, JPEG-LS, JPEG 2000,
    RLE, deflate) written to `folder`; keyed by transfer syntax UID. Real files where
    installed (each with its own SOP Instance UID), else encoded from a generated CT."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples: dict[str, Path] = {}
    for syntax, names in SAMPLES.items():
        target = folder / f"{syntax}.dcm"
        source = next((p for p in map(testdata, names) if p is not None), None)
        if source is not None:
            _relabel(source, target, syntax)
        elif syntax in ENCODABLE:
            _encode(target, syntax)
        else:
            continue
        samples[str(syntax)] = target
    return samples


# -- a big multi-frame file -------------------------------------------------------------

def big_multiframe(path: str | Path, size_bytes: int, *, rows: int = 512,
                   columns: int = 512, seed: int | None = None) -> Path:
    """Write a multi-frame 16-bit instance with at least `size_bytes` of pixel data,
    frame by frame, never holding more than one frame in memory."""
    path = Path(path)
    frame_bytes = rows * columns * 2
    frames = max(1, -(-size_bytes // frame_bytes))
    length = frames * frame_bytes
    if length > MAX_PIXEL_BYTES:
        raise ValueError(f"{length} bytes of pixel data do not fit one Pixel Data element")
    ds = make_instance(rows=rows, columns=columns, seed=seed, PixelData=None,
                       ImageType=["DERIVED", "SECONDARY"], Modality="OT",
                       ConversionType="WSD", BurnedInAnnotation="NO", PatientOrientation="",
                       PresentationLUTShape="IDENTITY", RescaleType="US", Laterality="",
                       **dict.fromkeys(CT_ONLY))
    ds.SOPClassUID = MULTIFRAME_SOP_CLASS
    ds.file_meta.MediaStorageSOPClassUID = MULTIFRAME_SOP_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid(seed, "mf", size_bytes)
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = "33.3"
    with path.open("wb") as out:
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
        # (7FE0,0010) OW, explicit VR little endian: tag, VR, 2 reserved bytes, 4-byte length
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        for index, pixels in enumerate(_slices(rows, columns, frames, seed or 0)):
            pixels[0, :] = index % 65536
            out.write(pixels.tobytes())
    return path

