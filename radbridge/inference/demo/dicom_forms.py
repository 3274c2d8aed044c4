"""The DICOM form of the synthetic studies: the modules each IOD asks for (CT Image,
Digital Mammography and Digital X-Ray For Presentation, Ophthalmic Photography 8 Bit),
filled from one study context so that every instance of a study agrees.

dciodvfy (dicom3tools) finds no error in what this writes; the tests check that.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    OphthalmicPhotography8BitImageStorage,
)

from radbridge.inference.demo.ct_anatomy import CtVolume
from radbridge.inference.demo.fundus_anatomy import Photograph
from radbridge.inference.demo.projection_anatomy import TOP, Radiograph

MakeUid = Callable[[str], UID]


@dataclass(frozen=True)
class StudyContext:
    """Who, when and on what: shared by every instance of one study."""

    patient_id: str
    issuer: str
    patient_name: str
    sex: str
    birth_date: str
    study_uid: str
    accession: str
    study_date: str
    study_time: str
    manufacturer: str
    model: str
    station: str
    shift: float
    uid: MakeUid
    """A UID for a named part of the study (deterministic when the study is seeded)."""


@dataclass(frozen=True)
class SeriesForm:
    """What the series says it is."""

    modality: str
    body_part: str
    description: str
    study_description: str
    contrast: str | None = None
    """ContrastBolusAgent, for contrast studies."""
    kernel: str = "STANDARD"
    kvp: str = "120"
    window: tuple[float, float] = (40.0, 80.0)
    """WindowCenter, WindowWidth in real values."""


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _age(birth: str, on: str) -> str:
    born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
    day = date(int(on[:4]), int(on[4:6]), int(on[6:8]))
    years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    return f"{max(years, 0):03d}Y"


def _common(context: StudyContext, form: SeriesForm, sop_class: str, sop_uid: UID) -> Dataset:
    """SOP Common, Patient, General Study, Patient Study, General Series, Equipment."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = UID(sop_class), sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = context.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = context.study_time
    ds.AccessionNumber = context.accession
    ds.Modality = form.modality
    ds.Manufacturer = context.manufacturer
    ds.InstitutionName = "Radbridge Synthetic Hospital"
    ds.ReferringPhysicianName = "SYNTHETIC^REFERRER"
    ds.StationName = context.station
    ds.StudyDescription = form.study_description
    ds.SeriesDescription = form.description
    ds.ManufacturerModelName = context.model
    ds.PatientName = context.patient_name
    ds.PatientID = context.patient_id
    ds.IssuerOfPatientID = context.issuer
    ds.PatientBirthDate = context.birth_date
    ds.PatientSex = context.sex
    ds.PatientAge = _age(context.birth_date, context.study_date)
    ds.BodyPartExamined = form.body_part
    ds.DeviceSerialNumber = "SYN-0001"
    ds.SoftwareVersions = "radbridge-demo"
    ds.StudyInstanceUID = context.study_uid
    ds.SeriesInstanceUID = context.uid("series")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    return ds


def _file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def ct_series(volume: CtVolume, context: StudyContext, form: SeriesForm) -> list[Dataset]:
    """One CT Image Storage instance per slice, in descending z (as many scanners send
    them; consumers must sort by position). Stored values are HU + 1024 (12 bits)."""
    stored = np.clip(np.rint(volume.hu + context.shift + 1024), 0, TOP).astype(np.uint16)
    thickness, pixel, _ = volume.spacing
    header = _common(context, form, CTImageStorage, context.uid("template"))
    header.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    header.SliceThickness = f"{thickness:g}"
    header.KVP = form.kvp
    header.ConvolutionKernel = form.kernel
    header.PatientPosition = "HFS"
    header.FrameOfReferenceUID = context.uid("frame")
    header.PositionReferenceIndicator = ""
    header.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    header.PixelSpacing = [f"{pixel:g}", f"{pixel:g}"]
    header.SamplesPerPixel = 1
    header.PhotometricInterpretation = "MONOCHROME2"
    header.Rows, header.Columns = stored.shape[1:]
    header.BitsAllocated, header.BitsStored, header.HighBit = 16, 12, 11
    header.PixelRepresentation = 0
    header.RescaleIntercept, header.RescaleSlope, header.RescaleType = "-1024", "1", "HU"
    header.WindowCenter, header.WindowWidth = (f"{v:g}" for v in form.window)
    if form.contrast:
        header.ContrastBolusAgent = form.contrast
        header.ContrastBolusRoute = "IV"
    count = stored.shape[0]
    datasets = []
    for number, index in enumerate(range(count - 1, -1, -1), start=1):
        ds = copy.deepcopy(header)
        ds.SOPInstanceUID = context.uid(f"slice{index}")
        z = volume.origin[2] + index * thickness
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [f"{volume.origin[0]:g}", f"{volume.origin[1]:g}", f"{z:g}"]
        ds.SliceLocation = f"{z:g}"
        ds.PixelData = stored[index].tobytes()
        _file_meta(ds)
        datasets.append(ds)
    return datasets


def _projection_pixels(ds: Dataset, values: NDArray[np.float32], shift: float,
                       inverted: bool) -> None:
    stored = TOP - values if inverted else values
    pixels = np.clip(np.rint(stored + shift), 0, TOP).astype(np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if inverted else "MONOCHROME2"
    ds.PresentationLUTShape = "INVERSE" if inverted else "IDENTITY"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = pixels.tobytes()


def radiograph(image: Radiograph, context: StudyContext, form: SeriesForm, *,
               inverted: bool = False) -> Dataset:
    """One Digital Mammography (MG) or Digital X-Ray (DX) image For Presentation;
    `inverted` stores it MONOCHROME1 (white = low values), as some detectors do."""
    mammo = form.modality == "MG"
    sop_class = (DigitalMammographyXRayImageStorageForPresentation if mammo
                 else DigitalXRayImageStorageForPresentation)
    ds = _common(context, form, sop_class, context.uid("image"))
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""] if mammo else ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.InstanceNumber = 1
    ds.KVP = form.kvp
    ds.ImageLaterality = image.laterality
    ds.DetectorType = "SCINTILLATOR"
    spacing = [f"{image.pixel:g}", f"{image.pixel:g}"]
    ds.ImagerPixelSpacing = spacing  # at the detector: no calibrated PixelSpacing
    ds.AcquisitionContextSequence = DicomSequence()
    ds.QualityControlImage = "NO"
    _projection_pixels(ds, image.values, context.shift, inverted)
    centre, width = form.window
    ds.WindowCenter = f"{(TOP - centre) if inverted else centre:g}"
    ds.WindowWidth = f"{width:g}"
    if mammo:
        ds.PositionerType = "MAMMOGRAPHIC"
        ds.OrganExposed = "BREAST"
        ds.BreastImplantPresent = "NO"
        ds.PartialView = "NO"
        ds.AnatomicRegionSequence = DicomSequence([code("76752008", "SCT", "Breast")])
        cc = image.view == "CC"
        view = code("399162004", "SCT", "cranio-caudal") if cc else code(
            "399368009", "SCT", "medio-lateral oblique")
        view.ViewModifierCodeSequence = DicomSequence()
        ds.ViewCodeSequence = DicomSequence([view])
        toward = "L" if image.laterality == "R" else "R"
        ds.PatientOrientation = ["A", toward] if cc else ["A", "FR" if toward == "R" else "FL"]
    else:
        ds.PositionerType = "NONE"
        ds.ViewPosition = image.view
        view = code("399348003", "SCT", "antero-posterior")
        view.ViewModifierCodeSequence = DicomSequence()
        ds.ViewCodeSequence = DicomSequence([view])
        ds.PatientOrientation = ["L" if image.laterality == "R" else "R", "F"]
        region = (code("40983000", "SCT", "Arm") if form.body_part == "ARM"
                  else code("30021000", "SCT", "Lower leg"))
        ds.AnatomicRegionSequence = DicomSequence([region])
    _file_meta(ds)
    return ds


def photograph(photo: Photograph, context: StudyContext, form: SeriesForm) -> Dataset:
    """One Ophthalmic Photography 8 Bit image: RGB, three samples per pixel, one frame."""
    ds = _common(context, form, OphthalmicPhotography8BitImageStorage, context.uid("image"))
    pixels = np.clip(np.rint(photo.rgb + context.shift), 0, 255).astype(np.uint8)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.AcquisitionDateTime = context.study_date + context.study_time
    ds.ImageLaterality = photo.laterality
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.SynchronizationFrameOfReferenceUID = context.uid("synchronization")
    ds.SynchronizationTrigger = "NO TRIGGER"
    ds.AcquisitionTimeSynchronized = "N"
    ds.NumberOfFrames = 1
    ds.FrameIncrementPointer = 0x00181063  # FrameTime: a single frame names it anyway
    ds.FrameTime = 0
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.PixelSpacing = [f"{photo.pixel:g}", f"{photo.pixel:g}"]
    ds.AnatomicRegionSequence = DicomSequence([code("5665001", "SCT", "Retina")])
    ds.AcquisitionContextSequence = DicomSequence()
    ds.PatientEyeMovementCommanded = "NO"
    ds.HorizontalFieldOfView = 45
    ds.EmmetropicMagnification = 1.0
    ds.IntraOcularPressure = None
    ds.PupilDilated = "NO"
    ds.RefractiveStateSequence = DicomSequence()
    ds.AcquisitionDeviceTypeCodeSequence = DicomSequence([
        code("409899009", "SCT", "Fundus camera")])
    ds.IlluminationTypeCodeSequence = DicomSequence()
    ds.LightPathFilterTypeStackCodeSequence = DicomSequence()
    ds.ImagePathFilterTypeStackCodeSequence = DicomSequence()
    ds.LensesCodeSequence = DicomSequence()
    ds.DetectorType = "CCD"
    ds.PixelData = pixels.tobytes()
    _file_meta(ds)
    return ds
