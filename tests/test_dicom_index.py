"""read_instance against real files from pydicom's test data and against generated headers.

Expected values come from pydicom reading the same file on its own (a full read, values
converted by pydicom), so the index is checked against an independent reader.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.dicom.index import EXTRA_KEYWORDS, read_instance
from radbridge.mappings.dicom.records import InstanceRecord
from radbridge.mappings.dicom.values import is_valid_uid

REAL_FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "emri_small.dcm",
              "MR_small_bigendian.dcm", "rtplan.dcm", "SC_rgb_rle.dcm"]

FIELD_KEYWORDS = {
    "sop_class_uid": "SOPClassUID", "sop_instance_uid": "SOPInstanceUID",
    "study_uid": "StudyInstanceUID", "series_uid": "SeriesInstanceUID",
    "patient_id": "PatientID", "issuer_of_patient_id": "IssuerOfPatientID",
    "patient_name": "PatientName", "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex", "accession": "AccessionNumber", "study_date": "StudyDate",
    "study_time": "StudyTime", "study_description": "StudyDescription",
    "referring_physician": "ReferringPhysicianName", "modality": "Modality",
    "series_number": "SeriesNumber", "series_description": "SeriesDescription",
    "body_part": "BodyPartExamined", "manufacturer": "Manufacturer",
    "manufacturer_model": "ManufacturerModelName", "station_name": "StationName",
    "institution_name": "InstitutionName", "instance_number": "InstanceNumber",
    "rows": "Rows", "columns": "Columns", "number_of_frames": "NumberOfFrames",
    "samples_per_pixel": "SamplesPerPixel", "bits_allocated": "BitsAllocated",
    "photometric_interpretation": "PhotometricInterpretation",
    "pixel_spacing": "PixelSpacing", "slice_thickness": "SliceThickness",
    "image_position": "ImagePositionPatient", "image_orientation": "ImageOrientationPatient",
    "image_type": "ImageType",
}
COMPUTED = {"transfer_syntax_uid", "accession_issuer", "acquisition_datetime",
            "content_datetime", "extra"}


def independent(ds: Dataset, keyword: str, kind: type) -> Any:
    """What pydicom itself says, in the record's form."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if kind is int:
        return int(value)
    if kind is float:
        return float(value)
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(part).strip() for part in value)
    return str(value).strip()


def test_every_record_field_is_covered() -> None:
    names = {field.name for field in dataclasses.fields(InstanceRecord)}
    assert names == set(FIELD_KEYWORDS) | COMPUTED


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_fields_match_pydicom(name: str) -> None:
    path = get_testdata_file(name)
    full = pydicom.dcmread(path)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    syntax = full.file_meta.TransferSyntaxUID
    record = read_instance(header, syntax)
    kinds = {field.name: field.type for field in dataclasses.fields(InstanceRecord)}
    for field_name, keyword in FIELD_KEYWORDS.items():
        kind = int if "int" in str(kinds[field_name]) else (
            float if "float" in str(kinds[field_name]) else str)
        assert getattr(record, field_name) == independent(full, keyword, kind), field_name
    assert record.transfer_syntax_uid == syntax
    for keyword in EXTRA_KEYWORDS:
        assert record.extra.get(keyword) == independent(full, keyword, str), keyword


def test_ct_small_values() -> None:
    """Spot values read off CT_small.dcm with dcmdump, as a second opinion."""
    header = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    record = read_instance(header, "1.2.840.10008.1.2.1")
    assert record.modality == "CT"
    assert (record.rows, record.columns, record.bits_allocated) == (128, 128, 16)
    assert record.pixel_spacing == "0.661468\\0.661468"
    assert record.slice_thickness == 5.0
    assert record.image_type == "ORIGINAL\\PRIMARY\\AXIAL"
    assert record.acquisition_datetime == "19970430112936"
    assert record.content_datetime == "19970430113008"
    assert record.extra["KVP"] == "120"
    assert record.extra["ConvolutionKernel"] == "STANDARD"
    assert "WindowCenter" not in record.extra


def base_header(**changes: Any) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def raw_header(elements: list[tuple[int, bytes]]) -> Dataset:
    """A header read back from implicit VR bytes, so values stay raw until touched."""
    body = b"".join(tag.to_bytes(4, "little")[2:] + tag.to_bytes(4, "little")[:2]
                    + len(value).to_bytes(4, "little") + value
                    for tag, value in sorted(elements))
    return read_dataset(io.BytesIO(body), True, True)


def test_minimal_header_gives_none_everywhere_else() -> None:
    ds = base_header()
    record = read_instance(ds, ExplicitVRLittleEndian)
    assert record.patient_name is None and record.rows is None and record.extra == {}


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_trimming_empty_and_multivalue() -> None:
    ds = base_header(PatientID="  ABC ", StudyDescription="   ", ImageType=["A ", "B"],
                     Manufacturer="")
    ds.SOPInstanceUID = "1.2.3.4\x00"
    record = read_instance(ds, "1.2.840.10008.1.2.1\x00")
    assert record.patient_id == "ABC"
    assert record.study_description is None
    assert record.manufacturer is None
    assert record.image_type == "A\\B"
    assert record.sop_instance_uid == "1.2.3.4"
    assert record.transfer_syntax_uid == "1.2.840.10008.1.2.1"


def test_bad_numbers_become_none() -> None:
    uids = [(0x00080016, b"1.2.840.10008.5.1.4.1.1.2\x00"), (0x00080018, b"1.2.3.4\x00"),
            (0x0020000D, b"1.2.3"), (0x0020000E, b"1.2.3.5\x00")]
    ds = raw_header([*uids, (0x00200011, b"ab c"), (0x00180050, b"x1.5"),
                     (0x00200013, b"1\\2 "), (0x00280008, b"3.0 "), (0x00180060, b"120 ")])
    record = read_instance(ds, ExplicitVRLittleEndian)
    assert record.series_number is None
    assert record.slice_thickness is None
    assert record.instance_number is None
    assert record.number_of_frames == 3
    assert record.extra == {"KVP": "120"}


def test_date_time_combinations() -> None:
    both = base_header(AcquisitionDate="20240101", AcquisitionTime="101500",
                       ContentDate="20240102")
    record = read_instance(both, ExplicitVRLittleEndian)
    assert record.acquisition_datetime == "20240101101500"
    assert record.content_datetime == "20240102"
    dt = base_header(AcquisitionDateTime="20230101120000.5", AcquisitionDate="20240101")
    assert read_instance(dt, ExplicitVRLittleEndian).acquisition_datetime == "20230101120000.5"
    time_only = base_header(ContentTime="101500")
    assert read_instance(time_only, ExplicitVRLittleEndian).content_datetime is None


def test_accession_issuer_and_enhanced_geometry() -> None:
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = "RIS-A"
    measures, orientation, position = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [0.5, 0.5]
    measures.SliceThickness = "1.25"
    orientation.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    position.ImagePositionPatient = ["-10", "-20", "30"]
    shared, frame = Dataset(), Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    frame.PlanePositionSequence = Sequence([position])
    ds = base_header(IssuerOfAccessionNumberSequence=Sequence([issuer]),
                     SharedFunctionalGroupsSequence=Sequence([shared]),
                     PerFrameFunctionalGroupsSequence=Sequence([frame]))
    record = read_instance(ds, ExplicitVRLittleEndian)
    assert record.accession_issuer == "RIS-A"
    assert record.pixel_spacing == "0.5\\0.5"
    assert record.slice_thickness == 1.25
    assert record.image_orientation == "1\\0\\0\\0\\1\\0"
    assert record.image_position == "-10\\-20\\30"


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The value length")
@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID",
                                     "SOPInstanceUID", "SOPClassUID"])
@pytest.mark.parametrize("bad", [None, "", "  ", "1.2.abc", "1..2", "1." + "2" * 63])
def test_missing_or_bad_uid_names_the_attribute(keyword: str, bad: str | None) -> None:
    ds = base_header(PatientName="Secret^Name")
    if bad is None:
        delattr(ds, keyword)
    else:
        setattr(ds, keyword, bad)
    with pytest.raises(DicomContentError) as caught:
        read_instance(ds, ExplicitVRLittleEndian)
    assert caught.value.attribute == keyword
    assert str(caught.value).startswith(keyword)
    assert isinstance(caught.value, ValueError)
    if bad and bad.strip():
        assert bad not in str(caught.value)


def test_bad_transfer_syntax_is_refused() -> None:
    with pytest.raises(DicomContentError, match="TransferSyntaxUID"):
        read_instance(base_header(), "explicit")


def test_header_of_a_part10_file_with_meta() -> None:
    """A dataset written and read back header-only still indexes the same."""
    ds = base_header(PatientID="P1", Rows=4, Columns=4, BitsAllocated=16)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    again = pydicom.dcmread(buffer, stop_before_pixels=True)
    assert read_instance(again, ExplicitVRLittleEndian) == read_instance(
        ds, ExplicitVRLittleEndian)


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=12))
def test_uid_validity_matches_the_rule(parts: list[int]) -> None:
    uid = ".".join(str(part) for part in parts)
    assert is_valid_uid(uid) == (len(uid) <= 64)
    assert not is_valid_uid(uid + ".")
    assert not is_valid_uid(uid + "a")
