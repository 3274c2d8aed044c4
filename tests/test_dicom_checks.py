"""instance_problems, expected_pixel_bytes and looks_like_wrong_syntax on real files.

Files are pydicom's test data: native (CT_small, MR_small, SC_rgb_small_odd, the
big-endian MR), encapsulated (JPEG2000, RLE), and SC_rgb_jpeg.dcm, a real file whose
meta header declares an explicit VR syntax over an implicit VR data set.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from radbridge.mappings.dicom.checks import (
    expected_pixel_bytes,
    instance_problems,
    looks_like_wrong_syntax,
)

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
NATIVE_FILES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm",
                "MR_small_bigendian.dcm", "emri_small.dcm", "SC_rgb_32bit_2frame.dcm"]


def path_of(name: str) -> str:
    found = get_testdata_file(name)
    assert found is not None, name
    return str(found)


def data_set_bytes(name: str) -> bytes:
    """The bytes after the File Meta Information: its group length says where they start."""
    content = Path(path_of(name)).read_bytes()
    assert content[128:132] == b"DICM"
    tag, vr, _, meta_length = struct.unpack("<I2sHI", content[132:144])
    assert (tag, vr) == (0x00000002, b"UL")
    return content[144 + meta_length:]


def header(name: str) -> Dataset:
    return pydicom.dcmread(path_of(name), stop_before_pixels=True)


@pytest.mark.parametrize("name", NATIVE_FILES)
def test_expected_bytes_match_real_native_pixel_data(name: str) -> None:
    full = pydicom.dcmread(path_of(name))
    assert expected_pixel_bytes(full) == len(full.PixelData)
    problems = instance_problems(header(name), pixel_data_length=len(full.PixelData),
                                 transfer_syntax_uid=full.file_meta.TransferSyntaxUID)
    assert problems == []


def test_expected_bytes_arithmetic() -> None:
    ds = Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated = 3, 3, 8
    assert expected_pixel_bytes(ds) == 10
    ds.SamplesPerPixel, ds.NumberOfFrames = 3, "2"
    assert expected_pixel_bytes(ds) == 54
    ds.BitsAllocated = 1
    assert expected_pixel_bytes(ds) == 8
    ds.Rows = 0
    assert expected_pixel_bytes(ds) is None
    del ds.Rows
    assert expected_pixel_bytes(ds) is None


def test_truncated_native_pixel_data_is_caught() -> None:
    full = pydicom.dcmread(path_of("CT_small.dcm"))
    problems = instance_problems(header("CT_small.dcm"),
                                 pixel_data_length=len(full.PixelData) - 512)
    assert len(problems) == 1
    assert "32256 bytes, shorter than the 32768" in problems[0]


def test_overlong_native_pixel_data_is_caught() -> None:
    problems = instance_problems(header("MR_small.dcm"), pixel_data_length=64 * 64 * 2 + 2,
                                 transfer_syntax_uid=EXPLICIT)
    assert problems and "longer" in problems[0]


def test_multi_frame_count_is_used() -> None:
    ds = header("emri_small.dcm")
    assert instance_problems(ds, pixel_data_length=64 * 64 * 2) != []
    assert instance_problems(ds, pixel_data_length=64 * 64 * 2 * 10) == []


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_rle.dcm", "MR_small_RLE.dcm"])
def test_encapsulated_pixel_data_is_accepted(name: str) -> None:
    ds = header(name)
    syntax = ds.file_meta.TransferSyntaxUID
    assert instance_problems(ds, pixel_data_length=None, transfer_syntax_uid=syntax) == []
    assert instance_problems(ds, pixel_data_length=None, has_pixel_data=True) == []
    # a length from the transport is never compared for a compressed syntax
    assert instance_problems(ds, pixel_data_length=12, transfer_syntax_uid=syntax) == []
    # nor when the header's own meta says it is encapsulated
    assert instance_problems(ds, pixel_data_length=12) == []


def test_missing_image_attributes_with_pixel_data() -> None:
    ds = header("CT_small.dcm")
    del ds.Rows
    del ds.BitsAllocated
    problems = instance_problems(ds, pixel_data_length=32768)
    assert problems == ["pixel data without a usable Rows, BitsAllocated"]
    assert instance_problems(ds, pixel_data_length=None) == []
    assert instance_problems(ds, pixel_data_length=None, has_pixel_data=True) != []


def test_sop_uids_from_the_transport_must_match() -> None:
    ds = header("CT_small.dcm")
    ok = instance_problems(ds, pixel_data_length=None, sop_class_uid=ds.SOPClassUID,
                           sop_instance_uid=ds.SOPInstanceUID + "\x00")
    assert ok == []
    wrong = instance_problems(ds, pixel_data_length=None,
                              sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                              sop_instance_uid="1.2.3")
    assert wrong == ["SOPClassUID in the data set differs from the one it was sent as",
                     "SOPInstanceUID in the data set differs from the one it was sent as"]
    del ds.SOPClassUID
    assert instance_problems(ds, pixel_data_length=None, sop_class_uid="1.2.3") != []


def test_reasons_carry_no_values() -> None:
    ds = header("CT_small.dcm")
    problems = instance_problems(ds, pixel_data_length=2, sop_class_uid="9.9",
                                 sop_instance_uid="9.9")
    text = " ".join(problems)
    for value in (str(ds.PatientName), ds.PatientID, ds.SOPInstanceUID, ds.SOPClassUID):
        assert value not in text


@pytest.mark.parametrize(("name", "declared"), [
    ("CT_small.dcm", EXPLICIT), ("MR_small.dcm", EXPLICIT), ("rtplan.dcm", IMPLICIT),
    ("MR_small_implicit.dcm", IMPLICIT), ("MR_small_bigendian.dcm", BIG_ENDIAN),
    ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"), ("nested_priv_SQ.dcm", IMPLICIT),
])
def test_right_syntax_passes(name: str, declared: str) -> None:
    assert looks_like_wrong_syntax(data_set_bytes(name), declared) is None


@pytest.mark.parametrize("name", ["rtplan.dcm", "MR_small_implicit.dcm"])
def test_implicit_data_declared_explicit(name: str) -> None:
    reason = looks_like_wrong_syntax(data_set_bytes(name), EXPLICIT)
    assert reason == "the data set is implicit VR but explicit VR was declared"
    assert looks_like_wrong_syntax(data_set_bytes(name), JPEG_BASELINE) == reason


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"])
def test_explicit_data_declared_implicit(name: str) -> None:
    reason = looks_like_wrong_syntax(data_set_bytes(name), IMPLICIT)
    assert reason == "the data set is explicit VR but implicit VR was declared"


@pytest.mark.filterwarnings("ignore:Expected explicit VR, but found implicit VR")
def test_real_file_with_a_wrong_meta_header() -> None:
    declared = header("SC_rgb_jpeg.dcm").file_meta.TransferSyntaxUID
    assert declared == JPEG_BASELINE
    reason = looks_like_wrong_syntax(data_set_bytes("SC_rgb_jpeg.dcm"), declared)
    assert reason == "the data set is implicit VR but explicit VR was declared"


def test_byte_order() -> None:
    assert looks_like_wrong_syntax(data_set_bytes("CT_small.dcm"), BIG_ENDIAN) == (
        "the data set is not in the declared byte order (big endian)")
    assert looks_like_wrong_syntax(data_set_bytes("MR_small_bigendian.dcm"), EXPLICIT) == (
        "the data set is not in the declared byte order (little endian)")


def test_not_judged() -> None:
    ct = data_set_bytes("CT_small.dcm")
    assert looks_like_wrong_syntax(ct, DEFLATED) is None
    assert looks_like_wrong_syntax(ct, "1.2.3.4") is None
    assert looks_like_wrong_syntax(ct[:6], IMPLICIT) is None


@given(st.binary(max_size=16),
       st.sampled_from([IMPLICIT, EXPLICIT, BIG_ENDIAN, DEFLATED, JPEG_BASELINE, "1.2.3"]))
def test_never_raises(first_bytes: bytes, declared: str) -> None:
    reason = looks_like_wrong_syntax(first_bytes, declared)
    assert reason is None or isinstance(reason, str)
