"""Inference: ONNX Runtime in-process against Triton over HTTP and gRPC, same run, same
models, same tensors.

    python -m benchmarks.inference            # 300 latency samples, 3 s of throughput
    python -m benchmarks.inference --quick    # 60 samples, 1 s

Models: every card in radbridge/inference/models (the shipped demonstration models);
when that folder holds none, two generated ones (mean of the volume -> sigmoid): `small`
(1x8x16x16, 8 KB a request) and `ct` (1x32x128x128, 2 MB a request).

Parties, each through Radbridge's own backend classes (what a channel would use):
- in-process: OnnxRuntimeBackend (one onnxruntime session, 1 intra-op thread), the
  reference;
- Triton HTTP / gRPC: TritonBackend against the real tritonserver 2.51 of
  tests/peers/triton.py (CPU, Python backend wrapping onnxruntime with 1 thread, dynamic
  batching), the models exported by `radbridge models export-triton --backend python`.
Latency: one request at a time, batch 1, p50/p95 of `--requests` calls after 10 warm-up
calls. Throughput: `--concurrency` requests in flight (threads for in-process, the
backend's worker threads for Triton), inferences per second over `--seconds`, in rounds
of 64 requests.
Results also go to benchmarks/results/inference.json (ignored by git).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from importlib import resources
from typing import Any, Literal

import numpy as np
import yaml

from benchmarks.stats import percentile
from radbridge.inference.backends import Backend, OnnxRuntimeBackend
from radbridge.inference.cards import ModelCard, load_cards
from radbridge.inference.triton import TritonBackend
from radbridge.inference.triton_export import export_repository
from tests.peers import triton as triton_peer
from tests.test_onnx_backend import mean_sigmoid_model

RESULTS = Path(__file__).resolve().parent / "results" / "inference.json"
WARM_UP = 10
GENERATED = {"small": [1, 8, 16, 16], "ct": [1, 32, 128, 128]}


def shipped_cards() -> list[tuple[Path, ModelCard]]:
    folder = Path(str(resources.files("radbridge.inference") / "models"))
    return load_cards([folder]) if folder.is_dir() else []


def generated_cards(folder: Path) -> list[tuple[Path, ModelCard]]:
    """Small stand-ins when no model is shipped yet."""
    for name, shape in GENERATED.items():
        mean_sigmoid_model(folder / f"{name}.onnx", shape, scale=10.0)
        card = {
            "name": name, "version": "0.0.1", "task": "triage", "use_case": "benchmark",
            "intended_use": "Benchmark only: measures the inference path.",
            "device_identifier": "RADBRIDGE-BENCH", "demonstration": True,
            "series": {"modalities": ["CT"]},
            "preprocessing": {"kind": "volume", "size": shape[1:]},
            "backend": {"kind": "onnx", "path": f"{name}.onnx"},
            "inputs": {"volume": shape},
            "findings": [{"output": "probability", "threshold": 0.5,
                          "finding": {"code": "0", "system": "DCM", "display": "bench"}}],
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(card))
    return load_cards([folder])


def sample(card: ModelCard) -> dict[str, np.ndarray]:
    name, shape = next(iter(card.inputs.items()))
    return {name: np.random.default_rng(7).random((1, *shape), dtype=np.float32)}


def latency(backend: Backend, inputs: dict[str, np.ndarray], requests: int) -> list[float]:
    for _ in range(WARM_UP):
        backend.run(inputs)
    samples = []
    for _ in range(requests):
        began = time.perf_counter()
        backend.run(inputs)
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def throughput(submit: Callable[[], Future[Any]], seconds: float) -> float:
    """Inferences per second, in rounds of 64 requests until `seconds` have passed."""
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        futures = [submit() for _ in range(64)]
        for future in futures:
            future.result()
        done += len(futures)
    return done / (time.perf_counter() - began)


def figure(card: ModelCard, party: str, backend: Backend, submit: Callable[[], Future[Any]],
           inputs: dict[str, np.ndarray], requests: int, seconds: float) -> dict[str, Any]:
    samples = latency(backend, inputs, requests)
    rate = throughput(submit, seconds)
    return {"model": card.key, "party": party,
            "tensor_kb": round(sum(v.nbytes for v in inputs.values()) / 1024, 1),
            "p50_ms": round(percentile(samples, 50), 3),
            "p95_ms": round(percentile(samples, 95), 3), "per_s": round(rate, 1)}


def run_card(path: Path, card: ModelCard, server: triton_peer.TritonServer, requests: int,
             concurrency: int, seconds: float) -> list[dict[str, Any]]:
    inputs = sample(card)
    rows = []
    local = OnnxRuntimeBackend(card, path.parent)
    with ThreadPoolExecutor(concurrency) as pool:
        rows.append(figure(card, "in-process", local,
                           partial(pool.submit, local.run, inputs), inputs, requests, seconds))
    local.close()
    parties: tuple[tuple[Literal["http", "grpc"], str], ...] = (
        ("http", server.http_url), ("grpc", server.grpc_url))
    for protocol, url in parties:
        remote = TritonBackend(card, model=card.name, url=url, protocol=protocol,
                               timeout=60, concurrency=concurrency)
        try:
            rows.append(figure(card, f"triton {protocol}", remote,
                               partial(remote.submit, inputs), inputs, requests, seconds))
        finally:
            remote.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, help="per throughput figure (default 3)")
    args = parser.parse_args(argv)
    requests = args.requests or (60 if args.quick else 300)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    triton_peer.install()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rb-inference-") as scratch:
        work = Path(scratch)
        cards = shipped_cards()
        if not cards:
            (work / "cards").mkdir()
            cards = generated_cards(work / "cards")
        export_repository(cards, work / "repository", backend="python")
        with triton_peer.TritonServer(work / "repository") as server:
            for path, card in cards:
                rows += run_card(path, card, server, requests, args.concurrency, seconds)
    print_report(rows, args.concurrency)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"requests": requests, "concurrency": args.concurrency,
                                   "seconds": seconds, "rows": rows}, indent=2))
    return 0


def print_report(rows: list[dict[str, Any]], concurrency: int) -> None:
    reference = {r["model"]: r for r in rows if r["party"] == "in-process"}
    print(f"{'model':<28} {'party':<12} {'KB':>7} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'x p50':>6} {f'inf/s@{concurrency}':>9} {'x inf/s':>7}")
    for row in rows:
        base = reference[row["model"]]
        print(f"{row['model']:<28} {row['party']:<12} {row['tensor_kb']:>7} "
              f"{row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} "
              f"{row['p50_ms'] / base['p50_ms']:>6.2f} {row['per_s']:>9.1f} "
              f"{row['per_s'] / base['per_s']:>7.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
