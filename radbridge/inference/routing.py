"""Routing: for a ready study, which models run, each on which series.

Several models may run on one study (a head CTA: haemorrhage on the plain series,
vessel occlusion on the angiogram). A model takes the series that fits its card best
(the most instances, then the thinnest slices); a model that no series fits is skipped
with the reason of the series that came closest, which is recorded, not an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from radbridge.inference.cards import ModelCard, SeriesSelection


@dataclass(frozen=True)
class SeriesFacts:
    """What routing needs of one series (from the DICOM index)."""

    series_uid: str
    modality: str | None
    instances: int
    body_part: str | None = None
    description: str | None = None
    slice_thickness: float | None = None
    contrast: bool = False
    image_type: tuple[str, ...] = ()


@dataclass(frozen=True)
class Assignment:
    card: ModelCard
    series_uid: str


@dataclass(frozen=True)
class Skipped:
    card: ModelCard
    reason: str


@dataclass(frozen=True)
class Routing:
    assignments: tuple[Assignment, ...]
    skipped: tuple[Skipped, ...]


def route(series: Sequence[SeriesFacts], cards: Sequence[ModelCard],
          procedure_codes: Sequence[str] = ()) -> Routing:
    """Which card runs on which series; see the module docstring."""
    assignments: list[Assignment] = []
    skipped: list[Skipped] = []
    for card in cards:
        wanted = card.series.procedure_codes
        if wanted and procedure_codes and not set(wanted) & set(procedure_codes):
            skipped.append(Skipped(card, "the order's procedure is not one this model is for"))
            continue
        fitting = [s for s in series if _mismatch(card.series, s) is None]
        if fitting:
            best = max(fitting, key=lambda s: (s.instances, -(s.slice_thickness or 0.0)))
            assignments.append(Assignment(card, best.series_uid))
        else:
            skipped.append(Skipped(card, _closest_reason(card.series, series)))
    return Routing(tuple(assignments), tuple(skipped))


def _mismatch(rule: SeriesSelection, series: SeriesFacts) -> tuple[int, str] | None:
    """How far down the criteria the series got, and the first one it fails; None when
    it fits."""
    if (series.modality or "") not in rule.modalities:
        return 0, f"modality {series.modality or 'none'} is not {'/'.join(rule.modalities)}"
    if rule.body_parts and (series.body_part or "").upper() not in rule.body_parts:
        return 1, f"body part {series.body_part or 'none'} is not {'/'.join(rule.body_parts)}"
    missing = [v for v in rule.image_type if v not in series.image_type]
    if missing:
        return 2, f"image type lacks {'/'.join(missing)}"
    if rule.contrast is not None and rule.contrast != series.contrast:
        return 3, "contrast " + ("expected" if rule.contrast else "not expected")
    if rule.description is not None and not re.search(
            rule.description, series.description or "", re.IGNORECASE):
        return 4, f"description does not match {rule.description!r}"
    if rule.slice_thickness is not None and not rule.slice_thickness.holds(
            series.slice_thickness):
        if series.slice_thickness is None:
            return 5, "slice thickness unknown"
        return 5, f"slice thickness {series.slice_thickness:g} mm is out of range"
    if series.instances < rule.min_instances:
        return 6, f"{series.instances} instance(s), fewer than {rule.min_instances}"
    return None


def _closest_reason(rule: SeriesSelection, series: Sequence[SeriesFacts]) -> str:
    if not series:
        return "the study has no series"
    failures = [failure for s in series if (failure := _mismatch(rule, s)) is not None]
    _, reason = max(failures)
    return f"no series fits: {reason}"
