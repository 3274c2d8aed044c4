"""From DICOM instances to the tensor a model card asks for, and back from the tensor's
grid to the images and patient coordinates it came from.

Volumes are built in patient space: slices are ordered by their position along the slice
normal (the cross product of ImageOrientationPatient's row and column directions), never
by InstanceNumber, which modalities fill as they please. A multi-frame object gives one
plane per frame; enhanced objects (Enhanced CT/MR) carry each frame's position, and the
shared orientation, spacing and rescale, in functional groups. Stored values become real
values through Rescale Slope/Intercept; MONOCHROME1 is inverted so that brighter is
always more; a window clips and scales to 0..1; anisotropic volumes are resampled to the
card's spacing (linear, one axis at a time), then resized to the card's shape. A series
the model cannot be given (mixed orientations, slices missing, two at one position, more
pixels than the memory budget) is a PreprocessError that says why; nothing is guessed.

Resampling and resizing both map the first and last samples of an axis onto the first
and last of the result, so a tensor index maps back to a source index by one scale per
axis (`Grid.locate`): that is how a heat map's peak becomes a slice, a pixel and a point
in patient coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
DEFAULT_BUDGET_BYTES = 2 * 1024**3
"""Decoded float32 pixels of one series above this are refused, not attempted."""


class PreprocessError(RadbridgeError):
    """The instances cannot become this model's input; the message says why."""


@dataclass(frozen=True)
class Plane:
    """One 2-D image (a single-frame instance or one frame of a multi-frame one)."""

    dataset: Dataset
    frame: int
    """1-based frame number; 1 for a single-frame instance."""
    position: NDArray[np.float64] | None
    orientation: NDArray[np.float64] | None
    pixel_spacing: tuple[float, float] | None
    """(between rows, between columns) in mm."""
    slope: float
    intercept: float

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


@dataclass(frozen=True)
class Volume:
    voxels: FloatArray
    """Real values (after rescale), shape (slices, rows, columns)."""
    spacing: tuple[float, float, float]
    """Millimetres between slices, rows and columns."""
    sop_instance_uids: tuple[str, ...]
    """In the order of the slices."""
    planes: tuple[Plane, ...] = ()
    """The source of each slice, in the order of the slices."""


@dataclass(frozen=True)
class Location:
    """Where a point of the tensor came from."""

    sop_instance_uid: str
    frame: int
    row: float
    column: float
    patient: tuple[float, float, float] | None
    """Patient coordinates in mm (LPS), where the images carry geometry."""


@dataclass(frozen=True)
class Axis:
    """How one tensor axis samples its source axis: source index = offset + index * step."""

    offset: float
    step: float

    @staticmethod
    def stretched(source: int, tensor: int) -> Axis:
        """First sample on the first, last on the last (a plain resize)."""
        return Axis(0.0, (source - 1) / (tensor - 1) if tensor > 1 else 0.0)

    @staticmethod
    def centred(source: int, tensor: int, step: float) -> Axis:
        """`step` source samples per tensor sample, the two centres on each other (resample
        to a spacing, then crop or pad to the size)."""
        return Axis((source - 1) / 2 - (tensor - 1) / 2 * step, step)

    def positions(self, count: int) -> NDArray[np.float64]:
        return self.offset + np.arange(count, dtype=np.float64) * self.step


@dataclass(frozen=True)
class Grid:
    """The tensor's spatial grid against the source planes (see the module docstring)."""

    planes: tuple[Plane, ...]
    source_shape: tuple[int, ...]
    """(slices, rows, columns) for a volume, (rows, columns) for one image."""
    tensor_shape: tuple[int, ...]
    axes: tuple[Axis, ...]
    source_spacing: tuple[float, ...] | None
    """mm along each source axis; None where the images carry no spacing."""

    def to_json(self) -> dict[str, Any]:
        """What maps the tensor's grid back onto the images, without the pixel data:
        the planes (SOP Instance UID and frame) in slice order, the shapes, each axis'
        offset and step (source index = offset + tensor index * step), the spacing."""
        return {"planes": [{"sop_instance_uid": p.sop_instance_uid, "frame": p.frame}
                           for p in self.planes],
                "source_shape": list(self.source_shape),
                "tensor_shape": list(self.tensor_shape),
                "axes": [[axis.offset, axis.step] for axis in self.axes],
                "source_spacing": None if self.source_spacing is None
                else list(self.source_spacing)}

    def source_index(self, index: Sequence[float]) -> tuple[float, ...]:
        return tuple(axis.offset + float(i) * axis.step
                     for i, axis in zip(index, self.axes, strict=True))

    def element_size(self) -> tuple[float, ...] | None:
        """The size in mm of one tensor element along each axis (None without spacing)."""
        if self.source_spacing is None:
            return None
        return tuple(spacing * axis.step
                     for spacing, axis in zip(self.source_spacing, self.axes, strict=True))

    def locate(self, index: Sequence[float]) -> Location:
        source = self.source_index(index)
        depth, row, column = source if len(source) == 3 else (0.0, *source)
        plane = self.planes[min(len(self.planes) - 1, max(0, round(depth)))]
        patient = None
        if plane.position is not None and plane.orientation is not None \
                and plane.pixel_spacing is not None:
            first = self.planes[0]
            assert first.position is not None
            row_dir, column_dir = plane.orientation[:3], plane.orientation[3:]
            between = _between(self.planes) if len(self.planes) > 1 else 0.0
            normal = np.cross(row_dir, column_dir)
            point = (first.position + column * plane.pixel_spacing[1] * row_dir
                     + row * plane.pixel_spacing[0] * column_dir + depth * between * normal)
            patient = (float(point[0]), float(point[1]), float(point[2]))
        return Location(plane.sop_instance_uid, plane.frame, row, column, patient)


@dataclass(frozen=True)
class Prepared:
    tensor: FloatArray
    """The model input without the batch dimension."""
    grid: Grid


def _floats(values: object) -> NDArray[np.float64]:
    return np.asarray([float(v) for v in values])  # type: ignore[attr-defined]


def _group(dataset: Dataset, groups: Sequence[Dataset], sequence: str) -> Dataset | None:
    """The first item of a functional group macro, per-frame first, then shared."""
    for group in groups:
        items = group.get(sequence)
        if items:
            item: Dataset = items[0]
            return item
    return None


def planes_of(dataset: Dataset) -> list[Plane]:
    """One plane per frame, with the geometry and rescale that apply to it."""
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    shared = list(dataset.get("SharedFunctionalGroupsSequence", []))[:1]
    per_frame = list(dataset.get("PerFrameFunctionalGroupsSequence", []))
    planes = []
    for number in range(1, frames + 1):
        groups = ([per_frame[number - 1]] if number <= len(per_frame) else []) + shared
        position_item = _group(dataset, groups, "PlanePositionSequence")
        orientation_item = _group(dataset, groups, "PlaneOrientationSequence")
        measures = _group(dataset, groups, "PixelMeasuresSequence")
        rescale = _group(dataset, groups, "PixelValueTransformationSequence")
        position = (position_item or dataset).get("ImagePositionPatient")
        orientation = (orientation_item or dataset).get("ImageOrientationPatient")
        spacing = (measures or dataset).get("PixelSpacing") or dataset.get("ImagerPixelSpacing")
        source = rescale or dataset
        planes.append(Plane(
            dataset, number,
            _floats(position) if position else None,
            _floats(orientation) if orientation else None,
            (float(spacing[0]), float(spacing[1])) if spacing else None,
            float(source.get("RescaleSlope", 1) or 1),
            float(source.get("RescaleIntercept", 0) or 0)))
    return planes


def slice_normal(dataset: Dataset) -> NDArray[np.float64]:
    orientation = np.asarray([float(v) for v in dataset.ImageOrientationPatient])
    return np.cross(orientation[:3], orientation[3:])


def order_planes(planes: Sequence[Plane]) -> list[Plane]:
    """The planes in order along their normal; PreprocessError for what cannot be ordered."""
    if not planes:
        raise PreprocessError("no slices")
    if any(p.position is None or p.orientation is None for p in planes):
        raise PreprocessError("a slice has no usable ImagePositionPatient or "
                              "ImageOrientationPatient")
    first = planes[0].orientation
    assert first is not None
    if any(np.abs(p.orientation - first).max() > ORIENTATION_TOLERANCE  # type: ignore[operator]
           for p in planes[1:]):
        raise PreprocessError("the series mixes orientations")
    normal = np.cross(first[:3], first[3:])
    along = np.asarray([float(np.dot(p.position, normal)) for p in planes])  # type: ignore[arg-type]
    order = np.argsort(along, kind="stable")
    steps = np.diff(along[order])
    if len(steps) and np.min(np.abs(steps)) < 1e-4:
        raise PreprocessError("two slices share one position")
    if len(steps) > 1:
        typical = float(np.median(steps))
        if np.max(np.abs(steps - typical)) > GAP_TOLERANCE * typical:
            raise PreprocessError("slices are missing (irregular spacing along the normal)")
    return [planes[i] for i in order]


def order_slices(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Single-frame slices in order along their normal (see order_planes)."""
    try:
        planes = [plane for ds in datasets for plane in planes_of(ds)]
    except (AttributeError, ValueError, TypeError) as exc:
        raise PreprocessError("a slice has unreadable geometry") from exc
    return [plane.dataset for plane in order_planes(planes)]


def _pixels(plane: Plane) -> NDArray[np.generic]:
    if int(plane.dataset.get("NumberOfFrames", 1) or 1) > 1:
        frame: NDArray[np.generic] = pixel_array(plane.dataset, index=plane.frame - 1)
        return frame
    whole: NDArray[np.generic] = plane.dataset.pixel_array
    return whole


def plane_values(plane: Plane) -> FloatArray:
    """The plane's pixel values after rescale, MONOCHROME1 inverted."""
    return _real(plane, _pixels(plane).astype(np.float32))  # a new array: scaled in place


def _real(plane: Plane, values: FloatArray) -> FloatArray:
    """Stored values (float32, modified in place) to real ones. Both steps are affine, so
    they may come before or after linear interpolation alike."""
    if plane.slope != 1.0:
        values *= np.float32(plane.slope)
    if plane.intercept != 0.0:
        values += np.float32(plane.intercept)
    if plane.dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        ds = plane.dataset
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
        top = (2 ** bits - 1) * plane.slope + plane.intercept
        np.subtract(np.float32(top + plane.intercept), values, out=values)
    return values


def real_values(dataset: Dataset) -> FloatArray:
    """Pixel values of a single-frame instance after Rescale Slope/Intercept, MONOCHROME1
    inverted."""
    return plane_values(planes_of(dataset)[0])


def check_budget(datasets: Sequence[Dataset], budget_bytes: int) -> None:
    """Refuse before decoding a series whose float32 pixels exceed the budget."""
    total = sum(int(ds.get("Rows", 0)) * int(ds.get("Columns", 0))
                * int(ds.get("NumberOfFrames", 1) or 1)
                * int(ds.get("SamplesPerPixel", 1) or 1) * 4 for ds in datasets)
    if total > budget_bytes:
        raise PreprocessError(f"the series needs {total / 2**20:.0f} MiB of decoded pixels, "
                              f"over the budget of {budget_bytes / 2**20:.0f} MiB")


def _between(ordered: Sequence[Plane]) -> float:
    first, last = ordered[0].position, ordered[-1].position
    assert first is not None and last is not None and ordered[0].orientation is not None
    normal = np.cross(ordered[0].orientation[:3], ordered[0].orientation[3:])
    return abs(float(np.dot(last - first, normal))) / (len(ordered) - 1)


def ordered_stack(planes: Sequence[Plane]) -> tuple[list[Plane], tuple[float, float, float]]:
    """The planes in order and the volume's spacing, from headers alone."""
    ordered = order_planes(planes)
    sizes = {(int(p.dataset.get("Rows", 0)), int(p.dataset.get("Columns", 0))) for p in ordered}
    if len(sizes) != 1:
        raise PreprocessError("slices of different sizes")
    if ordered[0].pixel_spacing is None:
        raise PreprocessError("the slices have no PixelSpacing")
    rows, columns = ordered[0].pixel_spacing
    if len(ordered) > 1:
        between = _between(ordered)
    else:
        between = float(ordered[0].dataset.get("SliceThickness", 1.0) or 1.0)
    return ordered, (between, rows, columns)


def volume_of(planes: Sequence[Plane]) -> Volume:
    ordered, spacing = ordered_stack(planes)
    return Volume(np.stack([plane_values(p) for p in ordered]), spacing,
                  tuple(p.sop_instance_uid for p in ordered), tuple(ordered))


def sample_slices(ordered: Sequence[Plane], axis: Axis, count: int, fill: float | None,
                  in_plane: tuple[Sequence[Axis], Sequence[int]] | None = None
                  ) -> FloatArray:
    """The slice axis sampled by linear interpolation, decoding only the slices that
    contribute (a 300-slice CT resampled to 32 slices decodes about 64). With `in_plane`
    (the row and column axes and sizes) each decoded slice is sampled in-plane first, on
    its stored values, so the float work is on the small grid. Samples outside the
    source get `fill`, or the lowest sampled value when it is None."""
    where = axis.positions(count)
    inside = (where >= -1e-6) & (where <= len(ordered) - 1 + 1e-6)
    where = np.clip(where, 0.0, len(ordered) - 1)
    decoded: dict[int, FloatArray] = {}

    def plane(index: int) -> FloatArray:
        if index not in decoded:
            decoded[index] = plane_values(ordered[index]) if in_plane is None else \
                _sampled_plane(ordered[index], *in_plane)
        return decoded[index]

    rows, columns = in_plane[1] if in_plane is not None else (
        int(ordered[0].dataset.Rows), int(ordered[0].dataset.Columns))
    out = np.empty((count, rows, columns), dtype=np.float32)
    for k in np.flatnonzero(inside):
        low = int(np.floor(where[k]))
        weight = float(where[k] - low)
        if weight < 1e-6 or low + 1 >= len(ordered):
            out[k] = plane(low)
        else:
            np.add(plane(low) * np.float32(1 - weight), plane(low + 1) * np.float32(weight),
                   out=out[k])
    out[~inside] = np.nan
    missing = np.isnan(out)
    if missing.any():
        if fill is None:
            fill = float(np.nanmin(out)) if not missing.all() else 0.0
        out[missing] = np.float32(fill)
    return out


def _sampled_plane(plane: Plane, axes: Sequence[Axis], shape: Sequence[int]) -> FloatArray:
    """One slice sampled in-plane on its stored values, then made real; NaN outside."""
    return _real(plane, sample(_pixels(plane), axes, shape, fill=float("nan")))


def build_volume(datasets: Sequence[Dataset]) -> Volume:
    """A volume from the slices or frames of one series."""
    return volume_of([plane for ds in datasets for plane in planes_of(ds)])


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
                  volume.sop_instance_uids, volume.planes)


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


def sample(values: NDArray[Any], axes: Sequence[Axis], shape: Sequence[int], fill: float
           ) -> FloatArray:
    """`values` sampled at each axis' positions by linear interpolation, one axis at a
    time (the most shrinking first would not change the result, only the cost: the
    slice axis comes first and is usually it); positions outside the source get `fill`."""
    for axis_index, (axis, count) in enumerate(zip(axes, shape, strict=True)):
        size = values.shape[axis_index]
        if size == count and axis.offset == 0.0 and axis.step == 1.0:
            continue
        where = axis.positions(count)
        inside = (where >= -1e-6) & (where <= size - 1 + 1e-6)
        where = np.clip(where, 0.0, size - 1)
        low = np.floor(where).astype(int)
        high = np.minimum(low + 1, size - 1)
        weight = (where - low).astype(np.float32)
        reshape = [1] * values.ndim
        reshape[axis_index] = count
        weight = weight.reshape(reshape)
        lower, upper = np.take(values, low, axis=axis_index), np.take(values, high,
                                                                       axis=axis_index)
        blended = lower * (1 - weight) + upper * weight
        if not inside.all():
            blended = np.where(inside.reshape(reshape), blended, np.float32(fill))
        values = blended.astype(np.float32, copy=False)
    result: FloatArray = values.astype(np.float32, copy=False)
    return result


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


def prepare(rule: Preprocessing, datasets: Sequence[Dataset], *,
            budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Prepared:
    """The model input for `datasets` of one series, and its grid."""
    check_budget(datasets, budget_bytes)
    try:
        planes = [plane for ds in datasets for plane in planes_of(ds)]
    except (AttributeError, ValueError, TypeError, IndexError) as exc:
        raise PreprocessError(f"unreadable geometry or rescale: {exc}") from exc
    if rule.kind == "volume":
        ordered, spacing = ordered_stack(planes)
        source_shape = (len(ordered), int(ordered[0].dataset.Rows),
                        int(ordered[0].dataset.Columns))
        if rule.spacing is None:
            axes = tuple(Axis.stretched(n, t) for n, t in zip(source_shape, rule.size,
                                                               strict=True))
        else:
            axes = tuple(Axis.centred(n, t, new / old) for n, t, new, old in zip(
                source_shape, rule.size, rule.spacing, spacing, strict=True))
        low = rule.window.min if rule.window and rule.window.min is not None else None
        sampled = sample_slices(ordered, axes[0], rule.size[0], low,
                                (axes[1:], rule.size[1:]))
        values = apply_window(sampled, rule.window)
        grid = Grid(tuple(ordered), source_shape, tuple(rule.size), axes, spacing)
        return Prepared(values[np.newaxis], grid)
    if len(planes) != 1:
        raise PreprocessError(f"a {rule.kind} model takes one image, got {len(planes)}")
    plane = planes[0]
    if rule.kind == "photograph":
        rgb = photograph(plane.dataset)
        tensor = np.moveaxis(resize(rgb, [*rule.size, 3]), -1, 0)
        source_shape = rgb.shape[:2]
    else:
        real = plane_values(plane)
        tensor = resize(apply_window(real, rule.window), rule.size)[np.newaxis]
        source_shape = real.shape
    axes = tuple(Axis.stretched(n, t) for n, t in zip(source_shape, rule.size, strict=True))
    grid = Grid((plane,), tuple(source_shape), tuple(rule.size), axes, plane.pixel_spacing)
    return Prepared(tensor.astype(np.float32), grid)


def to_tensor(rule: Preprocessing, datasets: Sequence[Dataset], *,
              budget_bytes: int = DEFAULT_BUDGET_BYTES) -> FloatArray:
    """The model input (without the batch dimension) for `datasets` of one series."""
    return prepare(rule, datasets, budget_bytes=budget_bytes).tensor
