"""Between a study's lesion (mm, as `synthetic` gives it) and a voxel of the model's input
tensor (as `preprocess.to_tensor` makes it), both ways: training looks at the lesion's
voxel, tests map the heat map's peak back to millimetres.

A volume goes through the preprocessing's own axes (`Axis.centred` when the card sets a
spacing: resample, then centre crop or pad; `Axis.stretched` otherwise), taken from the
headers alone, so a lesion lands on the voxel the tensor shows it in, whatever the crop.
An image is always stretched: a position scales linearly from the image to the tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from radbridge.inference.cards import Preprocessing
from radbridge.inference.preprocess import Axis, ordered_stack, planes_of

Point = tuple[float, float, float]


def _frame(rule: Preprocessing, datasets: Sequence[Dataset]
           ) -> tuple[NDArray[np.float64], NDArray[np.float64], list[Axis]]:
    """Origin, index axes (one row per source index direction, scaled by its spacing)
    and the tensor's sampling of each source axis."""
    ordered, spacing = ordered_stack([plane for ds in datasets for plane in planes_of(ds)])
    first = ordered[0]
    assert first.position is not None and first.orientation is not None
    row_dir, column_dir = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row_dir, column_dir)
    axes = np.stack([normal * spacing[0], column_dir * spacing[1], row_dir * spacing[2]])
    shape = (len(ordered), int(first.dataset.Rows), int(first.dataset.Columns))
    if rule.spacing is None:
        sampling = [Axis.stretched(n, t) for n, t in zip(shape, rule.size, strict=True)]
    else:
        sampling = [Axis.centred(n, t, new / old) for n, t, new, old in zip(
            shape, rule.size, rule.spacing, spacing, strict=True)]
    return first.position, axes, sampling


def _image_spacing(dataset: Dataset) -> tuple[float, float, list[int]]:
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing") or [1, 1]
    return float(spacing[0]), float(spacing[1]), [int(dataset.Rows), int(dataset.Columns)]


def to_voxel(rule: Preprocessing, datasets: Sequence[Dataset], point: Point
             ) -> tuple[int, ...]:
    """The tensor voxel (without the channel axis) nearest to `point`; clipped to the
    tensor where the point lies outside its field of view."""
    if rule.kind == "volume":
        origin, axes, sampling = _frame(rule, datasets)
        source = np.linalg.solve(axes.T, np.asarray(point) - origin)
        index = [(s - a.offset) / a.step if a.step else 0.0
                 for s, a in zip(source, sampling, strict=True)]
    else:
        row_mm, column_mm, shape = _image_spacing(datasets[0])
        index = [i * (s - 1) / max(n - 1, 1) for i, s, n in zip(
            [point[1] / row_mm, point[0] / column_mm], rule.size, shape, strict=True)]
    return tuple(int(np.clip(round(v), 0, s - 1)) for v, s in zip(index, rule.size,
                                                                  strict=True))


def to_point(rule: Preprocessing, datasets: Sequence[Dataset], voxel: Sequence[int]
             ) -> Point:
    """The position (mm, in the frame `synthetic` uses for lesions) of a tensor voxel."""
    if rule.kind == "volume":
        origin, axes, sampling = _frame(rule, datasets)
        source = [a.offset + v * a.step for v, a in zip(voxel, sampling, strict=True)]
        where = origin + np.asarray(source) @ axes
        return float(where[0]), float(where[1]), float(where[2])
    row_mm, column_mm, shape = _image_spacing(datasets[0])
    row, column = (v * (n - 1) / max(s - 1, 1) for v, s, n in zip(voxel, rule.size, shape,
                                                                   strict=True))
    return column * column_mm, row * row_mm, 0.0
