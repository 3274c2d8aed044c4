"""The `dicom.deidentify` transformer: what a channel sends outside holds no PHI and
keeps one study's instances linked under pseudonymous UIDs."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.data import get_testdata_file

from radbridge.engine.config import ChannelConfig
from radbridge.engine.pipeline import ChannelPipeline
from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.payload import Payload
from radbridge.mappings.registry import call_mapping, get_mapping
from tests import dicom_data

SECRET = "a channel secret of some length"


def _payload(path) -> Payload:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return Payload(path.read_bytes(), "application/dicom", patient_id=str(ds.PatientID),
                   accession=str(ds.get("AccessionNumber", "")), study_uid=ds.StudyInstanceUID)


def test_real_ct_loses_its_phi_and_keeps_its_pixels():
    path = __import__("pathlib").Path(get_testdata_file("CT_small.dcm"))
    original = pydicom.dcmread(path)
    out = call_mapping(get_mapping("dicom.deidentify"), _payload(path), {"secret": SECRET})
    clean = pydicom.dcmread(BytesIO(out.content))
    for phi in (str(original.PatientName), str(original.PatientID)):
        assert phi.encode() not in out.content
    assert clean.PixelData == original.PixelData
    assert clean.ImagePositionPatient == original.ImagePositionPatient
    assert clean.PatientIdentityRemoved == "YES"
    assert clean.StudyInstanceUID != original.StudyInstanceUID
    assert (out.patient_id, out.accession, out.study_uid) == (None, None,
                                                              clean.StudyInstanceUID)
    assert out.metadata["deidentified"].startswith("PS3.15")


def test_one_study_stays_one_study(tmp_path):
    paths = dicom_data.make_ct_series(tmp_path, 2, rows=16, columns=16, seed=3)
    cleaned = [pydicom.dcmread(BytesIO(call_mapping(
        get_mapping("dicom.deidentify"), _payload(p), {"secret": SECRET}).content))
        for p in paths]
    assert cleaned[0].StudyInstanceUID == cleaned[1].StudyInstanceUID
    assert cleaned[0].SeriesInstanceUID == cleaned[1].SeriesInstanceUID
    assert cleaned[0].FrameOfReferenceUID == cleaned[1].FrameOfReferenceUID
    assert cleaned[0].SOPInstanceUID != cleaned[1].SOPInstanceUID
    other = pydicom.dcmread(BytesIO(call_mapping(
        get_mapping("dicom.deidentify"), _payload(paths[0]),
        {"secret": "another secret of some length"}).content))
    assert other.StudyInstanceUID != cleaned[0].StudyInstanceUID


def test_a_short_secret_and_non_dicom_content_are_refused():
    transformer = get_mapping("dicom.deidentify")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        call_mapping(transformer, Payload(b"x"), {"secret": "short"})
    with pytest.raises(DicomContentError):
        call_mapping(transformer, Payload(b"not dicom at all"), {"secret": SECRET})


def test_a_channel_can_name_it():
    channel = ChannelConfig.model_validate({
        "name": "to-vendor", "source": {"type": "channel"},
        "transformers": [{"name": "dicom.deidentify",
                          "options": {"secret": SECRET, "keep": ["PatientAge"]}}],
        "destinations": [{"name": "vendor", "type": "null"}]})
    assert ChannelPipeline(channel) is not None
