"""Train, export and validate the demonstration models.

    python -m radbridge.inference.demo.train [--quick] [--out DIR] [--only NAME]

For each model: synthetic studies (training and held-out validation seeds apart) go through
the real preprocessing (`to_tensor` with the card's rule), the numpy network is trained,
exported to ONNX, loaded back in the ONNX Runtime backend against its card, and run on the
validation set. Written to DIR (default: the shipped `radbridge/inference/models`):
`<name>.yaml` (the card), `<name>.onnx`, `<name>.validation.json`, and README.md with the
figures of every model there. `--quick` uses tiny sets and few steps (for tests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from radbridge.inference.backends import OnnxRuntimeBackend
from radbridge.inference.cards import Preprocessing, load_cards
from radbridge.inference.demo import validation
from radbridge.inference.demo.export import build_model, write_model
from radbridge.inference.demo.locate import to_voxel
from radbridge.inference.demo.network import Array
from radbridge.inference.demo.specs import SPECS, DemoSpec
from radbridge.inference.demo.synthetic import generate_study
from radbridge.inference.demo.trainer import Place, Schedule, fit, scores
from radbridge.inference.preprocess import to_tensor

MODELS = Path(__file__).resolve().parent.parent / "models"
TRAIN_SEED, VALIDATION_SEED, NETWORK_SEED = 1000, 500_000, 7


@dataclass(frozen=True)
class Plan:
    train: int
    """Studies per class for training."""
    validation: int
    """Studies per class held out."""
    schedule: Schedule
    resamples: int


FULL = Plan(100, 60, Schedule(rounds=10, epochs=30), 1000)
QUICK = Plan(4, 3, Schedule(rounds=2, epochs=2, batch=8), 100)


def studies(spec: DemoSpec, rule: Preprocessing, count: int, first_seed: int
            ) -> tuple[Array, list[Place | None]]:
    """`count` positive and `count` negative studies as tensors, with the lesion voxels."""
    tensors, lesions = [], []
    for seed in range(first_seed, first_seed + count):
        for positive in (True, False):
            study = generate_study(spec.name, positive=positive, seed=seed)
            tensors.append(to_tensor(rule, study.datasets))
            lesions.append(to_voxel(rule, study.datasets, study.lesion_centre)
                           if study.lesion_centre is not None else None)
    return np.stack(tensors).astype(np.float32), lesions


def _probabilities(backend: OnnxRuntimeBackend, name: str, inputs: Array) -> Array:
    out = [backend.run({name: inputs[i:i + 16]})["probability"][:, 0]
           for i in range(0, len(inputs), 16)]
    return np.concatenate(out).astype(np.float32)


def train_model(name: str, plan: Plan, out: Path) -> dict[str, Any]:
    """Train, export and validate one model; returns its validation record."""
    spec = SPECS[name]
    rule = Preprocessing.model_validate(spec.preprocessing)
    began = time.perf_counter()
    inputs, lesions = studies(spec, rule, plan.train, TRAIN_SEED)
    schedule = replace(plan.schedule, places=spec.places)
    weights, losses = fit(inputs, lesions, spec.kernel, spec.hidden, spec.filters,
                          schedule, NETWORK_SEED)
    labels = [lesion is not None for lesion in lesions]
    train_scores = scores(weights, inputs)
    threshold = validation.best_threshold(train_scores, labels)
    seconds = time.perf_counter() - began
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / f"{name}.onnx"
    write_model(build_model(weights, spec.input_name, spec.channels,
                            list(rule.size)), model_path)
    card_path = out / f"{name}.yaml"
    card_path.write_text(yaml.safe_dump(spec.card(threshold), sort_keys=False))
    [(_, card)] = load_cards([card_path])
    backend = OnnxRuntimeBackend(card, out)
    held_out, held_lesions = studies(spec, rule, plan.validation, VALIDATION_SEED)
    held_labels = [lesion is not None for lesion in held_lesions]
    probabilities = _probabilities(backend, spec.input_name, held_out)
    record: dict[str, Any] = {
        "model": name, "version": card.version, "demonstration": True,
        "data": "synthetic (radbridge.inference.demo.synthetic)",
        "validation": validation.report(probabilities, held_labels, threshold,
                                        seed=NETWORK_SEED, resamples=plan.resamples),
        "training": {"positives": plan.train, "negatives": plan.train,
                     "seeds": [TRAIN_SEED, TRAIN_SEED + plan.train - 1],
                     "auc": round(validation.auc(train_scores, labels), 4),
                     "loss_per_round": [round(v, 4) for v in losses],
                     "seconds": round(seconds, 1), "network_seed": NETWORK_SEED,
                     "rounds": schedule.rounds, "epochs": schedule.epochs,
                     "places": schedule.places},
        "validation_seeds": [VALIDATION_SEED, VALIDATION_SEED + plan.validation - 1],
        "onnx": {"file": model_path.name, "bytes": model_path.stat().st_size,
                 "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest()},
        "card_sha256": card.digest(),
    }
    (out / f"{name}.validation.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _interval(values: Sequence[float]) -> str:
    return f"{values[0]:.2f}-{values[1]:.2f}"


def write_readme(out: Path) -> None:
    """The figures of every model in `out`, from their validation records."""
    rows = []
    for path in sorted(out.glob("*.validation.json")):
        record = json.loads(path.read_text())
        v = record["validation"]
        rows.append(f"| {record['model']} | {v['positives']}+{v['negatives']} | "
                    f"{v['auc']:.3f} ({_interval(v['auc_ci95'])}) | {v['threshold']} | "
                    f"{v['sensitivity']:.3f} ({_interval(v['sensitivity_ci95'])}) | "
                    f"{v['specificity']:.3f} ({_interval(v['specificity_ci95'])}) | "
                    f"{record['training']['seconds']} | {record['onnx']['bytes']} |")
    (out / "README.md").write_text(
        "# Demonstration models\n\n"
        "Trained by `python -m radbridge.inference.demo.train` on synthetic studies only; "
        "not for clinical use. Every output of these models says it is a demonstration.\n"
        "Figures are on a held-out synthetic set (separate seeds): AUC with a percentile "
        "bootstrap 95% interval, sensitivity and specificity at the card's threshold "
        "with Wilson 95% intervals. Details in `<name>.validation.json`.\n\n"
        "| model | held out (pos+neg) | AUC (95% CI) | threshold | sensitivity (95% CI) | "
        "specificity (95% CI) | training s | ONNX bytes |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sets, few steps")
    parser.add_argument("--out", type=Path, default=MODELS)
    parser.add_argument("--only", choices=sorted(SPECS), action="append")
    parser.add_argument("--jobs", type=int, default=2, help="models trained at once")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    names = args.only or list(SPECS)
    began = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        records = list(pool.map(train_model, names, [plan] * len(names),
                                [args.out] * len(names)))
    write_readme(args.out)
    for record in records:
        v = record["validation"]
        print(f"{record['model']}: AUC {v['auc']:.3f} {v['auc_ci95']}, sensitivity "
              f"{v['sensitivity']:.3f}, specificity {v['specificity']:.3f}, "
              f"{record['training']['seconds']} s")
    print(f"all: {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
