"""Run one model on a folder of DICOM files, outside any channel: what `radbridge infer`
does so that an analyst can try a model on a study before deploying it."""

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
from radbridge.inference.backends import OnnxRuntimeBackend
from radbridge.inference.cards import ModelCard
from radbridge.inference.findings import findings
from radbridge.inference.preprocess import to_tensor
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


def infer_folder(card: ModelCard, card_folder: Path, folder: Path) -> dict[str, Any]:
    """Route, preprocess, run on ONNX Runtime and read the findings; a JSON-ready dict."""
    study = read_folder(folder)
    routing = route(study.facts, [card])
    if not routing.assignments:
        reason = routing.skipped[0].reason if routing.skipped else "no series"
        raise NothingToInfer(f"{card.key}: {reason}")
    series_uid = routing.assignments[0].series_uid
    datasets = [pydicom.dcmread(p) for p in study.series[series_uid]]
    began = time.perf_counter()
    tensor = to_tensor(card.preprocessing, datasets)
    prepared = time.perf_counter()
    backend = OnnxRuntimeBackend(card, card_folder)
    input_name = next(iter(card.inputs))
    outputs = backend.run({input_name: tensor[np.newaxis]})
    done = time.perf_counter()
    return {
        "model": card.name, "version": card.version, "card_sha256": card.digest(),
        "demonstration": card.demonstration, "intended_use": card.intended_use,
        "series_uid": series_uid, "instances": len(datasets),
        "preprocess_ms": round((prepared - began) * 1000, 1),
        "inference_ms": round((done - prepared) * 1000, 1),
        "findings": [{"code": f.code.code, "system": f.code.system,
                      "display": f.code.display, "probability": round(f.probability, 6),
                      "positive": f.positive, "emergent": f.emergent}
                     for f in findings(card, outputs)],
    }


def _number(value: object) -> float | None:
    try:
        return None if value in (None, "") else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


__all__: Sequence[str] = ("NothingToInfer", "infer_folder", "read_folder")
