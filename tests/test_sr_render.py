"""The TID 1500 SR of an AI result: valid by dciodvfy, dsrdump and (where installed)
pixelmed's DicomSRValidator, readable by highdicom, deterministic, traceable to its
model, and accepted by a real PACS (Orthanc) over C-STORE.

Source images are a generated CT series (tests/dicom_data.py), pydicom's real
CT_small.dcm and a DX radiograph built here (a projection image: no patient geometry).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from radbridge.mappings.results import (
    DEMONSTRATION_WARNING,
    PRELIMINARY_NOTICE,
    AiResult,
    FindingLocation,
    result_from_json,
)
from radbridge.mappings.sr import SrRenderError, render_sr
from tests import dicom_data
from tests.dicom_data import make_ct_series, new_uid
from tests.peers.dcmtk import tool_path

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "results" / "ich-positive-demo.json"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
PIXELMED_XPATH_LIMITS = ("-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0",
                         "-Djdk.xml.xpathTotalOpLimit=0")  # JDK 17 stops its XSLT otherwise


# -- shared with tests/test_seg_render.py ------------------------------------------------

def sample_result(**changes: object) -> AiResult:
    """The positive ICH sample (demonstration model), with `changes` applied."""
    return replace(result_from_json(json.loads(SAMPLE.read_text())), **changes)  # type: ignore[arg-type]


def ct_series(folder: Path, count: int = 4, size: int = 32) -> list[Dataset]:
    """A generated CT series, read back as full datasets (pixels included)."""
    return [pydicom.dcmread(p) for p in make_ct_series(folder, count, rows=size,
                                                       columns=size, seed=11)]


def make_dx(study_uid: str, *, rows: int = 80, columns: int = 60) -> Dataset:
    """A Digital X-Ray (For Presentation) image: a projection image without Frame of
    Reference or Image Position, only Imager Pixel Spacing and Patient Orientation."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = new_uid("dx", study_uid, "sop")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = "TEST^DX", "RB-DX-1"
    ds.PatientBirthDate, ds.PatientSex = "19600101", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, new_uid("dx", study_uid, "series")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240501"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "ACC-DX-1", "", "1"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DX", 1, 1
    ds.Manufacturer, ds.PresentationIntentType = "Radbridge Test", "FOR PRESENTATION"
    ds.ImageType, ds.PatientOrientation = ["ORIGINAL", "PRIMARY"], ["A", "R"]
    ds.BodyPartExamined, ds.ViewPosition, ds.ImageLaterality = "CHEST", "PA", "U"
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = (
        "51185008", "SCT", "Thorax")
    ds.AnatomicRegionSequence = [region]
    ds.PositionerType, ds.AcquisitionContextSequence = "NONE", []
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    ds.PresentationLUTShape, ds.LossyImageCompression = "IDENTITY", "00"
    ds.ImagerPixelSpacing, ds.DetectorType, ds.BurnedInAnnotation = [0.2, 0.2], "SCINTILLATOR", "NO"
    ds.PixelData = (np.arange(rows * columns, dtype=np.uint16) % 4096).tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def encoded(ds: Dataset) -> bytes:
    """The Part 10 bytes of `ds`."""
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's Error lines (warnings about our local 99xxx coding schemes, which the
    objects declare in their Coding Scheme Identification Sequence, are not errors)."""
    if shutil.which("dciodvfy") is None:
        _tool_missing("dciodvfy (Debian package dicom3tools)")
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines()
            if line.startswith("Error")]


def _tool_missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"validator required in CI: {what}")
    pytest.skip(f"validator not installed: {what}")


# -- this file's fixtures ----------------------------------------------------------------

@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> list[Dataset]:
    return ct_series(tmp_path_factory.mktemp("ct"))


@pytest.fixture(scope="module")
def located(ct: list[Dataset]) -> AiResult:
    """ICH found on slice 3 at row 10, column 20 (no patient point); midline shift
    absent, placed in patient coordinates; one volume measurement."""
    result = sample_result(study_uid=str(ct[0].StudyInstanceUID))
    ich, shift = result.findings
    return replace(result, findings=(
        replace(ich, location=FindingLocation(str(ct[2].SOPInstanceUID), row=10, column=20)),
        replace(shift, location=FindingLocation(str(ct[1].SOPInstanceUID), row=5, column=6,
                                                patient_mm=(-170.0, -175.5, -1.25)))))


@pytest.fixture(scope="module")
def sr_file(located: AiResult, ct: list[Dataset], tmp_path_factory: pytest.TempPathFactory
            ) -> Path:
    return save(render_sr(located, ct), tmp_path_factory.mktemp("sr") / "sr.dcm")


# -- conformance -------------------------------------------------------------------------

def test_dciodvfy_finds_no_error(sr_file):
    assert dciodvfy_errors(sr_file) == []


def test_dsrdump_reads_the_tree_with_finding_observer_and_warning(sr_file):
    dsrdump = tool_path("dsrdump")
    if dsrdump is None:
        _tool_missing("dsrdump (Debian package dcmtk)")
    done = subprocess.run([str(dsrdump), "+Pl", str(sr_file)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    tree = done.stdout
    assert "Comprehensive 3D SR Document" in tree
    assert "Preliminary Flag    : PRELIMINARY" in tree
    assert '<has obs context CODE:(,,"Observer Type")=(121007,DCM,"Device")>' in tree
    assert '"Device Observer Name")="radbridge-ich-demo"' in tree
    assert '"Device Observer Model Name")="Radbridge ICH triage (demo)"' in tree
    assert '"Device Observer Serial Number")="0.3.1"' in tree
    assert ('<contains CODE:(,,"Intracranial hemorrhage")=(52101004,SCT,"Present")>'
            in tree)
    assert '<contains CODE:(,,"midline shift")=(272519000,SCT,"Absent")>' in tree
    assert '"Probability")="0.973" ({probability},UCUM,"probability")' in tree
    assert "(POINT,20.5/10.5)" in tree  # pixel centre (row 10, column 20) in SCOORD terms
    assert '"Estimated hemorrhage volume")="12.4" (mL,UCUM,"mL")' in tree
    assert f'"AI usage warning")="{DEMONSTRATION_WARNING}"' in tree
    assert f'"Comment")="{PRELIMINARY_NOTICE}"' in tree
    assert '"Procedure reported")=(CTHEADWO,99STM,"CT head without contrast")' in tree


def test_pixelmed_validates_tid_1500(sr_file):
    if shutil.which("java") is None or not PIXELMED_JAR.exists():
        _tool_missing("pixelmed (apt-get install libpixelmed-java default-jre-headless)")
    done = subprocess.run(["java", *PIXELMED_XPATH_LIMITS, "-cp", str(PIXELMED_JAR),
                           "com.pixelmed.validate.DicomSRValidator", str(sr_file)],
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert "Found Root Template TID_1500 (MeasurementReport)" in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error")
              # TID 1500 row 4 takes the procedure from DCID 100, a *defined* (extensible)
              # context group; the order's own procedure code is the one the RIS knows, so
              # pixelmed's "not found in context group 100" is expected here.
              and "not found in context group 100" not in line]
    assert errors == []


# -- content -----------------------------------------------------------------------------

def test_highdicom_reads_back_findings_points_and_observer(sr_file, located, ct):
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(sr_file))
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.PatientID == ct[0].PatientID and sr.StudyInstanceUID == located.study_uid
    evidence = {item.ReferencedSOPInstanceUID
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence
                for item in series.ReferencedSOPSequence}
    assert evidence == {ds.SOPInstanceUID for ds in ct}
    request = sr.ReferencedRequestSequence[0]
    assert request.AccessionNumber == "ACC24050100017"
    assert request.RequestedProcedureCodeSequence[0].CodeValue == "CTHEADWO"
    report = sr.content
    device = report.get_observer_contexts()[0]
    assert device.observer_type.value == "121007"
    ich, shift, volume = report.get_image_measurement_groups()
    assert ich.finding_type.value == "1386000" and ich.finding_type.scheme_designator == "SCT"
    assert [(q.name.value, q.value.value) for q in ich.get_qualitative_evaluations()] == [
        ("1386000", "52101004")]
    assert [s.value.value for s in ich.finding_sites] == ["12738006"]
    probability = ich.get_measurements()[0]
    assert (probability.name.meaning, probability.value) == ("Probability", 0.973)
    point = probability.referenced_coordinates[0]
    assert point.GraphicType == "POINT" and list(point.GraphicData) == [20.5, 10.5]
    assert point.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID \
        == located.findings[0].location.sop_instance_uid
    assert shift.get_qualitative_evaluations()[0].value.value == "272519000"
    point3d = shift.get_measurements()[0].referenced_coordinates[0]
    assert point3d.ValueType == "SCOORD3D"
    assert point3d.ReferencedFrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert list(point3d.GraphicData) == [-170.0, -175.5, -1.25]
    assert [(m.name.meaning, m.value, m.unit.value) for m in volume.get_measurements()] == [
        ("Estimated hemorrhage volume", 12.4, "mL")]


def test_a_resend_renders_the_same_object(located, ct):
    first, again = render_sr(located, ct), render_sr(located, ct)
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SeriesInstanceUID == again.SeriesInstanceUID
    assert str(first.ContentDate) == "20240501" and str(first.ContentTime).startswith("101532")
    assert first.TimezoneOffsetFromUTC == "+0200"
    assert encoded(first) == encoded(again)
    other = render_sr(replace(located, result_id="res-other"), ct)
    assert other.SOPInstanceUID != first.SOPInstanceUID


def test_a_clinical_model_says_preliminary_and_no_demonstration_warning(located, ct, tmp_path):
    clinical = replace(located, model=replace(located.model, demonstration=False,
                                              name="ICH triage", intended_use=""))
    path = save(render_sr(clinical, ct), tmp_path / "clinical.dcm")
    text = json.dumps(pydicom.dcmread(path).to_json_dict())
    assert PRELIMINARY_NOTICE in text and DEMONSTRATION_WARNING not in text
    assert "AI intended use" not in text
    assert pydicom.dcmread(path).SeriesDescription == "AI SR: ICH triage 0.3.1"


def test_real_ct_with_a_point_in_patient_coordinates(tmp_path):
    path = dicom_data.testdata("CT_small.dcm")
    if path is None:
        pytest.skip("pydicom's CT_small.dcm is not installed")
    image = pydicom.dcmread(path, stop_before_pixels=True)
    result = sample_result(study_uid=str(image.StudyInstanceUID))
    ich = replace(result.findings[0], location=FindingLocation(
        str(image.SOPInstanceUID), row=64, column=32, patient_mm=(-130.0, -190.0, -198.0)))
    out = save(render_sr(replace(result, findings=(ich,)), [image]), tmp_path / "real.dcm")
    assert dciodvfy_errors(out) == []
    group = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(out)) \
        .content.get_image_measurement_groups()[0]
    point = group.get_measurements()[0].referenced_coordinates[0]
    assert point.ReferencedFrameOfReferenceUID == image.FrameOfReferenceUID


def test_a_projection_image_gets_a_2d_point_and_a_located_finding_without_score_a_region(
        tmp_path):
    result = sample_result()
    dx = make_dx(result.study_uid)
    ich = replace(result.findings[0], score=None, location=FindingLocation(
        str(dx.SOPInstanceUID), row=70, column=5, patient_mm=(1.0, 2.0, 3.0)))
    out = save(render_sr(replace(result, findings=(ich,)), [dx]), tmp_path / "dx-sr.dcm")
    assert dciodvfy_errors(out) == []
    report = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(out)).content
    (group,) = report.get_planar_roi_measurement_groups()
    region = group.roi  # no Frame of Reference on a radiograph: the point stays 2-D
    assert region.GraphicType == "POINT" and list(region.GraphicData) == [5.5, 70.5]
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID \
        == dx.SOPInstanceUID


def test_what_does_not_fit_is_refused(located, ct):
    with pytest.raises(SrRenderError, match="not among the evidence"):
        render_sr(located, ct[:1])
    with pytest.raises(SrRenderError, match="no evidence image belongs to study"):
        render_sr(replace(located, study_uid="1.2.3.4"), ct)
    outside = replace(located.findings[0], location=FindingLocation(
        str(ct[0].SOPInstanceUID), row=32, column=1))
    with pytest.raises(SrRenderError, match="outside image"):
        render_sr(replace(located, findings=(outside,)), ct)
    with pytest.raises(SrRenderError, match="no evidence"):
        render_sr(located, [])


# -- a real PACS ---------------------------------------------------------------------------

def test_orthanc_stores_the_sr_over_c_store(orthanc, sr_file, located, ct, tmp_path):
    from radbridge.interfaces.dimse.store_destination import StoreClient
    from tests.dimse_support import client_for

    orthanc.clear()
    client = StoreClient(client_for(orthanc))
    for index, image in enumerate(ct):
        assert client.store(save(image, tmp_path / f"ct{index}.dcm")).status == 0
    outcome = client.store(sr_file)
    assert outcome.status == 0
    sr = pydicom.dcmread(sr_file)
    tags = orthanc.instance_tags(orthanc.find_instance(sr.SOPInstanceUID))
    assert tags["SOPClassUID"] == COMPREHENSIVE_3D_SR
    assert tags["StudyInstanceUID"] == located.study_uid
    found = orthanc.http.get(f"/dicom-web/studies/{located.study_uid}/series",
                             params={"Modality": "SR"}).json()
    assert [s["0020000E"]["Value"][0] for s in found] == [sr.SeriesInstanceUID]
    assert client.store(sr_file).status == 0  # a resend: same UID, the PACS overwrites
    again = orthanc.http.get(f"/dicom-web/studies/{located.study_uid}/instances",
                             params={"Modality": "SR"}).json()
    assert [i["00080018"]["Value"][0] for i in again] == [sr.SOPInstanceUID]


def test_a_patient_sex_dicom_does_not_allow_is_left_empty_not_fatal(tmp_path):
    from radbridge.mappings.sr.concepts import fit_patient
    header = pydicom.Dataset()
    header.PatientSex = "U"  # HL7's unknown, which some modalities write
    fitted = fit_patient(header)
    assert fitted.PatientSex == "" and header.PatientSex == "U"
    header.PatientSex = "F"
    assert fit_patient(header) is header
