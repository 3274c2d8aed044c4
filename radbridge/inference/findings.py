"""From model outputs to findings: what the card says each output means.

A finding's probability comes from its output; where the card names a heat map, the
map's peak locates a positive finding (slice or frame, pixel, patient coordinates, via
the preprocessing grid) and the region above half the peak is measured (mL for a
volume, mm2 for an image; pixels where the images carry no spacing). The map is kept,
in the tensor's grid, for overlays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from radbridge.inference.backends import BackendError
from radbridge.inference.cards import Code, FindingOutput, ModelCard
from radbridge.inference.preprocess import Grid, Location

HALF_PEAK = 0.5


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    unit: str
    """UCUM: mL, mm2, {pixels}."""


@dataclass(frozen=True)
class Finding:
    code: Code
    probability: float
    positive: bool
    emergent: bool
    body_site: Code | None = None
    location: Location | None = None
    measurements: tuple[Measurement, ...] = ()
    heatmap: NDArray[np.float32] | None = field(default=None, compare=False, repr=False)

    def as_record(self) -> dict[str, Any]:
        """JSON-ready, without the heat map (stored apart, it is large)."""
        location = self.location
        return {
            "code": self.code.code, "system": self.code.system, "display": self.code.display,
            "probability": round(self.probability, 6), "positive": self.positive,
            "emergent": self.emergent,
            "body_site": self.body_site.model_dump() if self.body_site else None,
            "location": None if location is None else {
                "sop_instance_uid": location.sop_instance_uid, "frame": location.frame,
                "row": round(location.row, 2), "column": round(location.column, 2),
                "patient_mm": None if location.patient is None
                else [round(v, 2) for v in location.patient]},
            "measurements": [{"name": m.name, "value": round(m.value, 3), "unit": m.unit}
                             for m in self.measurements],
        }


def findings(card: ModelCard, outputs: Mapping[str, np.ndarray], item: int = 0,
             grid: Grid | None = None) -> list[Finding]:
    """The findings of batch item `item`; a NaN or a value outside 0..1 is a BackendError
    (a model that misbehaves must not produce a negative result)."""
    found = []
    for meaning in card.findings:
        values = np.asarray(outputs[meaning.output])[item].reshape(-1)
        if meaning.index >= values.size:
            raise BackendError(f"{card.key}: output {meaning.output} has {values.size} "
                               f"values, the card reads index {meaning.index}")
        probability = float(values[meaning.index])
        if math.isnan(probability) or not 0.0 <= probability <= 1.0:
            raise BackendError(f"{card.key}: output {meaning.output}[{meaning.index}] is "
                               f"{probability}, not a probability")
        positive = probability >= meaning.threshold
        heatmap = _heatmap(card, meaning, outputs, item, grid)
        location: Location | None = None
        measurements: tuple[Measurement, ...] = ()
        if heatmap is not None and grid is not None and positive:
            location, measurements = _locate(heatmap, grid)
        found.append(Finding(meaning.finding, probability, positive,
                             positive and meaning.emergent, meaning.body_site,
                             location, measurements, heatmap))
    return found


def _heatmap(card: ModelCard, meaning: FindingOutput, outputs: Mapping[str, np.ndarray],
             item: int, grid: Grid | None) -> NDArray[np.float32] | None:
    if meaning.heatmap is None:
        return None
    heatmap: NDArray[np.float32] = np.asarray(outputs[meaning.heatmap])[item].astype(
        np.float32)
    if grid is not None and heatmap.shape != grid.tensor_shape:
        raise BackendError(f"{card.key}: heat map {meaning.heatmap} is {list(heatmap.shape)}, "
                           f"the input grid {list(grid.tensor_shape)}")
    if not np.isfinite(heatmap).all():
        raise BackendError(f"{card.key}: heat map {meaning.heatmap} holds NaN or infinity")
    return heatmap


def _locate(heatmap: NDArray[np.float32], grid: Grid
            ) -> tuple[Location | None, tuple[Measurement, ...]]:
    peak = float(heatmap.max())
    if peak <= 0.0:
        return None, ()
    index = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    location = grid.locate([int(i) for i in index])
    count = int((heatmap >= HALF_PEAK * peak).sum())
    size = grid.element_size()
    if size is None:
        return location, (Measurement("Region above half peak", count, "{pixels}"),)
    area = count * float(np.prod(size))
    if len(size) == 3:
        return location, (Measurement("Region above half peak", area / 1000.0, "mL"),)
    return location, (Measurement("Region above half peak", area, "mm2"),)
