"""A heat map on the tensor's grid goes back onto the right source image and pixel."""

from __future__ import annotations

import numpy as np
import pytest

from radbridge.inference.overlay import OverlayError, heatmap_on_images, interpolation_matrix


def volume_grid(slices: int = 10, size: int = 40) -> dict[str, object]:
    """Tensor (5, 20, 20) over (slices, size, size): tensor k is source slice 1 + 2k,
    tensor row/column j is source row/column 2j (what Grid.to_json() writes)."""
    return {"planes": [{"sop_instance_uid": f"1.2.3.{n}", "frame": 1} for n in range(slices)],
            "source_shape": [slices, size, size], "tensor_shape": [5, 20, 20],
            "axes": [[1.0, 2.0], [0.0, 2.0], [0.0, 2.0]], "source_spacing": [2.5, 0.7, 0.7]}


def test_a_volume_peak_lands_on_its_slice_row_and_column():
    heatmap = np.zeros((1, 1, 5, 20, 20), dtype=np.float32)  # batch and channel dims
    heatmap[0, 0, 2, 5, 7] = 1.0
    planes = heatmap_on_images(heatmap, volume_grid())
    assert sorted(planes) == [("1.2.3.4", 1), ("1.2.3.5", 1), ("1.2.3.6", 1)]
    peak = planes[("1.2.3.5", 1)]
    assert peak.shape == (40, 40) and peak.dtype == np.float32
    assert np.unravel_index(np.argmax(peak), peak.shape) == (10, 14)
    assert peak[10, 14] == 1.0  # exact: source index 5 is tensor index 2, no blending
    assert peak[11, 14] == pytest.approx(0.5) and peak[10, 15] == pytest.approx(0.5)
    assert peak[12, 14] == 0.0
    assert planes[("1.2.3.4", 1)].max() == pytest.approx(0.5)  # half-way between samples


def test_what_the_model_never_saw_is_zero():
    heatmap = np.ones((5, 20, 20), dtype=np.float32)
    planes = heatmap_on_images(heatmap, volume_grid())
    assert ("1.2.3.0", 1) not in planes  # slice 0 lies before tensor slice 0 (source 1)
    assert ("1.2.3.9", 1) in planes  # source 9 is tensor 4
    image = planes[("1.2.3.5", 1)]
    assert image[:39, :39].min() == 1.0 and image[39, :].max() == 0.0  # 39 > 2 * 19


def test_a_2d_grid_maps_onto_its_one_image_and_planes_below_threshold_are_left_out():
    grid = {"planes": [{"sop_instance_uid": "1.2.9", "frame": 3}], "source_shape": [80, 60],
            "tensor_shape": [16, 12], "axes": [[2.0, 5.0], [1.0, 4.0]],
            "source_spacing": None}
    heatmap = np.zeros((1, 16, 12), dtype=np.float32)
    heatmap[0, 3, 4] = 0.8
    (key, image), = heatmap_on_images(heatmap, grid).items()
    assert key == ("1.2.9", 3)
    assert np.unravel_index(np.argmax(image), image.shape) == (17, 17)
    assert image[17, 17] == pytest.approx(0.8)
    assert heatmap_on_images(heatmap, grid, threshold=0.8) == {}


def test_a_single_sample_axis_stands_for_the_source_index_at_its_offset():
    matrix = interpolation_matrix(5, 1, 2.0, 0.0)
    assert matrix[:, 0].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_a_map_that_does_not_fit_the_grid_is_refused():
    with pytest.raises(OverlayError, match="shape"):
        heatmap_on_images(np.zeros((5, 20, 21)), volume_grid())
    with pytest.raises(OverlayError, match="not a grid"):
        heatmap_on_images(np.zeros((5, 20, 20)), {"planes": []})
    bad = volume_grid()
    bad["planes"] = bad["planes"][:3]  # type: ignore[index]
    with pytest.raises(OverlayError, match="planes"):
        heatmap_on_images(np.zeros((5, 20, 20)), bad)
