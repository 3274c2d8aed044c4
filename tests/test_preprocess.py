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
