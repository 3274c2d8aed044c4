"""Synthetic CT anatomy in Hounsfield units: a head (plain, or with contrast in its
arteries) and a chest with contrast in the pulmonary arteries.

Patient coordinates follow DICOM (LPS: x to the patient's left, y posterior, z superior);
volumes are indexed (slice, row, column) = (z, y, x). Each function returns the volume, its
grid and, for a positive study, where the lesion is (x, y, z in mm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radbridge.inference.demo.drawing import Array, ellipsoid, grids, paint_tube, smooth_noise

XYZ = tuple[float, float, float]
AIR, FAT, SOFT, CSF, LUNG = -1000.0, -90.0, 40.0, 8.0, -850.0


@dataclass(frozen=True)
class CtVolume:
    hu: Array
    """(slices, rows, columns), z ascending."""
    origin: XYZ
    """Patient position of voxel (0, 0, 0): x, y, z in mm."""
    spacing: tuple[float, float, float]
    """Slice, row, column spacing in mm."""
    lesion: XYZ | None


def _zyx(point: XYZ) -> tuple[float, float, float]:
    return point[2], point[1], point[0]


def _grid(slices: int, size: int, pixel: float, thickness: float, z0: float
          ) -> tuple[list[Array], XYZ]:
    half = (size - 1) / 2 * pixel
    origin = (-half, -half, z0)
    return grids((slices, size, size), (thickness, pixel, pixel), (z0, -half, -half)), origin


def _head(rng: np.random.Generator, axes: list[Array], brain: float) -> tuple[Array, Array]:
    """Air, scalp, skull and brain with ventricles; returns the volume and the brain mask."""
    scale = rng.uniform(0.92, 1.06)
    centre = (10.0, rng.uniform(-4, 4), rng.uniform(-3, 3))
    outer = (80.0 * scale, 95.0 * scale, 74.0 * scale)
    shape = tuple(len(g.reshape(-1)) for g in axes)
    hu = np.full(shape, AIR, dtype=np.float32)
    for radii, value in (([r + 4 for r in outer], SOFT), (outer, rng.uniform(900, 1400))):
        mask = ellipsoid(axes, centre, radii, edge=1.5)
        hu += (value - hu) * mask
    inner = [r - 7 for r in outer]
    inside = ellipsoid(axes, centre, inner, edge=1.5)
    texture = brain + 3.0 * smooth_noise(rng, shape, (4, 12, 12))
    hu += (texture - hu) * inside
    for side in (-1, 1):
        ventricle = ellipsoid(axes, (22.0, centre[1] - 6, centre[2] + side * 9),
                              (14.0, 24.0, 5.0), edge=1.5)
        hu += (CSF - hu) * ventricle
    return hu, inside


def _noisy(rng: np.random.Generator, hu: Array, sigma: float) -> Array:
    noisy: Array = hu + rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(sigma)
    return noisy


def head_ct(rng: np.random.Generator, positive: bool, noise: float) -> CtVolume:
    """Non-contrast head CT, 24 slices of 5 mm; a positive has an acute haemorrhage
    (a 55-85 HU ellipsoid of 5-14 mm radii inside the brain)."""
    slices, size, pixel, thickness, z0 = 24, 128, 1.8, 5.0, -40.0
    axes, origin = _grid(slices, size, pixel, thickness, z0)
    hu, inside = _head(rng, axes, rng.uniform(30, 38))
    lesion: XYZ | None = None
    if positive:
        lesion = (rng.uniform(-40, 40), rng.uniform(-50, 45), rng.uniform(-15, 55))
        radii = (rng.uniform(6, 14), rng.uniform(5, 14), rng.uniform(5, 14))
        blob = ellipsoid(axes, _zyx(lesion), radii, edge=2.0) * inside
        hu += (rng.uniform(55, 85) - hu) * blob
    return CtVolume(_noisy(rng, hu, 4.0 * noise), origin, (thickness, pixel, pixel), lesion)


def head_cta(rng: np.random.Generator, positive: bool, noise: float) -> CtVolume:
    """Head CT angiogram, 32 slices of 2.5 mm around the circle of Willis; a positive has
    one middle cerebral artery (M1) cut off flat, nothing filling beyond it."""
    slices, size, pixel, thickness, z0 = 32, 128, 1.7, 2.5, -35.0
    axes, origin = _grid(slices, size, pixel, thickness, z0)
    brain = rng.uniform(36, 44)
    hu, _ = _head(rng, axes, brain)
    vessel = rng.uniform(260, 360)
    occluded = int(rng.choice([-1, 1])) if positive else 0
    lesion: XYZ | None = None

    def jitter(x: float, y: float, z: float) -> XYZ:
        return x + rng.uniform(-3, 3), y + rng.uniform(-3, 3), z + rng.uniform(-1.5, 1.5)

    def fading(t: Array) -> Array:
        return (vessel + (brain - vessel) * 0.85 * t).astype(np.float32)

    def draw(start: XYZ, end: XYZ, radius: tuple[float, float], *, fade: bool = False,
             capped: bool = True) -> None:
        paint_tube(hu, axes, _zyx(start), _zyx(end), radius, fading if fade else vessel,
                   capped=capped)

    basilar_top = jitter(0, 20, -4)
    draw(jitter(0, 22, -35), basilar_top, (2.0, 2.0))
    for side in (-1, 1):
        terminus = jitter(side * 16, 2, 0)
        draw(jitter(side * 16, 0, -35), terminus, (2.6, 2.5))
        draw(basilar_top, jitter(side * 30, 40, 1), (1.6, 0.6), fade=True)
        a1 = jitter(side * 4, -22, 5)
        draw(terminus, a1, (1.8, 1.5))
        draw(a1, jitter(side * 3, -42, 14), (1.5, 0.6), fade=True)
        m1_end = jitter(side * 48, 6, 3)
        if side == occluded:
            cut = rng.uniform(0.35, 0.8)
            stump = tuple(a + cut * (b - a) for a, b in zip(terminus, m1_end, strict=True))
            lesion = (float(stump[0]), float(stump[1]), float(stump[2]))
            draw(terminus, lesion, (2.5, 2.3), capped=False)
            continue
        draw(terminus, m1_end, (2.5, 2.0))
        draw(m1_end, jitter(side * 60, -26, 9), (1.7, 0.6), fade=True)
        draw(m1_end, jitter(side * 62, 30, 8), (1.7, 0.6), fade=True)
    return CtVolume(_noisy(rng, hu, 7.0 * noise), origin, (thickness, pixel, pixel), lesion)


def _chest(rng: np.random.Generator, axes: list[Array]) -> Array:
    """Body, fat, lungs, spine and aorta (no pulmonary arteries yet)."""
    shape = tuple(len(g.reshape(-1)) for g in axes)
    z, y, x = axes
    plane = [y, x]
    hu = np.full(shape, AIR, dtype=np.float32)
    body = (rng.uniform(105, 120), rng.uniform(145, 165))
    hu += (FAT - hu) * ellipsoid(plane, (0.0, 0.0), body, edge=2.0)
    hu += (SOFT - hu) * ellipsoid(plane, (0.0, 0.0), (body[0] - 12, body[1] - 14), edge=2.0)
    texture = LUNG + 40 * smooth_noise(rng, shape, (4, 10, 10))
    for side in (-1, 1):
        lung = ellipsoid(plane, (0.0, side * 74.0), (86.0, 52.0), edge=2.0)
        lung = lung * (np.abs(x) > 17)
        hu += (texture - hu) * lung
    hu += (350.0 - hu) * ellipsoid(plane, (78.0, 0.0), (16.0, 16.0), edge=1.5)
    hu += (20.0 - hu) * ellipsoid(plane, (78.0 + 18, 0.0), (6.0, 6.0), edge=1.0)
    aorta = rng.uniform(150, 250)
    hu += (aorta - hu) * ellipsoid(plane, (50.0, 22.0), (12.0, 12.0), edge=1.0)
    hu += (aorta - hu) * ellipsoid(plane, (-28.0, -12.0), (15.0, 15.0), edge=1.0) * (z < 30)
    return hu


def chest_ctpa(rng: np.random.Generator, positive: bool, noise: float) -> CtVolume:
    """CT pulmonary angiogram, 32 slices of 3 mm; contrast in the pulmonary trunk, both
    pulmonary arteries and their lobar branches. A positive has a filling defect (20-60 HU,
    3-4.5 mm radius, contrast around it) inside the trunk, a main or a lower lobe artery:
    a clot filling most of a wide trunk would look like the soft tissue beside it to a
    model that sees a few voxels around each one, so the defect stays small enough to be
    rimmed by contrast."""
    slices, size, pixel, thickness, z0 = 32, 128, 2.6, 3.0, -48.0
    axes, origin = _grid(slices, size, pixel, thickness, z0)
    hu = _chest(rng, axes)
    contrast = rng.uniform(260, 400)

    def jitter(x: float, y: float, z: float) -> XYZ:
        return x + rng.uniform(-4, 4), y + rng.uniform(-4, 4), z + rng.uniform(-3, 3)

    fork = jitter(4, -12, 0)
    right, left = jitter(-56, 0, -2), jitter(52, 6, 4)
    arteries: list[tuple[XYZ, XYZ, tuple[float, float]]] = [
        (jitter(8, -48, -30), fork, (13.0, 12.0)),
        (fork, right, (10.0, 9.0)), (fork, left, (9.0, 8.0)),
        (right, jitter(-70, 16, -42), (6.5, 4.5)), (left, jitter(68, 20, -42), (6.5, 4.5)),
        (right, jitter(-66, -14, 36), (5.0, 3.0)), (left, jitter(64, -12, 36), (5.0, 3.0)),
        (right, jitter(-90, -4, -6), (4.0, 2.0)), (left, jitter(88, 4, 8), (4.0, 2.0))]
    for start, end, radius in arteries:
        paint_tube(hu, axes, _zyx(start), _zyx(end), radius, contrast)
    for _ in range(8):  # segmental branches, fading into the lung
        start, end, _radius = arteries[int(rng.integers(3, len(arteries)))]
        tip = (end[0] * 1.2 + rng.uniform(-15, 15), end[1] + rng.uniform(-25, 25),
               end[2] + rng.uniform(-15, 15))
        paint_tube(hu, axes, _zyx(end), _zyx(tip), (2.5, 0.8),
                   lambda t: (contrast + (LUNG - contrast) * 0.7 * t).astype(np.float32))
    lesion: XYZ | None = None
    if positive:
        start, end, radius = arteries[int(rng.choice([0, 1, 2, 3, 4]))]
        t = rng.uniform(0.25, 0.8)
        r_vessel = radius[0] + t * (radius[1] - radius[0])
        r_clot = min(r_vessel * rng.uniform(0.5, 0.75), rng.uniform(3.0, 4.5))
        offset = (r_vessel - r_clot) * rng.uniform(0, 0.7)
        angle = rng.uniform(0, 2 * np.pi)
        centre = tuple(a + t * (b - a) for a, b in zip(start, end, strict=True))
        lesion = (float(centre[0] + offset * np.cos(angle)), float(centre[1]),
                  float(centre[2] + offset * np.sin(angle)))
        clot = ellipsoid(axes, _zyx(lesion), (r_clot * 1.4, r_clot, r_clot), edge=1.5)
        clot = clot * (hu > contrast - 60)
        hu += (rng.uniform(20, 60) - hu) * clot
    return CtVolume(_noisy(rng, hu, 10.0 * noise), origin, (thickness, pixel, pixel), lesion)
