"""Preprocessing from DICOM, checked against independent computations on real and
generated files."""

from __future__ import annotations

import random

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from radbridge.inference.cards import Preprocessing, Range
from radbridge.inference.preprocess import (
    PreprocessError,
    apply_window,
    build_volume,
    order_slices,
    photograph,
    planes_of,
    prepare,
    real_values,
    resample,
    to_tensor,
)
from tests import dicom_data


@pytest.fixture
def series(tmp_path):
    paths = dicom_data.make_ct_series(tmp_path, 12, rows=32, columns=32, seed=4)
    return [pydicom.dcmread(p) for p in paths]


def test_slices_are_ordered_by_position_not_instance_number(series):
    shuffled = list(series)
    random.Random(1).shuffle(shuffled)
    for number, ds in enumerate(shuffled):  # InstanceNumber now says nothing
        ds.InstanceNumber = 100 - number
    ordered = order_slices(shuffled)
    z = [float(ds.ImagePositionPatient[2]) for ds in ordered]
    assert z == sorted(z)  # the normal of [1,0,0,0,1,0] is +z
    by_z = sorted(series, key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert [ds.SOPInstanceUID for ds in ordered] == [ds.SOPInstanceUID for ds in by_z]


def test_a_tilted_series_is_ordered_along_its_normal(series):
    for ds in series:  # a coronal stack: rows along x, columns along z; normal is -y
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, z, y]
    normal = np.cross([1, 0, 0], [0, 0, -1])
    ordered = order_slices(list(reversed(series)))
    along = [float(np.dot([float(v) for v in ds.ImagePositionPatient], normal))
             for ds in ordered]
    assert along == sorted(along)


def test_mixed_orientations_missing_and_doubled_slices_are_refused(series):
    with pytest.raises(PreprocessError, match="missing"):
        order_slices(series[:5] + series[6:])
    doubled = [*series[:3], series[1]]
    with pytest.raises(PreprocessError, match="share one position"):
        order_slices(doubled)
    series[2].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    with pytest.raises(PreprocessError, match="mixes orientations"):
        order_slices(series)


def test_real_values_follow_rescale_and_monochrome1():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) \
        + float(ds.RescaleIntercept)
    assert np.allclose(real_values(ds), expected)
    mono1 = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    mono1.PhotometricInterpretation = "MONOCHROME1"
    inverted = real_values(mono1)
    top = (2 ** int(mono1.BitsStored) - 1) * float(mono1.RescaleSlope) \
        + float(mono1.RescaleIntercept)
    assert np.allclose(inverted, top + float(mono1.RescaleIntercept) - expected)


def test_a_volume_has_the_right_spacing_and_values(series):
    volume = build_volume(series)
    assert volume.voxels.shape == (12, 32, 32)
    assert volume.spacing == pytest.approx((1.25, float(series[0].PixelSpacing[0]),
                                            float(series[0].PixelSpacing[1])))
    by_z = sorted(series, key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert np.allclose(volume.voxels[3], real_values(by_z[3]))
    finer = resample(volume, (0.625, volume.spacing[1], volume.spacing[2]))
    assert finer.voxels.shape[0] == 23  # 11 gaps of 1.25 mm become 22 of 0.625
    assert np.allclose(finer.voxels[2], volume.voxels[1])  # existing planes are kept
    assert np.allclose(finer.voxels[1], (volume.voxels[0] + volume.voxels[1]) / 2)


def test_window_and_tensor_shapes(series):
    values = np.asarray([-100, 0, 40, 80, 300], dtype=np.float32)
    assert apply_window(values, Range(min=0, max=80)).tolist() == [0, 0, 0.5, 1, 1]
    tensor = to_tensor(Preprocessing(kind="volume", size=[8, 16, 16], spacing=[2.5, 1, 1],
                                     window=Range(min=-100, max=200)), series)
    assert tensor.shape == (1, 8, 16, 16) and tensor.dtype == np.float32
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0


def test_real_compressed_and_colour_files_decode():
    jpeg2000 = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    plain = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    assert np.array_equal(real_values(jpeg2000), real_values(plain))  # lossless
    ybr = pydicom.dcmread(get_testdata_file("SC_rgb_dcmtk_+eb+cy+n1.dcm"))
    rgb = pydicom.dcmread(get_testdata_file("SC_rgb_dcmtk_+eb+cr.dcm"))
    assert float(np.abs(photograph(ybr) - photograph(rgb)).mean()) < 0.03  # both lossy JPEG
    tensor = to_tensor(Preprocessing(kind="photograph", size=[32, 32], channels=3), [rgb])
    assert tensor.shape == (3, 32, 32)


def test_an_enhanced_ct_gives_one_plane_per_frame_from_its_functional_groups():
    enhanced = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    planes = planes_of(enhanced)
    per_frame = enhanced.PerFrameFunctionalGroupsSequence
    assert [list(p.position) for p in planes] == [
        [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        for item in per_frame]
    volume = build_volume([enhanced])
    # orientation [-1,0,0, 0,1,0]: the normal is -z, so the frame at z=-149 comes first
    assert [p.frame for p in volume.planes] == [2, 1]
    assert volume.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    shared = enhanced.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    expected = enhanced.pixel_array[1].astype(np.float64) * float(shared.RescaleSlope) \
        + float(shared.RescaleIntercept)
    assert np.allclose(volume.voxels[0], expected)


def test_the_grid_maps_tensor_corners_back_to_slices_pixels_and_patient_space(series):
    rule = Preprocessing(kind="volume", size=[6, 16, 16])  # a plain resize: corners on corners
    prepared = prepare(rule, list(reversed(series)))
    by_z = sorted(series, key=lambda ds: float(ds.ImagePositionPatient[2]))
    first = prepared.grid.locate((0, 0, 0))
    assert first.sop_instance_uid == by_z[0].SOPInstanceUID
    assert first.patient == pytest.approx(tuple(float(v) for v in by_z[0].ImagePositionPatient))
    last = prepared.grid.locate((5, 15, 15))
    assert last.sop_instance_uid == by_z[-1].SOPInstanceUID
    assert (last.row, last.column) == pytest.approx((31, 31))
    spacing = [float(v) for v in by_z[-1].PixelSpacing]
    corner = np.asarray([float(v) for v in by_z[-1].ImagePositionPatient]) \
        + np.asarray([31 * spacing[1], 31 * spacing[0], 0.0])  # orientation [1,0,0,0,1,0]
    assert last.patient == pytest.approx(tuple(corner))
    size = prepared.grid.element_size()
    assert size is not None and size[0] == pytest.approx(11 * 1.25 / 5)


def test_a_series_over_the_memory_budget_is_refused_before_decoding(series):
    rule = Preprocessing(kind="volume", size=[6, 16, 16])
    with pytest.raises(PreprocessError, match="over the budget"):
        prepare(rule, series, budget_bytes=12 * 32 * 32 * 4 - 1)
    assert prepare(rule, series, budget_bytes=12 * 32 * 32 * 4).tensor.shape == (1, 6, 16, 16)


def test_a_multi_frame_object_is_not_one_image():
    two_frames = pydicom.dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm"))
    with pytest.raises(PreprocessError, match="one image, got 2"):
        prepare(Preprocessing(kind="image", size=[16, 16]), [two_frames])


def test_a_card_spacing_keeps_the_physical_scale_centred_and_pads_outside(series):
    volume = build_volume(series)  # 12 x 32 x 32, spacing (1.25, s, s)
    s = volume.spacing[1]
    rule = Preprocessing(kind="volume", size=[8, 12, 40], spacing=[2.5, 2 * s, s],
                         window=Range(min=-2000, max=4000))
    prepared = prepare(rule, series)
    assert prepared.grid.element_size() == pytest.approx((2.5, 2 * s, s))
    # the centres coincide: tensor (3.5, 5.5, 19.5) is source (5.5, 15.5, 15.5)
    assert prepared.grid.source_index((3.5, 5.5, 19.5)) == pytest.approx((5.5, 15.5, 15.5))
    tensor = prepared.tensor[0]
    # columns beyond the source's 32 are padding (the window's low end: 0)
    assert np.all(tensor[:, :, :4] == 0) and np.all(tensor[:, :, -4:] == 0)
    # inside, a sample equals the independent linear interpolation of the source
    z, y, x = prepared.grid.source_index((2, 3, 10))
    z0, y0 = int(np.floor(z)), int(np.floor(y))
    x0 = round(x)
    assert x == pytest.approx(x0)
    wz, wy = z - z0, y - y0
    v = volume.voxels
    expected = ((1 - wz) * ((1 - wy) * v[z0, y0, x0] + wy * v[z0, y0 + 1, x0])
                + wz * ((1 - wy) * v[z0 + 1, y0, x0] + wy * v[z0 + 1, y0 + 1, x0]))
    assert tensor[2, 3, 10] == pytest.approx((expected + 2000) / 6000, abs=1e-5)
