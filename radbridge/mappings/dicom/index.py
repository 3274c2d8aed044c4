"""A received instance's header turned into the record the DICOM index keeps.

The SCP and the STOW-RS endpoint read each instance header-only (pydicom's
``stop_before_pixels``) and call `read_instance`; its record is written in the same
transaction as the message, so an instance the index cannot place in a study and series
is refused (DicomContentError) rather than stored where nobody can find it.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from radbridge.mappings.dicom import values
from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.dicom.records import InstanceRecord

EXTRA_KEYWORDS = (
    "KVP", "ConvolutionKernel", "SpacingBetweenSlices", "ContrastBolusAgent", "ViewPosition",
    "ImageLaterality", "Laterality", "SeriesDate", "SeriesTime", "SoftwareVersions",
    "DeviceSerialNumber", "ProtocolName", "SliceLocation", "WindowCenter", "WindowWidth",
)
"""Acquisition attributes kept in `InstanceRecord.extra`, under their keywords, when present."""

def read_instance(dataset: Dataset, transfer_syntax_uid: str) -> InstanceRecord:
    """The index record for one instance's header.

    Raises DicomContentError naming the attribute when the SOP Class, SOP Instance,
    Study or Series Instance UID is missing, empty, too long or not a UID, and when
    `transfer_syntax_uid` is not a UID.
    """
    text, integer = values.text, values.integer
    return InstanceRecord(
        sop_class_uid=values.required_uid(dataset, "SOPClassUID"),
        sop_instance_uid=values.required_uid(dataset, "SOPInstanceUID"),
        study_uid=values.required_uid(dataset, "StudyInstanceUID"),
        series_uid=values.required_uid(dataset, "SeriesInstanceUID"),
        transfer_syntax_uid=values.checked_uid(
            transfer_syntax_uid.strip(values.PAD), "TransferSyntaxUID"),
        patient_id=text(dataset, "PatientID"),
        issuer_of_patient_id=text(dataset, "IssuerOfPatientID"),
        patient_name=text(dataset, "PatientName"),
        patient_birth_date=text(dataset, "PatientBirthDate"),
        patient_sex=text(dataset, "PatientSex"),
        accession=text(dataset, "AccessionNumber"),
        accession_issuer=_accession_issuer(dataset),
        study_date=text(dataset, "StudyDate"),
        study_time=text(dataset, "StudyTime"),
        study_description=text(dataset, "StudyDescription"),
        referring_physician=text(dataset, "ReferringPhysicianName"),
        modality=text(dataset, "Modality"),
        series_number=integer(dataset, "SeriesNumber"),
        series_description=text(dataset, "SeriesDescription"),
        body_part=text(dataset, "BodyPartExamined"),
        manufacturer=text(dataset, "Manufacturer"),
        manufacturer_model=text(dataset, "ManufacturerModelName"),
        station_name=text(dataset, "StationName"),
        institution_name=text(dataset, "InstitutionName"),
        instance_number=integer(dataset, "InstanceNumber"),
        acquisition_datetime=_acquisition_datetime(dataset),
        content_datetime=_date_time(dataset, "ContentDate", "ContentTime"),
        rows=integer(dataset, "Rows"),
        columns=integer(dataset, "Columns"),
        number_of_frames=integer(dataset, "NumberOfFrames"),
        samples_per_pixel=integer(dataset, "SamplesPerPixel"),
        bits_allocated=integer(dataset, "BitsAllocated"),
        photometric_interpretation=text(dataset, "PhotometricInterpretation"),
        pixel_spacing=_geometry(dataset, "PixelSpacing", "PixelMeasuresSequence"),
        slice_thickness=_slice_thickness(dataset),
        image_position=_geometry(dataset, "ImagePositionPatient", "PlanePositionSequence"),
        image_orientation=_geometry(
            dataset, "ImageOrientationPatient", "PlaneOrientationSequence"),
        image_type=text(dataset, "ImageType"),
        extra=_extra(dataset),
    )


def _accession_issuer(dataset: Dataset) -> str | None:
    issuer = values.first_item(dataset, "IssuerOfAccessionNumberSequence")
    if issuer is None:
        return None
    return values.text(issuer, "LocalNamespaceEntityID") or values.text(
        issuer, "UniversalEntityID")


def _acquisition_datetime(dataset: Dataset) -> str | None:
    combined = values.text(dataset, "AcquisitionDateTime")
    return combined or _date_time(dataset, "AcquisitionDate", "AcquisitionTime")


def _date_time(dataset: Dataset, date_keyword: str, time_keyword: str) -> str | None:
    """DA and TM as one DT value; the date alone when there is no time, None without date."""
    date = values.text(dataset, date_keyword)
    if date is None:
        return None
    return date + (values.text(dataset, time_keyword) or "")


def _geometry(dataset: Dataset, keyword: str, macro: str) -> str | None:
    """A top-level geometry value, else the one in the functional groups.

    Enhanced multi-frame objects (Enhanced CT/MR, ...) carry pixel spacing, position and
    orientation in the shared or the first frame's functional groups instead.
    """
    found = values.text(dataset, keyword)
    for group in _group_items(dataset):
        if found is not None:
            break
        item = values.first_item(group, macro)
        found = values.text(item, keyword) if item is not None else None
    return found


def _slice_thickness(dataset: Dataset) -> float | None:
    if values.element(dataset, "SliceThickness") is not None:
        return values.decimal(dataset, "SliceThickness")
    for group in _group_items(dataset):
        measures = values.first_item(group, "PixelMeasuresSequence")
        thickness = values.decimal(measures, "SliceThickness") if measures else None
        if thickness is not None:
            return thickness
    return None


def _group_items(dataset: Dataset) -> list[Dataset]:
    """The shared functional groups item, then the first per-frame item, when present."""
    items = [values.first_item(dataset, "SharedFunctionalGroupsSequence"),
             values.first_item(dataset, "PerFrameFunctionalGroupsSequence")]
    return [item for item in items if item is not None]


def _extra(dataset: Dataset) -> dict[str, str]:
    found = {keyword: values.text(dataset, keyword) for keyword in EXTRA_KEYWORDS}
    return {keyword: value for keyword, value in found.items() if value is not None}


__all__ = ["EXTRA_KEYWORDS", "DicomContentError", "read_instance"]
