"""Synthetic projection radiographs in stored values (12 bits, brighter = more attenuating):
a mammogram that may hold a mass, and a limb whose bone may be broken.

Images are indexed (row, column) and drawn in mm from the top-left pixel's centre; a
lesion's place is given as (column mm, row mm, 0), the image plane having no patient
coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radbridge.inference.demo.drawing import Array, ellipsoid, grids, smooth_noise, soft

XYZ = tuple[float, float, float]
TOP = 4095.0


@dataclass(frozen=True)
class Radiograph:
    values: Array
    """(rows, columns), presentation values: brighter means more attenuation."""
    pixel: float
    """Pixel spacing in mm (square pixels)."""
    lesion: XYZ | None
    view: str
    """MG: CC or MLO; DX: AP."""
    laterality: str


def mammogram(rng: np.random.Generator, positive: bool, noise: float) -> Radiograph:
    """A breast (CC or MLO, chest wall on the left for a right breast) with fibroglandular
    texture; a positive has a dense round, oval or spiculated mass of 5-11 mm radius."""
    rows, columns, pixel = 256, 192, 0.8
    y, x = grids((rows, columns), (pixel, pixel), (0.0, 0.0))
    height, width = rows * pixel, columns * pixel
    centre_y = height / 2 + rng.uniform(-10, 10)
    radii = (height * rng.uniform(0.36, 0.45), width * rng.uniform(0.7, 0.92))
    breast = ellipsoid([y, x], (centre_y, 0.0), radii, edge=2.0)
    depth = np.clip(1 - np.sqrt(((y - centre_y) / radii[0]) ** 2 + (x / radii[1]) ** 2), 0, 1)
    gland = np.clip(smooth_noise(rng, (rows, columns), (10, 8)), 0, None) * np.sqrt(depth)
    values = 1000 + 500 * np.sqrt(depth) + 260 * gland
    values += 60 * smooth_noise(rng, (rows, columns), (40, 30))
    view = "MLO" if rng.random() < 0.5 else "CC"
    if view == "MLO":
        pectoral = soft(x - (width * 0.35) * (1 - y / (height * 0.55)), 2.0)
        values += 450 * pectoral
    lesion: XYZ | None = None
    if positive:
        angle = rng.uniform(0, 2 * np.pi)
        reach = rng.uniform(0.2, 0.7)
        cy = centre_y + np.sin(angle) * radii[0] * reach * 0.9
        cx = abs(np.cos(angle)) * radii[1] * reach + 12
        r = rng.uniform(5, 11)
        mass = ellipsoid([y, x], (cy, cx), (r, r * rng.uniform(0.65, 1.0)), edge=1.5)
        if rng.random() < 0.4:  # spicules
            for spoke in rng.uniform(0, 2 * np.pi, 8):
                dy, dx = np.sin(spoke), np.cos(spoke)
                along = (y - cy) * dy + (x - cx) * dx
                across = np.abs((y - cy) * dx - (x - cx) * dy)
                mass = np.maximum(mass, soft(across - 0.6, 1.0) * (along > 0)
                                  * soft(along - 2.2 * r, 2.0))
        values += rng.uniform(650, 950) * mass
        lesion = (float(cx), float(cy), 0.0)
    values = 80 + (values - 80) * breast
    values += rng.standard_normal(values.shape).astype(np.float32) * 25 * noise
    laterality = "R" if rng.random() < 0.5 else "L"
    if laterality == "L":
        values = values[:, ::-1]
        if lesion is not None:
            lesion = ((columns - 1) * pixel - lesion[0], lesion[1], 0.0)
    return Radiograph(np.clip(values, 0, TOP).astype(np.float32), pixel, lesion, view,
                      laterality)


def _chord(radius: float, distance: Array) -> Array:
    """Path length through a cylinder of `radius` at `distance` from its axis."""
    return (2 * np.sqrt(np.clip(radius ** 2 - distance ** 2, 0, None))).astype(np.float32)


def limb(rng: np.random.Generator, positive: bool, noise: float) -> Radiograph:
    """A limb (soft tissue band) with one or two long bones (cortex and medulla); a
    positive has a lucent fracture line across one bone, sometimes displaced."""
    rows, columns, pixel = 256, 192, 1.0
    y, x = grids((rows, columns), (pixel, pixel), (0.0, 0.0))
    angle = rng.uniform(-0.35, 0.35)
    uy, ux = np.cos(angle), np.sin(angle)
    cy, cx = rows * pixel / 2, columns * pixel / 2 + rng.uniform(-15, 15)
    along = (y - cy) * uy + (x - cx) * ux
    across = (x - cx) * uy - (y - cy) * ux
    width = rng.uniform(32, 45)
    values = 150 + 800 * soft(np.abs(across) - width, 3.0)
    values += 40 * smooth_noise(rng, (rows, columns), (12, 9))
    bones = [0.0] if rng.random() < 0.4 else [-12.0, 12.0]
    broken = int(rng.integers(len(bones))) if positive else -1
    lesion: XYZ | None = None
    for index, offset in enumerate(bones):
        radius = rng.uniform(6.5, 10.5)
        cortex = radius * rng.uniform(0.25, 0.35)
        distance = across - offset
        factor = np.ones_like(distance)
        if index == broken:
            at = rng.uniform(-60, 60)
            tilt = rng.uniform(-0.5, 0.5)
            line = along - at - distance * np.tan(tilt)
            gap = rng.uniform(2.0, 4.0)
            factor = 0.12 + 0.88 * (1 - soft(np.abs(line) - gap / 2, 1.0))
            distance = distance + rng.uniform(0, 3.5) * (line > 0)
            lesion = (float(cx + (at * ux + offset * uy)), float(cy + (at * uy - offset * ux)),
                      0.0)
        marrow = _chord(radius - cortex, distance)
        bone = 55 * (_chord(radius, distance) - marrow) + 22 * marrow
        values += bone * factor
    values += rng.standard_normal(values.shape).astype(np.float32) * 20 * noise
    return Radiograph(np.clip(values, 0, TOP).astype(np.float32), pixel, lesion, "AP",
                      "R" if rng.random() < 0.5 else "L")
