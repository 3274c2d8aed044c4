"""De-identification: every attribute of the implemented table, on real and built files.

The PHI check is on the written bytes of the de-identified file: no marker put into
any profiled attribute (top level, nested in sequences, private, overlay) may survive.
"""

from __future__ import annotations

import copy
import io
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from radbridge.mappings.dicom.deid import (
    BASIC_PROFILE,
    DEVICE_IDENTITY,
    PATIENT_CHARACTERISTICS,
    Action,
    DeidOptions,
    deidentify,
    pseudonymous_uid,
)
from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.dicom.values import is_valid_uid

SECRET = b"test secret"
DATE_MARK, TIME_MARK, DATETIME_MARK = "19470312", "131415", "19470312131415"
UID_MARK = "1.2.3.999."


def ct_small() -> pydicom.FileDataset:
    return pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))


def written(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def marker_value(index: int, vr: str) -> object | None:
    """A value valid for `vr` that is easy to find in bytes; None for binary VRs."""
    text = f"PHI{index:04d}"
    return {
        "PN": f"{text}^Name", "LO": text, "SH": text, "LT": text, "ST": text, "UT": text,
        "UC": text, "CS": text, "AE": text, "DA": DATE_MARK, "TM": TIME_MARK,
        "DT": DATETIME_MARK, "AS": "047Y", "DS": f"4{index:04d}.5", "IS": f"7{index:04d}",
        "UI": f"{UID_MARK}{index}",
        "SQ": Sequence([code_item(text)]),
    }.get(vr)


def code_item(text: str) -> Dataset:
    item = Dataset()
    item.CodeValue = text
    item.CodingSchemeDesignator = "99PHI"
    item.CodeMeaning = f"{text} meaning"
    return item


def phi_dataset() -> tuple[Dataset, list[str]]:
    """Every profiled attribute that is not a repeating group, set to a marker."""
    ds, markers = Dataset(), []
    for index, keyword in enumerate(sorted(BASIC_PROFILE)):
        tag = Tag(keyword)
        vr = str(dictionary_VR(tag)).split(" or ")[0]
        value = marker_value(index, vr)
        if value is None or tag.group == 0x0002 or tag.group & 0xFF00 in (0x5000, 0x6000):
            continue
        setattr(ds, keyword, value)
        if vr in ("DS", "IS", "UI"):
            markers.append(str(value))
        elif vr not in ("DA", "TM", "DT", "AS"):
            markers.append(f"PHI{index:04d}")
    return ds, markers


def build_full() -> tuple[Dataset, list[str]]:
    ds = ct_small()
    phi, markers = phi_dataset()
    for element in phi:
        ds[element.tag] = element
    nested, nested_markers = phi_dataset()
    ds.ReferencedSeriesSequence = Sequence([nested])
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = UID_MARK + "77777"
    block = ds.private_block(0x0029, "ACME PHI 1.0", create=True)
    block.add_new(0x01, "LO", "PRIVATEPHI")
    block.add_new(0x02, "SQ", Sequence([code_item("PRIVSEQPHI")]))
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60004000, "LT", "OVERLAYPHI")
    ds.add_new(0x60003000, "OW", b"\x01\x02" * 2)
    ds.file_meta.SourceApplicationEntityTitle = "SRCAEPHI"
    markers += [m for m in nested_markers if m.startswith("PHI")]
    markers += ["SRCAEPHI", "PRIVATEPHI", "PRIVSEQPHI", "OVERLAYPHI", DATE_MARK, TIME_MARK,
                DATETIME_MARK, UID_MARK, "047Y"]
    return ds, markers


def test_table_keywords_exist_and_options_are_in_the_table() -> None:
    for keyword in BASIC_PROFILE:
        Tag(keyword)
    assert set(PATIENT_CHARACTERISTICS) <= set(BASIC_PROFILE)
    assert set(DEVICE_IDENTITY) <= set(BASIC_PROFILE)
    assert Action.KEEP not in BASIC_PROFILE.values()


def test_no_phi_survives_in_written_bytes() -> None:
    ds, markers = build_full()
    before = written(ds)
    for marker in markers:
        assert marker.encode() in before, marker
    original_strings = [str(ds.PatientName), ds.PatientID, ds.InstitutionName, ds.StationName,
                        ds.StudyInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID,
                        "20040119", "19970430", "JFK IMAGING"]
    after = written(deidentify(ds, secret=SECRET))
    for marker in [*markers, *original_strings]:
        assert marker.encode() not in after, marker


def test_actions_per_attribute() -> None:
    ds, _ = build_full()
    out = deidentify(ds, secret=SECRET)
    for keyword, action in BASIC_PROFILE.items():
        if keyword not in ds or Tag(keyword).group & 0xFF00 in (0x5000, 0x6000):
            continue
        if action is Action.REMOVE:
            assert keyword not in out, keyword
        elif action is Action.EMPTY:
            assert out[keyword].is_empty, keyword
        elif action is Action.DUMMY:
            assert not out[keyword].is_empty and out[keyword].value != ds[keyword].value
        else:
            assert out[keyword].value.startswith("2.25."), keyword
    assert not [element for element in out if element.tag.is_private]
    assert not [element for element in out if element.tag.group == 0x6000]


def test_marks_and_input_untouched() -> None:
    ds = ct_small()
    snapshot = copy.deepcopy(ds)
    out = deidentify(ds, secret=SECRET)
    assert ds == snapshot
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert out.DeidentificationMethod
    assert [(c.CodeValue, c.CodingSchemeDesignator) for c in
            out.DeidentificationMethodCodeSequence] == [("113100", "DCM")]
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def test_geometry_and_pixels_identical() -> None:
    ds = ct_small()
    out = pydicom.dcmread(io.BytesIO(written(deidentify(ds, secret=SECRET))))
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "SliceThickness", "RescaleSlope", "RescaleIntercept", "KVP",
                    "ConvolutionKernel", "Rows", "Columns", "BitsStored", "SliceLocation",
                    "Modality", "SOPClassUID", "Manufacturer"):
        assert out[keyword].value == ds[keyword].value, keyword
    assert out.PixelData == ds.PixelData
    assert (out.pixel_array == ds.pixel_array).all()


def two_instances() -> tuple[Dataset, Dataset]:
    first = ct_small()
    second = copy.deepcopy(first)
    second.SOPInstanceUID = first.SOPInstanceUID + ".2"
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    reference = Dataset()
    reference.ReferencedSOPClassUID = first.SOPClassUID
    reference.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = Sequence([reference])
    second.SourceImageSequence = Sequence([copy.deepcopy(reference)])
    return first, second


def test_uids_consistent_across_a_study() -> None:
    first, second = two_instances()
    a, b = (deidentify(ds, secret=SECRET) for ds in (first, second))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert a[keyword].value == b[keyword].value
        assert a[keyword].value != first[keyword].value
        assert is_valid_uid(a[keyword].value)
    assert a.SOPInstanceUID != b.SOPInstanceUID
    for sequence in ("ReferencedImageSequence", "SourceImageSequence"):
        assert b[sequence][0].ReferencedSOPInstanceUID == a.SOPInstanceUID
        assert b[sequence][0].ReferencedSOPClassUID == first.SOPClassUID
    assert a.SOPInstanceUID == pseudonymous_uid(first.SOPInstanceUID, SECRET)


def test_another_secret_other_uids() -> None:
    ds = ct_small()
    a = deidentify(ds, secret=SECRET)
    b = deidentify(ds, secret=b"another")
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID


def test_twice_and_nested_sequences() -> None:
    ds, markers = build_full()
    ds.ReferencedSeriesSequence[0].ReferencedSeriesSequence = Sequence(
        [copy.deepcopy(ds.ReferencedSeriesSequence[0])])
    once = deidentify(ds, secret=SECRET)
    twice = deidentify(once, secret=SECRET)
    data = written(twice)
    for marker in markers:
        assert marker.encode() not in data, marker
    inner = twice.ReferencedSeriesSequence[0].ReferencedSeriesSequence[0]
    assert "PatientName" in inner and inner["PatientName"].is_empty
    assert "OtherPatientIDs" not in inner
    assert [c.CodeValue for c in twice.DeidentificationMethodCodeSequence] == ["113100"]
    assert twice.DeidentificationMethod == once.DeidentificationMethod
    assert twice.PixelData == ds.PixelData


def test_dummy_sequences_keep_shape_without_content() -> None:
    ds = ct_small()
    ds.PersonIdentificationCodeSequence = Sequence([code_item("SECRETCODE")])
    out = deidentify(ds, secret=SECRET)
    item = out.PersonIdentificationCodeSequence[0]
    assert item.CodeValue != "SECRETCODE" and item.CodeMeaning != "SECRETCODE meaning"
    assert b"SECRETCODE" not in written(out)


def test_options() -> None:
    ds = ct_small()
    ds.PatientAge, ds.PatientWeight = "047Y", "70"
    ds.DeviceSerialNumber, ds.SeriesDescription = "SN123", "AXIAL 5mm"
    plain = deidentify(ds, secret=SECRET)
    assert plain["PatientSex"].is_empty and "PatientAge" not in plain
    assert "StationName" not in plain and plain.DeviceSerialNumber != "SN123"
    assert plain["StudyDate"].is_empty and plain.ContentDate == "19000101"
    assert "SeriesDescription" not in plain
    kept = deidentify(ds, secret=SECRET, options=DeidOptions(
        retain_patient_characteristics=True, retain_device_identity=True,
        retain_longitudinal_dates=True, keep=frozenset({"SeriesDescription"})))
    assert (kept.PatientSex, kept.PatientAge, kept.PatientWeight) == ("O", "047Y", 70)
    assert (kept.StationName, kept.DeviceSerialNumber) == ("CT01_OC0", "SN123")
    assert (kept.StudyDate, kept.ContentDate) == ("20040119", "19970430")
    assert kept["PatientBirthDate"].is_empty
    assert kept.SeriesDescription == "AXIAL 5mm"
    assert kept.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert {c.CodeValue for c in kept.DeidentificationMethodCodeSequence} == {
        "113100", "113108", "113109", "113106"}
    assert "PatientName" in kept and kept["PatientName"].is_empty


def test_allow_listed_private_element_is_kept() -> None:
    ds = ct_small()
    creators = {(e.tag.group, e.tag.element): e.value for e in ds if e.tag.is_private_creator}
    (group, block), creator = sorted(creators.items())[0]
    private = [e for e in ds if e.tag.group == group and e.tag.element >> 8 == block]
    assert private
    wanted = private[0].tag
    out = deidentify(ds, secret=SECRET, options=DeidOptions(
        keep_private=frozenset({(group, creator, wanted.element & 0xFF)})))
    kept = [e.tag for e in out if e.tag.is_private]
    assert kept == [Tag(group, block), wanted]
    assert out[wanted].value == ds[wanted].value


def test_burned_in_annotation_refused() -> None:
    ds = ct_small()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DicomContentError, match="BurnedInAnnotation"):
        deidentify(ds, secret=SECRET)
    out = deidentify(ds, secret=SECRET, options=DeidOptions(allow_burned_in_annotation=True))
    assert out.BurnedInAnnotation == "YES"


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_output_is_no_less_valid_than_input(tmp_path: Path) -> None:
    """dicom3tools' dciodvfy finds no error in the output that the input did not have."""
    ds = ct_small()
    source, target = tmp_path / "in.dcm", tmp_path / "out.dcm"
    source.write_bytes(written(ds))
    target.write_bytes(written(deidentify(ds, secret=SECRET)))

    def errors(path: Path) -> set[str]:
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                             check=False)
        return {line.split(" - ", 1)[-1] for line in (run.stdout + run.stderr).splitlines()
                if line.startswith("Error")}

    assert errors(target) <= errors(source)


@settings(max_examples=200)
@given(st.from_regex(r"[0-9]{1,20}(\.[0-9]{1,20}){0,6}", fullmatch=True), st.binary(max_size=32))
def test_pseudonymous_uid_is_valid_and_stable(uid: str, secret: bytes) -> None:
    out = pseudonymous_uid(uid, secret)
    assert is_valid_uid(out) and len(out) <= 64 and out.startswith("2.25.")
    assert out == pseudonymous_uid(uid + "\x00", secret)
    assert out != pseudonymous_uid(uid, secret + b"x")


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm",
                                  "SC_rgb_rle.dcm", "emri_small.dcm", "rtplan.dcm",
                                  "MR_small_implicit.dcm"])
def test_real_files_lose_identity_and_keep_pixels(name: str) -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
    out = pydicom.dcmread(io.BytesIO(written(deidentify(ds, secret=SECRET))))
    data = written(out)
    identifying = [str(ds.get(keyword, "")) for keyword in (
        "PatientName", "PatientID", "InstitutionName", "StudyInstanceUID", "SOPInstanceUID",
        "StudyDate", "PatientBirthDate")]
    kept_manufacturer = str(ds.get("Manufacturer", ""))
    for value in identifying:
        if len(value) >= 4 and value not in kept_manufacturer:
            assert value.encode() not in data, value
    assert data[:128] == bytes(128)
    assert out.get("PixelData") == ds.get("PixelData")
    assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert out.PatientIdentityRemoved == "YES"
