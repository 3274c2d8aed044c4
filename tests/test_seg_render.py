"""A finding's mask or heat map as a DICOM Segmentation: valid by dciodvfy, readable by
highdicom, typed by the finding, traceable to the model, on CT slices and on a radiograph;
and the heat map that `heatmap_on_images` puts back on the slices becomes its SEG."""

from __future__ import annotations

from dataclasses import replace

import highdicom as hd
import numpy as np
import pydicom
import pytest

from radbridge.inference.overlay import heatmap_on_images
from radbridge.mappings.results import DEMONSTRATION_WARNING, PRELIMINARY_NOTICE
from radbridge.mappings.sr import SrRenderError, render_seg
from radbridge.mappings.sr.concepts import finding_tracking_uid
from tests.test_sr_render import ct_series, dciodvfy_errors, make_dx, sample_result, save

SIZE = 32


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    return ct_series(tmp_path_factory.mktemp("ct"), size=SIZE)


@pytest.fixture(scope="module")
def result(ct):
    return sample_result(study_uid=str(ct[0].StudyInstanceUID))


def heat(ct):
    """A blob on slices 1 and 2: peak 0.9 on slice 1 (0.3 around it), 0.4 times that on 2."""
    blob = np.zeros((SIZE, SIZE), dtype=np.float32)
    blob[8:16, 4:12] = 0.3
    blob[10:13, 6:9] = 0.9
    return {(str(ct[1].SOPInstanceUID), 1): blob, (str(ct[2].SOPInstanceUID), 1): blob * 0.4}


def read_back(seg, tmp_path, name="seg.dcm"):
    path = save(seg, tmp_path / name)
    assert dciodvfy_errors(path) == []
    return hd.seg.Segmentation.from_dataset(pydicom.dcmread(path))


def test_a_heat_map_becomes_a_binary_seg_at_half_its_peak(ct, result, tmp_path):
    masks = heat(ct)
    seg = read_back(render_seg(result, ct, masks, result.findings[0]), tmp_path)
    assert seg.segmentation_type.value == "BINARY"
    uids = [str(ct[1].SOPInstanceUID), str(ct[2].SOPInstanceUID)]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1])[..., 0]
    expected = np.stack([masks[(uid, 1)] >= 0.45 for uid in uids])
    assert np.array_equal(pixels.astype(bool), expected)
    assert pixels[0].sum() == 9 and pixels[1].sum() == 0  # slice 2 peaks at 0.36 < 0.45
    description = seg.get_segment_description(1)
    assert description.segmented_property_type.value == "1386000"
    assert description.segmented_property_category.value == "49755003"
    assert description.tracking_uid == finding_tracking_uid(result, result.findings[0])
    algorithm = description.algorithm_identification[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (
        "Radbridge ICH triage (demo)", "0.3.1")
    assert [r.value for r in description.anatomic_regions] == ["12738006"]
    assert seg.ContentDescription == DEMONSTRATION_WARNING
    assert seg.ContentQualification == "RESEARCH"
    assert seg.SeriesDescription == "AI SEG DEMO: Radbridge ICH triage (demo) 0.3.1"
    assert (seg.Manufacturer, seg.ManufacturerModelName, seg.DeviceSerialNumber) == (
        "Radbridge", "Radbridge ICH triage (demo)", "radbridge-ich-demo")
    assert seg.StudyInstanceUID == ct[0].StudyInstanceUID and seg.PatientID == ct[0].PatientID


def test_fractional_keeps_the_graded_map(ct, result, tmp_path):
    masks = heat(ct)
    seg = read_back(render_seg(result, ct, masks, result.findings[0], fractional=True),
                    tmp_path)
    assert seg.segmentation_type.value == "FRACTIONAL"
    uid = str(ct[2].SOPInstanceUID)
    pixels = seg.get_pixels_by_source_instance([uid], segment_numbers=[1])[0, ..., 0]
    assert np.allclose(pixels, masks[(uid, 1)], atol=1 / 255)


def test_a_resend_has_the_same_uids_and_a_clinical_model_no_warning(ct, result):
    first = render_seg(result, ct, heat(ct), result.findings[0])
    again = render_seg(result, ct, heat(ct), result.findings[0])
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (
        again.SOPInstanceUID, again.SeriesInstanceUID)
    clinical = replace(result, model=replace(result.model, demonstration=False))
    seg = render_seg(clinical, ct, heat(ct), clinical.findings[0])
    assert seg.ContentDescription == PRELIMINARY_NOTICE and seg.ContentQualification == "PRODUCT"


def test_a_mask_on_a_radiograph(result, tmp_path):
    dx = make_dx(result.study_uid)
    mask = np.zeros((80, 60), dtype=bool)
    mask[60:75, 2:10] = True
    seg = read_back(render_seg(result, [dx], {(str(dx.SOPInstanceUID), 1): mask},
                               result.findings[0]), tmp_path, "dx-seg.dcm")
    pixels = seg.get_pixels_by_source_instance([str(dx.SOPInstanceUID)], segment_numbers=[1])
    assert np.array_equal(pixels[0, ..., 0].astype(bool), mask)
    assert list(seg.PatientOrientation) == ["A", "R"]


def test_the_overlay_of_a_model_heat_map_becomes_the_seg(ct, result, tmp_path):
    grid = {"planes": [{"sop_instance_uid": str(ds.SOPInstanceUID), "frame": 1} for ds in ct],
            "source_shape": [len(ct), SIZE, SIZE], "tensor_shape": [4, 16, 16],
            "axes": [[0.0, 1.0], [0.0, 2.0], [0.0, 2.0]], "source_spacing": None}
    tensor_map = np.zeros((4, 16, 16), dtype=np.float32)
    tensor_map[3, 5, 6] = 1.0
    seg = read_back(render_seg(result, ct, heatmap_on_images(tensor_map, grid),
                               result.findings[0]), tmp_path)
    uid = str(ct[3].SOPInstanceUID)
    pixels = seg.get_pixels_by_source_instance([uid], segment_numbers=[1])[0, ..., 0]
    assert np.argwhere(pixels).tolist() == [[9, 12], [10, 11], [10, 12], [10, 13], [11, 12]]


def test_what_does_not_fit_is_refused(ct, result):
    finding = result.findings[0]
    uid = str(ct[0].SOPInstanceUID)
    with pytest.raises(SrRenderError, match="is \\(4, 4\\)"):
        render_seg(result, ct, {(uid, 1): np.ones((4, 4))}, finding)
    with pytest.raises(SrRenderError, match="marks no pixel"):
        render_seg(result, ct, {(uid, 1): np.zeros((SIZE, SIZE))}, finding)
    with pytest.raises(SrRenderError, match="not among the source"):
        render_seg(result, ct, {("1.2.3", 1): np.ones((SIZE, SIZE))}, finding)
    with pytest.raises(SrRenderError, match="not one of the result's findings"):
        render_seg(result, ct, heat(ct), replace(finding, code="999"))
