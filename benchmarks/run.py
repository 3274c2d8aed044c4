"""Run Radbridge's store benchmarks and print each figure beside its reference.

    python -m benchmarks.run            # full run, a few minutes on 2 cores
    python -m benchmarks.run --quick    # the same figures at small sizes, under a minute

See benchmarks/README.md for what is measured and how to read it. Results also go to
benchmarks/results/latest.json (ignored by git).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from benchmarks import audit_latency, report, stores, throughput
from benchmarks.payload import ADT_A01
from radbridge.engine.db import Database

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
PRODUCERS = (1, 8)
EVENTS_PER_PATIENT = 50
SEED = 20250101


@dataclass(frozen=True)
class Plan:
    """Sizes of one run (the full defaults, or scaled down by --quick)."""

    stores: tuple[str, ...]
    messages: int
    raw_batched_rows: int
    engine_timeout: float
    repeat: int
    audit_rows: int
    patients: int
    queries: int
    scan_queries: int
    verify_chain: bool


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--stores", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default both)")
    parser.add_argument("--messages", type=int, help="messages per throughput configuration")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per engine configuration; the median is reported")
    parser.add_argument("--audit-rows", type=int, help="audit events to load")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-audit", action="store_true")
    parser.add_argument("--verify-chain", action="store_true",
                        help="run audit.verify over the loaded ledger (slow at 1M rows)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    kinds = tuple(k.strip() for k in args.stores.split(",") if k.strip())
    unknown = set(kinds) - {"sqlite", "postgresql"}
    if unknown:
        raise SystemExit(f"--stores: unknown {sorted(unknown)}; expected sqlite, postgresql")
    messages = args.messages or (300 if args.quick else 2000)
    rows = args.audit_rows or (100_000 if args.quick else 1_000_000)
    return Plan(
        stores=kinds, messages=messages, raw_batched_rows=10 * messages,
        engine_timeout=60.0 if args.quick else 300.0, repeat=max(1, args.repeat),
        audit_rows=rows, patients=max(1, rows // EVENTS_PER_PATIENT),
        queries=100 if args.quick else 200, scan_queries=5, verify_chain=args.verify_chain,
    )


def run_throughput(kind: str, plan: Plan, workdir: Path, console: Console) -> tuple[
        list[throughput.EngineResult], list[throughput.RawResult]]:
    """Engine runs with 1 and 8 producers on fresh stores, then the raw references.

    With --repeat N each engine configuration runs N times (a fresh store each time) and
    the median by acked/s is reported; raw references are always the median of 3.
    """
    engine: list[throughput.EngineResult] = []
    for producers in PRODUCERS:
        runs = []
        for repetition in range(plan.repeat):
            console.log(f"{kind}: engine, {producers} producer(s), {plan.messages} messages")
            store = stores.fresh_store(kind, workdir, f"{kind}-engine-{producers}-{repetition}")
            runs.append(throughput.measure_engine(store, producers, plan.messages,
                                                  plan.engine_timeout))
        engine.append(throughput.median_run(runs))
    raw: list[throughput.RawResult] = []
    store = stores.fresh_store(kind, workdir, f"{kind}-raw")
    for producers in PRODUCERS:
        console.log(f"{kind}: raw INSERT+COMMIT, {producers} thread(s)")
        raw.append(throughput.measure_raw(store, producers, 1, plan.messages))
        raw.append(throughput.measure_raw(store, producers, 100, plan.raw_batched_rows))
    return engine, raw


def run_audit(kind: str, plan: Plan, chunks: list[list[audit_latency.Row]],
              workdir: Path, console: Console) -> audit_latency.AuditResult:
    console.log(f"{kind}: loading {plan.audit_rows:,} audit events and querying")
    store = stores.fresh_store(kind, workdir, f"{kind}-audit")
    database = Database(store.url)
    try:
        return audit_latency.run(database, chunks, plan.patients, repetitions=plan.queries,
                                 scan_repetitions=plan.scan_queries,
                                 verify=plan.verify_chain, seed=SEED)
    finally:
        database.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    console = Console(width=None if sys.stdout.isatty() else 150)
    engine: list[throughput.EngineResult] = []
    raw: list[throughput.RawResult] = []
    audits: list[audit_latency.AuditResult] = []
    started = datetime.now(UTC)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rb-bench-")))
        if "postgresql" in plan.stores:
            stack.enter_context(stores.postgres_database())
        if not args.skip_throughput:
            for kind in plan.stores:
                more_engine, more_raw = run_throughput(kind, plan, workdir, console)
                engine += more_engine
                raw += more_raw
        if not args.skip_audit:
            console.log(f"generating {plan.audit_rows:,} hash-chained audit events")
            chunks = list(audit_latency.generate(plan.audit_rows, plan.patients, SEED))
            audits = [run_audit(kind, plan, chunks, workdir, console) for kind in plan.stores]
    data = _document(plan, started, engine, raw, audits)
    report.print_report(console, data, engine, raw, audits)
    report.write_json(args.output, data)
    console.print(f"JSON written to {args.output}")
    healthy = all(run.sent >= run.acked == run.messages for run in engine)
    return 0 if healthy else 1


def _document(plan: Plan, started: datetime, engine: list[throughput.EngineResult],
              raw: list[throughput.RawResult],
              audits: list[audit_latency.AuditResult]) -> dict[str, Any]:
    return {
        "date": started.isoformat(timespec="seconds"),
        "seconds": (datetime.now(UTC) - started).total_seconds(),
        "machine": stores.machine_info(),
        "plan": asdict(plan),
        "payload_bytes": len(ADT_A01),
        "notes": [
            "ratios are figure / reference measured in the same run",
            "throughput: higher is better; audit latency: lower is better",
            "audit queries run with a warm cache, each in its own read session",
        ],
        **report.as_json(engine, raw, audits),
    }


if __name__ == "__main__":
    sys.exit(main())
