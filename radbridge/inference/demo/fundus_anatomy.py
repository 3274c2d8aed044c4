"""A synthetic colour fundus photograph: the retina's orange-red disc with vignetting, the
optic disc, the macula and the vessel arcades. A positive (diabetic retinopathy) has a
cluster of small dark-red dots and blots, yellow exudates, or both; its place is that of
the largest of them.

Drawn in pixels of a 256 x 256 image; a lesion's place is (column mm, row mm, 0).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from radbridge.inference.demo.drawing import Array, ellipsoid, grids, paint_tube, smooth_noise

XYZ = tuple[float, float, float]
SIZE, PIXEL = 256, 0.047
"""Pixels across, and mm of retina per pixel (a 45 degree field is about 12 mm)."""


@dataclass(frozen=True)
class Photograph:
    rgb: Array
    """(rows, columns, 3) in 0..255."""
    pixel: float
    lesion: XYZ | None
    laterality: str


def _bezier(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float],
            steps: int) -> list[tuple[float, float]]:
    return [((1 - t) ** 2 * a[0] + 2 * (1 - t) * t * b[0] + t * t * c[0],
             (1 - t) ** 2 * a[1] + 2 * (1 - t) * t * b[1] + t * t * c[1])
            for t in np.linspace(0, 1, steps + 1)]


def _vessels(rng: np.random.Generator, axes: list[Array], disc: tuple[float, float],
             temporal: float) -> Array:
    """How much vessel covers each pixel (0..1): four arcades and a few branches."""
    cover = np.zeros((SIZE, SIZE), dtype=np.float32)
    fovea = (SIZE / 2, disc[1] + temporal * SIZE * 0.24)
    for up in (-1, 1):
        end = (fovea[0] + up * SIZE * rng.uniform(0.2, 0.28),
               fovea[1] + temporal * SIZE * rng.uniform(0.22, 0.3))
        bend = (disc[0] + up * SIZE * 0.3, fovea[1] - temporal * SIZE * 0.02)
        nasal = (disc[0] + up * SIZE * rng.uniform(0.2, 0.3),
                 disc[1] - temporal * SIZE * rng.uniform(0.15, 0.25))
        for path, width in ((_bezier(disc, bend, end, 8), 2.6),
                            (_bezier(disc, (disc[0] + up * 20, disc[1]), nasal, 5), 1.9)):
            for k, (p, q) in enumerate(itertools.pairwise(path)):
                w0 = width * (1 - 0.6 * k / len(path))
                w1 = width * (1 - 0.6 * (k + 1) / len(path))
                np.maximum(cover, paint_tube(np.zeros_like(cover), axes, p, q, (w0, w1), 1.0),
                           out=cover)
            branch = path[len(path) // 2]
            tip = (branch[0] + rng.uniform(-40, 40), branch[1] + rng.uniform(-40, 40))
            np.maximum(cover, paint_tube(np.zeros_like(cover), axes, branch, tip, (1.4, 0.6),
                                         1.0), out=cover)
    return cover


def fundus(rng: np.random.Generator, positive: bool, noise: float) -> Photograph:
    """See the module docstring; `noise` scales the sensor noise."""
    axes = grids((SIZE, SIZE), (1.0, 1.0), (0.0, 0.0))
    y, x = axes
    laterality = "R" if rng.random() < 0.5 else "L"
    temporal = -1.0 if laterality == "R" else 1.0  # the disc is nasal: right of a right eye
    centre = (SIZE / 2 + rng.uniform(-4, 4), SIZE / 2 + rng.uniform(-4, 4))
    field = ellipsoid(axes, centre, (SIZE * 0.47, SIZE * 0.47), edge=2.0)
    radius = np.sqrt((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (SIZE * 0.47)
    shade = (1 - 0.35 * radius ** 2) * (1 + 0.05 * smooth_noise(rng, (SIZE, SIZE), (8, 8)))
    base = np.asarray([rng.uniform(170, 200), rng.uniform(70, 95), rng.uniform(25, 45)],
                      dtype=np.float32)
    rgb = shade[..., None] * base
    disc = (centre[0] + rng.uniform(-8, 8), centre[1] - temporal * SIZE * rng.uniform(0.2, 0.26))
    optic = ellipsoid(axes, disc, (17.0, 15.0), edge=2.0)[..., None]
    rgb += (np.asarray([250, 215, 150], dtype=np.float32) - rgb) * optic * 0.9
    fovea = (centre[0], disc[1] + temporal * SIZE * 0.24)
    macula = np.exp(-((y - fovea[0]) ** 2 + (x - fovea[1]) ** 2) / (2 * 14.0 ** 2))
    rgb *= (1 - 0.3 * macula)[..., None]
    vessels = _vessels(rng, axes, disc, temporal)[..., None]
    rgb *= 1 - vessels * np.asarray([0.35, 0.6, 0.55], dtype=np.float32)
    lesion: XYZ | None = None
    if positive:
        kind = rng.choice(["dots", "exudates", "both"], p=[0.5, 0.2, 0.3])
        angle, reach = rng.uniform(0, 2 * np.pi), rng.uniform(20, 55)
        cluster = (fovea[0] + reach * np.sin(angle), fovea[1] + reach * np.cos(angle))
        largest = (0.0, cluster)
        if kind != "exudates":
            for _ in range(int(rng.integers(3, 10))):
                spot = (cluster[0] + rng.uniform(-22, 22), cluster[1] + rng.uniform(-22, 22))
                r = rng.uniform(1.8, 4.0)
                largest = max(largest, (r, spot))
                dot = ellipsoid(axes, spot, (r, r * rng.uniform(0.7, 1.0)), edge=1.0)[..., None]
                rgb *= 1 - dot * np.asarray([0.5, 0.75, 0.7], dtype=np.float32)
        if kind != "dots":
            for _ in range(int(rng.integers(2, 7))):
                spot = (cluster[0] + rng.uniform(-20, 20), cluster[1] + rng.uniform(-20, 20))
                r = rng.uniform(2.0, 4.5)
                largest = max(largest, (r, spot))
                patch = ellipsoid(axes, spot, (r, r * rng.uniform(0.6, 1.0)), edge=1.0)
                colour = np.asarray([245, 220, 90], dtype=np.float32)
                rgb += (colour - rgb) * (0.85 * patch)[..., None]
        spot = largest[1]
        lesion = (float(spot[1] * PIXEL), float(spot[0] * PIXEL), 0.0)
    rgb = rgb * field[..., None] + 4.0
    rgb += rng.standard_normal(rgb.shape).astype(np.float32) * 3.0 * noise
    return Photograph(np.clip(rgb, 0, 255).astype(np.float32), PIXEL, lesion, laterality)
