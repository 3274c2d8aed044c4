"""Shapes drawn into numpy grids in millimetres: the anatomy of the synthetic studies.

Every function takes open coordinate grids (one broadcastable array of mm per axis), so one
function draws into a 2D image or a 3D volume alike. Edges are soft (a ramp about a voxel
wide) so that resampling meets partial volumes as it does on a scanner. `paint_tube` works
inside the segment's bounding box only, which keeps a vessel tree cheap to draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from radbridge.inference.preprocess import resize

Array = NDArray[Any]
"""Float arrays (float32 in practice; numpy's arithmetic does not keep the type)."""
Point = Sequence[float]
Grids = list[Array]


def grids(shape: Sequence[int], spacing: Sequence[float], origin: Sequence[float]) -> Grids:
    """Open coordinate grids in mm (one per axis, broadcastable)."""
    axes = [(o + s * np.arange(n)).astype(np.float32)
            for n, s, o in zip(shape, spacing, origin, strict=True)]
    return [np.asarray(a, dtype=np.float32)
            for a in np.meshgrid(*axes, indexing="ij", sparse=True)]


def soft(distance: Array, edge: float) -> Array:
    """1 inside (distance < 0), 0 outside, a linear ramp `edge` mm wide across the border."""
    return np.clip(0.5 - distance / max(edge, 1e-6), 0.0, 1.0).astype(np.float32)


def ellipsoid(axes: Grids, centre: Point, radii: Point, edge: float = 1.0) -> Array:
    """Soft mask of an axis-aligned ellipse (2D) or ellipsoid (3D)."""
    scaled = sum(((g - c) / r) ** 2 for g, c, r in zip(axes, centre, radii, strict=True))
    distance = (np.sqrt(np.asarray(scaled, dtype=np.float32)) - 1.0) * float(min(radii))
    return soft(distance, edge)


def tube(axes: Grids, start: Point, end: Point, radius: tuple[float, float],
         edge: float = 1.0, capped: bool = True) -> tuple[Array, Array]:
    """A segment whose radius goes linearly from radius[0] to radius[1]: its soft mask and
    the position along it (0 at `start`, 1 at `end`). `capped=False` cuts the far end flat,
    as a vessel stops at an occlusion."""
    a = [float(v) for v in start]
    d = [float(e) - s for e, s in zip(end, start, strict=True)]
    length2 = sum(v * v for v in d) or 1e-6
    along = np.asarray(sum((g - s) * v for g, s, v in zip(axes, a, d, strict=True)) / length2,
                       dtype=np.float32)
    t = np.clip(along, 0.0, 1.0)
    distance2 = sum((g - s - t * v) ** 2 for g, s, v in zip(axes, a, d, strict=True))
    r = radius[0] + (radius[1] - radius[0]) * t
    mask = soft(np.sqrt(np.asarray(distance2, dtype=np.float32)) - r, edge)
    if not capped:
        mask = mask * (along <= 1.0)
    return mask.astype(np.float32), t


def box(axes: Grids, low: Point, high: Point) -> tuple[slice, ...]:
    """Index ranges of the grid points between `low` and `high` (mm) on each axis."""
    slices = []
    for g, lo, hi in zip(axes, low, high, strict=True):
        values = g.reshape(-1)
        step = float(values[1] - values[0]) if values.size > 1 else 1.0
        first = int(np.clip(np.floor((lo - values[0]) / step), 0, values.size))
        last = int(np.clip(np.ceil((hi - values[0]) / step) + 1, 0, values.size))
        slices.append(slice(first, max(first, last)))
    return tuple(slices)


def crop(axes: Grids, where: tuple[slice, ...]) -> Grids:
    """The grids restricted to `where` (each grid is cut along its own axis only)."""
    return [g[tuple(s if i == axis else slice(None) for i, s in enumerate(where))]
            for axis, g in enumerate(axes)]


Value = Callable[[Array], Array] | float


def paint_tube(target: Array, axes: Grids, start: Point, end: Point,
               radius: tuple[float, float], value: Value, *, capped: bool = True,
               edge: float = 1.0) -> Array:
    """Blend a tube of `value` (a number, or a function of the position along it) into
    `target` in place; returns the tube's mask within `target`'s shape."""
    reach = max(radius) + 2 * edge
    low = [min(s, e) - reach for s, e in zip(start, end, strict=True)]
    high = [max(s, e) + reach for s, e in zip(start, end, strict=True)]
    where = box(axes, low, high)
    full = np.zeros(target.shape, dtype=np.float32)
    if any(s.stop <= s.start for s in where):
        return full
    mask, t = tube(crop(axes, where), start, end, radius, edge, capped)
    level = value(t) if callable(value) else np.float32(value)
    region = target[where]
    target[where] = region + (level - region) * mask
    full[where] = mask
    return full


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], coarse: Sequence[int]
                 ) -> Array:
    """Smooth texture of about unit amplitude: random values on a coarse grid, interpolated."""
    small = rng.standard_normal(tuple(coarse)).astype(np.float32)
    return resize(small, shape)
