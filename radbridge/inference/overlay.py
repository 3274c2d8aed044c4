"""A model's heat map, given on the tensor's grid, put back onto the source images.

Preprocessing samples each source axis as `source index = offset + tensor index * step`
(`preprocess.Grid`, and its JSON form `Grid.to_json()`). The way back inverts that per
axis, `tensor index = (source index - offset) / step`, and interpolates linearly between
the two neighbouring tensor samples; a source pixel that falls outside the tensor's
extent gets 0, because the model never saw it. Linear interpolation is separable, so each
axis is one small interpolation matrix and a plane is `rows @ slice @ columns.T`: no
pixel loops, and only planes where the map is non-zero are built (a 300-slice CT with a
focal finding yields a handful of planes, not 300 full-size arrays).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from radbridge.errors import RadbridgeError

FloatArray = NDArray[np.float32]
SNAP = 1e-6
"""A tensor position this close to a whole index is that index (exact peaks stay exact)."""


class OverlayError(RadbridgeError, ValueError):
    """The heat map and the grid description do not fit together; the message says how."""


def interpolation_matrix(source_size: int, tensor_size: int, offset: float, step: float
                         ) -> FloatArray:
    """(source_size, tensor_size) weights: row s blends the tensor samples around
    (s - offset) / step; all-zero rows for source indices outside the tensor's extent.
    A step of 0 (one tensor sample) stands for the source index nearest `offset` only."""
    matrix = np.zeros((source_size, tensor_size), dtype=np.float32)
    source = np.arange(source_size, dtype=np.float64)
    if step == 0.0:
        where = np.where(np.abs(source - offset) <= 0.5, 0.0, -1.0)
    else:
        where = (source - offset) / step
    nearest = np.rint(where)
    where = np.where(np.abs(where - nearest) < SNAP, nearest, where)
    inside = (where >= 0.0) & (where <= tensor_size - 1)
    low = np.floor(np.clip(where, 0, tensor_size - 1)).astype(int)
    high = np.minimum(low + 1, tensor_size - 1)
    weight = (where - low).astype(np.float32)
    rows = np.flatnonzero(inside)
    np.add.at(matrix, (rows, low[rows]), 1.0 - weight[rows])
    np.add.at(matrix, (rows, high[rows]), weight[rows])
    return matrix


def heatmap_on_images(heatmap: NDArray[Any], grid: Mapping[str, Any], *,
                      threshold: float = 0.0) -> dict[tuple[str, int], FloatArray]:
    """The heat map on each source plane's pixel grid, keyed by (SOP Instance UID, frame).

    `grid` is `Grid.to_json()`; `heatmap` has the tensor's spatial shape, with any
    leading batch or channel dimensions of size 1. Planes where no value exceeds
    `threshold` are left out; the arrays are float32, (rows, columns) of the image."""
    axes, planes, source_shape, tensor_shape = _read_grid(grid)
    values = _spatial(np.asarray(heatmap, dtype=np.float32), tensor_shape)
    if len(tensor_shape) == 2:
        values, source_shape = values[np.newaxis], (1, *source_shape)
        axes = ((0.0, 0.0), *axes)
    depth, rows, columns = (interpolation_matrix(n, t, offset, step) for n, t, (offset, step)
                            in zip(source_shape, values.shape, axes, strict=True))
    out: dict[tuple[str, int], FloatArray] = {}
    for index, plane in enumerate(planes):
        weights = depth[index]
        used = np.flatnonzero(weights)
        if used.size == 0:
            continue
        blended = np.tensordot(weights[used], values[used], axes=1)
        if not (blended > threshold).any():
            continue
        image: FloatArray = (rows @ blended @ columns.T).astype(np.float32)
        if (image > threshold).any():
            out[plane] = image
    return out


def _read_grid(grid: Mapping[str, Any]) -> tuple[tuple[tuple[float, float], ...],
                                                list[tuple[str, int]], tuple[int, ...],
                                                tuple[int, ...]]:
    try:
        axes = tuple((float(offset), float(step)) for offset, step in grid["axes"])
        planes = [(str(p["sop_instance_uid"]), int(p.get("frame", 1))) for p in grid["planes"]]
        source_shape = tuple(int(n) for n in grid["source_shape"])
        tensor_shape = tuple(int(n) for n in grid["tensor_shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise OverlayError(f"not a grid description (Grid.to_json()): {exc!r}") from exc
    if len(tensor_shape) not in (2, 3) or not (len(axes) == len(source_shape)
                                               == len(tensor_shape)):
        raise OverlayError("the grid needs 2 or 3 axes, with one shape entry and one "
                           "(offset, step) pair for each")
    expected = source_shape[0] if len(source_shape) == 3 else 1
    if len(planes) != expected:
        raise OverlayError(f"the grid lists {len(planes)} planes for {expected} source slices")
    return axes, planes, source_shape, tensor_shape


def _spatial(values: FloatArray, shape: Sequence[int]) -> FloatArray:
    """Drop leading dimensions of size 1 (batch, channel) down to the grid's rank."""
    while values.ndim > len(shape) and values.shape[0] == 1:
        values = values[0]
    if values.shape != tuple(shape):
        raise OverlayError(f"heat map shape {values.shape} is not the tensor grid's "
                           f"{tuple(shape)}")
    return values
