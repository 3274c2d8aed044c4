"""Run one model on a folder of DICOM files, outside any channel: what `radbridge infer`
does so that an analyst can try a model on a study before deploying it, on ONNX Runtime
in-process or on a Triton server (the same findings within backends' tolerance)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from radbridge.errors import RadbridgeError
from radbridge.inference.backends import TritonTarget, open_backend
from radbridge.inference.cards import ModelCard
from radbridge.inference.findings import findings
from radbridge.inference.preprocess import prepare
from radbridge.inference.routing import SeriesFacts, route


class NothingToInfer(RadbridgeError):
    """The folder holds no series this model takes (the reason is in the message)."""


@dataclass(frozen=True)
class FolderStudy:
    series: dict[str, list[Path]]
    facts: list[SeriesFacts]


def read_folder(folder: Path) -> FolderStudy:
    """The DICOM files under `folder` by series (headers only); other files are skipped."""
    series: dict[str, list[Path]] = {}
    headers: dict[str, Dataset] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        uid = str(header.get("SeriesInstanceUID", ""))
        if uid:
            series.setdefault(uid, []).append(path)
            headers.setdefault(uid, header)
    facts = [SeriesFacts(
        series_uid=uid, modality=headers[uid].get("Modality"), instances=len(paths),
        body_part=headers[uid].get("BodyPartExamined"),
        description=headers[uid].get("SeriesDescription"),
        slice_thickness=_number(headers[uid].get("SliceThickness")),
        contrast=bool(headers[uid].get("ContrastBolusAgent")),
        image_type=tuple(str(v) for v in headers[uid].get("ImageType", ())))
        for uid, paths in series.items()]
    return FolderStudy(series, facts)


def infer_folder(card: ModelCard, card_folder: Path, folder: Path, *,
                 target: TritonTarget | None = None) -> dict[str, Any]:
    """Route, preprocess, run and read the findings; a JSON-ready dict. `target` None:
    the card's own backend; a TritonTarget: the card's model on that Triton server."""
    study = read_folder(folder)
    routing = route(study.facts, [card])
    if not routing.assignments:
        reason = routing.skipped[0].reason if routing.skipped else "no series"
        raise NothingToInfer(f"{card.key}: {reason}")
    series_uid = routing.assignments[0].series_uid
    datasets = [pydicom.dcmread(p) for p in study.series[series_uid]]
    began = time.perf_counter()
    prepared_input = prepare(card.preprocessing, datasets)
    prepared = time.perf_counter()
    backend = open_backend(card, card_folder, target=target)
    loaded = time.perf_counter()
    try:
        input_name = next(iter(card.inputs))
        outputs = backend.run({input_name: prepared_input.tensor[np.newaxis]})
        found = findings(card, outputs, grid=prepared_input.grid)
    finally:
        backend.close()
    done = time.perf_counter()
    return {
        "model": card.name, "version": card.version, "card_sha256": card.digest(),
        "demonstration": card.demonstration, "intended_use": card.intended_use,
        "series_uid": series_uid, "instances": len(datasets),
        "preprocess_ms": round((prepared - began) * 1000, 1),
        "backend": _label(card, target),
        "inference_ms": round((done - loaded) * 1000, 1),
        "findings": [f.as_record() for f in found],
    }


def _label(card: ModelCard, target: TritonTarget | None) -> str:
    if target is not None:
        return f"triton-{target.protocol}"
    backend = card.backend
    return "onnxruntime" if backend.kind == "onnx" else f"triton-{backend.protocol}"


def _number(value: object) -> float | None:
    try:
        return None if value in (None, "") else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


__all__: Sequence[str] = ("NothingToInfer", "infer_folder", "read_folder")
