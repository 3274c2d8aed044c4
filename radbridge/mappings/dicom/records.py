"""What the engine indexes about DICOM objects, as plain records.

Interfaces read a dataset (header only, never the pixel data) and turn it into one of
these with `radbridge.mappings.dicom.index`; the engine writes them to the DICOM index
in the same transaction as the message that carries the instance, so the C-STORE or
STOW-RS success status is sent only once the instance is both stored and indexed.
Values are kept as DICOM wrote them (dates as YYYYMMDD, multi-values joined by a
backslash), trimmed, with empty values as None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONTENT_TYPE = "application/dicom"
MPPS_CONTENT_TYPE = "application/dicom; dimse=mpps"
COMMITMENT_CONTENT_TYPE = "application/dicom; dimse=storage-commitment"


@dataclass(frozen=True)
class InstanceRecord:
    """One received SOP instance: its place in the hierarchy and what describes it."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    # patient and study (the study row keeps the values of its first instance)
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    accession: str | None = None
    accession_issuer: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    study_description: str | None = None
    referring_physician: str | None = None
    # series and equipment
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    body_part: str | None = None
    manufacturer: str | None = None
    manufacturer_model: str | None = None
    station_name: str | None = None
    institution_name: str | None = None
    # instance: timing and geometry
    instance_number: int | None = None
    acquisition_datetime: str | None = None
    content_datetime: str | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None
    samples_per_pixel: int | None = None
    bits_allocated: int | None = None
    photometric_interpretation: str | None = None
    pixel_spacing: str | None = None
    slice_thickness: float | None = None
    image_position: str | None = None
    image_orientation: str | None = None
    image_type: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    """Further acquisition attributes worth keeping (kVp, convolution kernel, ...)."""


@dataclass(frozen=True)
class PerformedSeries:
    """A series an MPPS says was performed, with the instances it referenced."""

    series_uid: str
    sop_instance_uids: tuple[str, ...] = ()


@dataclass(frozen=True)
class MppsRecord:
    """A Modality Performed Procedure Step as an N-CREATE or N-SET left it.

    N-SET carries no study UID: the engine finds the study from the N-CREATE's record.
    """

    mpps_uid: str
    operation: str
    """'create' or 'set'."""
    status: str | None = None
    """'IN PROGRESS', 'COMPLETED' or 'DISCONTINUED' (None when an N-SET left it unchanged)."""
    study_uid: str | None = None
    accession: str | None = None
    patient_id: str | None = None
    modality: str | None = None
    performed_series: tuple[PerformedSeries, ...] = ()


@dataclass(frozen=True)
class CommitmentRequest:
    """A Storage Commitment N-ACTION: the requester says these instances are complete."""

    transaction_uid: str
    requester_ae: str
    references: tuple[tuple[str, str], ...]
    """(SOP Class UID, SOP Instance UID) pairs."""
