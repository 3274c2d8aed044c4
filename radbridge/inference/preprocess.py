"""From DICOM instances to the tensor a model card asks for.

Volumes are built in patient space: slices are ordered by their position along the slice
normal (the cross product of ImageOrientationPatient's row and column directions), never
by InstanceNumber, which modalities fill as they please. Stored values become real
values through Rescale Slope/Intercept; MONOCHROME1 is inverted so that brighter is
always more; a window clips and scales to 0..1; anisotropic volumes are resampled to the
card's spacing (linear, one axis at a time), then resized to the card's shape. A series
the model cannot be given (mixed orientations, slices missing, two at one position) is a
PreprocessError that says why; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array

from radbridge.errors import RadbridgeError
from radbridge.inference.cards import Preprocessing, Range

FloatArray = NDArray[np.float32]
ORIENTATION_TOLERANCE = 1e-3
GAP_TOLERANCE = 0.2
"""A spacing between neighbours more than 20% off the median one means a slice is missing."""


class PreprocessError(RadbridgeError):
    """The instances cannot become this model's input; the message says why."""


@dataclass(frozen=True)
class Volume:
    voxels: FloatArray
    """Real values (after rescale), shape (slices, rows, columns)."""
    spacing: tuple[float, float, float]
    """Millimetres between slices, rows and columns."""
    sop_instance_uids: tuple[str, ...]
    """In the order of the slices."""


def slice_normal(dataset: Dataset) -> NDArray[np.float64]:
    orientation = np.asarray([float(v) for v in dataset.ImageOrientationPatient])
    return np.cross(orientation[:3], orientation[3:])


def order_slices(datasets: Sequence[Dataset]) -> list[Dataset]:
    """The slices in order along their normal; PreprocessError for what cannot be ordered."""
    if not datasets:
        raise PreprocessError("no slices")
    try:
        orientations = [np.asarray([float(v) for v in ds.ImageOrientationPatient])
                        for ds in datasets]
        positions = [np.asarray([float(v) for v in ds.ImagePositionPatient]) for ds in datasets]
    except (AttributeError, ValueError, TypeError) as exc:
        raise PreprocessError("a slice has no usable ImagePositionPatient or "
                              "ImageOrientationPatient") from exc
    first = orientations[0]
    if any(np.abs(o - first).max() > ORIENTATION_TOLERANCE for o in orientations[1:]):
        raise PreprocessError("the series mixes orientations")
    normal = np.cross(first[:3], first[3:])
    along = np.asarray([float(np.dot(p, normal)) for p in positions])
    order = np.argsort(along, kind="stable")
    steps = np.diff(along[order])
    if len(steps) and np.min(np.abs(steps)) < 1e-4:
        raise PreprocessError("two slices share one position")
    if len(steps) > 1:
        typical = float(np.median(steps))
        if np.max(np.abs(steps - typical)) > GAP_TOLERANCE * typical:
            raise PreprocessError("slices are missing (irregular spacing along the normal)")
    return [datasets[i] for i in order]


def real_values(dataset: Dataset) -> FloatArray:
    """Pixel values after Rescale Slope/Intercept, MONOCHROME1 inverted."""
    pixels = dataset.pixel_array.astype(np.float32)
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    values = pixels * np.float32(slope) + np.float32(intercept)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        bits = int(dataset.get("BitsStored", dataset.get("BitsAllocated", 16)))
        top = (2 ** bits - 1) * slope + intercept
        values = np.float32(top + intercept) - values
    return values.astype(np.float32)


def build_volume(datasets: Sequence[Dataset]) -> Volume:
    """A volume from single-frame slices (one series)."""
    ordered = order_slices(datasets)
    slices = [real_values(ds) for ds in ordered]
    if len({s.shape for s in slices}) != 1:
        raise PreprocessError("slices of different sizes")
    rows, columns = (float(v) for v in ordered[0].PixelSpacing)
    if len(ordered) > 1:
        normal = slice_normal(ordered[0])
        first = np.asarray([float(v) for v in ordered[0].ImagePositionPatient])
        last = np.asarray([float(v) for v in ordered[-1].ImagePositionPatient])
        between = float(np.dot(last - first, normal)) / (len(ordered) - 1)
    else:
        between = float(ordered[0].get("SliceThickness", 1.0) or 1.0)
    return Volume(np.stack(slices), (abs(between), rows, columns),
                  tuple(str(ds.SOPInstanceUID) for ds in ordered))


def apply_window(values: FloatArray, window: Range | None) -> FloatArray:
    """Clip to the window and scale to 0..1 (min-max over the data without one)."""
    low = window.min if window and window.min is not None else float(values.min())
    high = window.max if window and window.max is not None else float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return ((np.clip(values, low, high) - low) / (high - low)).astype(np.float32)


def resample(volume: Volume, spacing: Sequence[float]) -> Volume:
    """The volume at `spacing` (z, y, x in mm), by linear interpolation."""
    voxels = volume.voxels
    for axis, (old, new) in enumerate(zip(volume.spacing, spacing, strict=True)):
        count = max(1, round((voxels.shape[axis] - 1) * old / new) + 1)
        voxels = _along(voxels, axis, count)
    return Volume(voxels, (float(spacing[0]), float(spacing[1]), float(spacing[2])),
                  volume.sop_instance_uids)


def resize(values: FloatArray, shape: Sequence[int]) -> FloatArray:
    """`values` resized to `shape` by linear interpolation along each axis."""
    for axis, count in enumerate(shape):
        values = _along(values, axis, count)
    return values


def _along(values: FloatArray, axis: int, count: int) -> FloatArray:
    size = values.shape[axis]
    if size == count:
        return values
    if size == 1:
        return np.repeat(values, count, axis=axis)
    where = np.linspace(0.0, size - 1, count)
    low = np.floor(where).astype(int)
    high = np.minimum(low + 1, size - 1)
    weight = (where - low).astype(np.float32)
    shape = [1] * values.ndim
    shape[axis] = count
    weight = weight.reshape(shape)
    lower, upper = np.take(values, low, axis=axis), np.take(values, high, axis=axis)
    blended: FloatArray = (lower * (1 - weight) + upper * weight).astype(np.float32)
    return blended


def photograph(dataset: Dataset) -> FloatArray:
    """An RGB photograph (fundus) as float RGB 0..1. pydicom hands YBR data (JPEG's
    usual YBR_FULL_422, or native YBR_FULL) over as RGB already (`as_rgb`)."""
    interpretation = str(dataset.get("PhotometricInterpretation", "RGB"))
    if interpretation != "RGB" and not interpretation.startswith("YBR"):
        raise PreprocessError(f"a photograph must be RGB or YBR, not {interpretation}")
    pixels = pixel_array(dataset, as_rgb=True)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise PreprocessError("a photograph needs three samples per pixel, one frame")
    rgb: FloatArray = (np.asarray(pixels).astype(np.float32) / 255.0).astype(np.float32)
    return rgb


def to_tensor(rule: Preprocessing, datasets: Sequence[Dataset]) -> FloatArray:
    """The model input (without the batch dimension) for `datasets` of one series."""
    if rule.kind == "volume":
        volume = build_volume(datasets)
        if rule.spacing is not None:
            volume = resample(volume, rule.spacing)
        values = resize(apply_window(volume.voxels, rule.window), rule.size)
        return values[np.newaxis]
    if len(datasets) != 1:
        raise PreprocessError(f"a {rule.kind} model takes one image, got {len(datasets)}")
    if rule.kind == "photograph":
        rgb = resize(photograph(datasets[0]), [*rule.size, 3])
        return np.moveaxis(rgb, -1, 0)
    image = resize(apply_window(real_values(datasets[0]), rule.window), rule.size)
    return image[np.newaxis]
