"""Results latency: from study-ready to the priority signal and to each output leaving.

    python -m benchmarks.results_latency            # 10 studies of 40 slices, 10 of 300
    python -m benchmarks.results_latency --quick    # 3 of each

One `radbridge run` (SQLite store) with the demo's channel set (the shipped channels,
quiet period 1 s, outputs as files under outbox/), driven by the demo's own runner
(radbridge/interfaces/demo): per study an ADT and an order over MLLP, the head CT with a
haemorrhage over C-STORE, then a wait for the priority update, the ORU, the FHIR
Bundle, the SR and the SEG. Studies go one after another (each after the previous one's
outputs). Times come from the engine: the study's `ready_at`, the inference run's
`updated_at` (the model's answer) and each output file's mtime. The matrix is 512x512
unless --matrix says otherwise (the generator's 128x128 head, each pixel repeated).

Targets (issue 7): the priority update within 1 s of the model's answer; all outputs
within 5 s of it. Results also go to benchmarks/results/results_latency.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import tempfile
from typing import Any

from benchmarks.stats import percentile
from radbridge.interfaces.demo.channels import Endpoints, Ports, write_channel_set
from radbridge.interfaces.demo.engine import Engine
from radbridge.interfaces.demo.messages import DemoCase
from radbridge.interfaces.demo.report import ALL_TARGET, PRIORITY_TARGET
from radbridge.interfaces.demo.runner import OUTPUTS, CaseResult, run_case

RESULTS = Path(__file__).resolve().parent / "results" / "results_latency.json"
SIZES = (40, 300)


def spans(result: CaseResult) -> dict[str, float]:
    """Name -> seconds, for one study whose every output arrived."""
    assert result.ready_at is not None and result.answer_at is not None
    figures = {"study-ready -> model answer": result.answer_at - result.ready_at}
    for spec in OUTPUTS:
        seen = result.outputs[spec.kind]
        assert seen.from_answer is not None and seen.from_ready is not None
        figures[f"model answer -> {spec.kind}"] = seen.from_answer
    for spec in OUTPUTS:
        figures[f"study-ready -> {spec.kind}"] = result.outputs[spec.kind].from_ready or 0.0
    return figures


def measure(engine: Engine, ports: Ports, slices: int, count: int, matrix: int
            ) -> list[dict[str, float]]:
    samples = []
    for index in range(count):
        result = run_case(engine, ports, Endpoints(), DemoCase.new(), slices=slices,
                          positive=True, matrix=matrix, timeout=300)
        if not result.ok:
            raise RuntimeError(f"study {index} of {slices} slices: {result.problem or ''} "
                               f"missing {result.missing}\n{engine.log_tail()}")
        samples.append(spans(result))
        print(f"  {slices} slices #{index + 1}: answer after "
              f"{samples[-1]['study-ready -> model answer']:.2f} s, priority "
              f"+{samples[-1]['model answer -> priority']:.2f} s, last output +"
              f"{max(v for k, v in samples[-1].items() if k.startswith('model')):.2f} s",
              flush=True)
    return samples


def summarise(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {name: {"p50": percentile([s[name] for s in samples], 50),
                   "p95": percentile([s[name] for s in samples], 95)}
            for name in samples[0]}


def verdict(table: dict[str, dict[str, float]]) -> dict[str, bool]:
    after_answer = [v["p95"] for k, v in table.items() if k.startswith("model answer")]
    return {"priority_p95_within_1s": table["model answer -> priority"]["p95"]
            <= PRIORITY_TARGET,
            "all_p95_within_5s": max(after_answer) <= ALL_TARGET}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 studies of each size")
    parser.add_argument("--count", type=int, help="studies of each size (default 10)")
    parser.add_argument("--matrix", type=int, default=512, choices=(128, 256, 512))
    args = parser.parse_args(argv)
    count = args.count or (3 if args.quick else 10)
    report: dict[str, Any] = {"count": count, "matrix": args.matrix, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="rb-results-latency-") as temp:
        root = Path(temp)
        ports = Ports.free()
        write_channel_set(root / "channels", ports, Endpoints(), quiet_period=1.0)
        with Engine(root / "channels", root / "data", root / "radbridge.log",
                    ports.api) as engine:
            engine.start()
            for slices in SIZES:
                print(f"{count} studies of {slices} slices ({args.matrix}x{args.matrix}):",
                      flush=True)
                table = summarise(measure(engine, ports, slices, count, args.matrix))
                report["sizes"][str(slices)] = {"figures": table, "targets": verdict(table)}
    for slices, entry in report["sizes"].items():
        print(f"\n{slices}-slice CT, {count} studies, seconds:")
        print(f"  {'span':34} {'p50':>7} {'p95':>7}")
        for name, figure in entry["figures"].items():
            print(f"  {name:34} {figure['p50']:7.3f} {figure['p95']:7.3f}")
        held = entry["targets"]
        print(f"  target: priority within {PRIORITY_TARGET:g} s of the answer (p95): "
              f"{'met' if held['priority_p95_within_1s'] else 'NOT met'}; all outputs "
              f"within {ALL_TARGET:g} s (p95): {'met' if held['all_p95_within_5s'] else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
