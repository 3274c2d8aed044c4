"""Between a study's lesion (mm, as `synthetic` gives it) and a voxel of the model's input
tensor (as `preprocess.to_tensor` makes it), both ways: training looks at the lesion's
voxel, tests map the heat map's peak back to millimetres.

Resampling and resizing both keep the first and last samples in place, so a position
scales linearly from the series' grid to the tensor's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from radbridge.inference.cards import Preprocessing
from radbridge.inference.preprocess import order_slices

Point = tuple[float, float, float]


def _frame(datasets: Sequence[Dataset]) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                 NDArray[np.float64], list[int]]:
    """Origin, axes (one row per index direction, scaled by spacing) and grid shape."""
    ordered = order_slices(datasets)
    first = ordered[0]
    origin = np.asarray([float(v) for v in first.ImagePositionPatient])
    orientation = np.asarray([float(v) for v in first.ImageOrientationPatient])
    row_dir, column_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, column_dir)
    last = np.asarray([float(v) for v in ordered[-1].ImagePositionPatient])
    between = float(np.dot(last - origin, normal)) / max(len(ordered) - 1, 1)
    row_mm, column_mm = (float(v) for v in first.PixelSpacing)
    axes = np.stack([normal * between, column_dir * row_mm, row_dir * column_mm])
    return origin, axes, origin, [len(ordered), int(first.Rows), int(first.Columns)]


def _image_spacing(dataset: Dataset) -> tuple[float, float, list[int]]:
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing") or [1, 1]
    return float(spacing[0]), float(spacing[1]), [int(dataset.Rows), int(dataset.Columns)]


def to_voxel(rule: Preprocessing, datasets: Sequence[Dataset], point: Point
             ) -> tuple[int, ...]:
    """The tensor voxel (without the channel axis) nearest to `point`."""
    if rule.kind == "volume":
        origin, axes, _, shape = _frame(datasets)
        index = np.linalg.solve(axes.T, np.asarray(point) - origin)
    else:
        row_mm, column_mm, shape = _image_spacing(datasets[0])
        index = np.asarray([point[1] / row_mm, point[0] / column_mm])
    scaled = [i * (s - 1) / max(n - 1, 1) for i, s, n in zip(index, rule.size, shape,
                                                               strict=True)]
    return tuple(int(np.clip(round(v), 0, s - 1)) for v, s in zip(scaled, rule.size,
                                                                  strict=True))


def to_point(rule: Preprocessing, datasets: Sequence[Dataset], voxel: Sequence[int]
             ) -> Point:
    """The position (mm, in the frame `synthetic` uses for lesions) of a tensor voxel."""
    if rule.kind == "volume":
        origin, axes, _, shape = _frame(datasets)
        index = [v * (n - 1) / max(s - 1, 1) for v, s, n in zip(voxel, rule.size, shape,
                                                                  strict=True)]
        where = origin + np.asarray(index) @ axes
        return float(where[0]), float(where[1]), float(where[2])
    row_mm, column_mm, shape = _image_spacing(datasets[0])
    row, column = (v * (n - 1) / max(s - 1, 1) for v, s, n in zip(voxel, rule.size, shape,
                                                                   strict=True))
    return column * column_mm, row * row_mm, 0.0
