"""The figures as rich tables on stdout and as JSON for `benchmarks/results/latest.json`.

Every figure sits next to the reference measured in the same run and their ratio
(figure / reference): for throughput higher is better, for latency lower is better.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.audit_latency import AuditResult
from benchmarks.throughput import EngineResult, RawResult

PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")


def _raw(refs: list[RawResult], store: str, threads: int, per_commit: int) -> RawResult:
    return next(r for r in refs if (r.store, r.threads, r.per_commit) ==
                (store, threads, per_commit))


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.3f}" if reference else "-"


def throughput_table(engine: list[EngineResult], refs: list[RawResult]) -> Table:
    table = Table(title="Store throughput: engine vs raw INSERT+COMMIT (messages/s)")
    for column in ("Store", "Producers", "Engine figure", "msg/s",
                   "Raw 1/COMMIT", "Ratio", "Raw 100/COMMIT", "Ratio"):
        table.add_column(column, justify="left" if column in ("Store", "Engine figure")
                         else "right")
    for run in engine:
        single = _raw(refs, run.store, run.producers, 1).rows_per_s
        batched = _raw(refs, run.store, run.producers, 100).rows_per_s
        for label, value in (("acked receives", run.acked_per_s),
                             ("end to end, all sent", run.sent_per_s)):
            table.add_row(run.store, str(run.producers), label, f"{value:,.0f}",
                          f"{single:,.0f}", _ratio(value, single),
                          f"{batched:,.0f}", _ratio(value, batched))
    return table


def audit_table(results: list[AuditResult]) -> Table:
    table = Table(title="Audit query for one patient, limit 100 (ms, warm cache)")
    for column in ("Store", "Rows", "Percentile", "With index", "Full scan (ref)",
                   "Ratio", "Speed-up"):
        table.add_column(column, justify="left" if column == "Store" else "right")
    for result in results:
        indexed, scan = result.indexed.summary(), result.full_scan.summary()
        for key in PERCENTILES:
            table.add_row(result.store, f"{result.rows:,}", key.removesuffix("_ms"),
                          f"{indexed[key]:.2f}", f"{scan[key]:.1f}",
                          _ratio(indexed[key], scan[key]), f"{scan[key] / indexed[key]:,.0f}x")
    return table


def print_report(console: Console, data: dict[str, Any], engine: list[EngineResult],
                 refs: list[RawResult], audits: list[AuditResult]) -> None:
    machine = data["machine"]
    console.print(f"[bold]Radbridge benchmarks[/bold] {data['date']}  {machine['cores']} cores, "
                  f"Python {machine['python']}, SQLite {machine['sqlite']}, "
                  f"PostgreSQL {machine['postgresql']}")
    if engine:
        console.print(throughput_table(engine, refs))
        for run in engine:
            console.print(_engine_note(run))
    if audits:
        console.print(audit_table(audits))
        for result in audits:
            console.print(_audit_note(result))


def _engine_note(run: EngineResult) -> str:
    note = (f"  {run.store}, {run.producers} producer(s): {run.acked}/{run.messages} acked in "
            f"{run.ack_seconds:.2f} s, {run.sent} sent after {run.sent_seconds:.2f} s, "
            f"{run.mean_batch:.1f} messages per group commit; ack latency p50 "
            f"{run.ack_ms['p50']:.1f} ms, p99 {run.ack_ms['p99']:.1f} ms, max "
            f"{run.ack_ms['max']:.0f} ms; {len(run.errors)} errors, "
            f"{len(run.warnings)} engine warnings")
    if len(run.runs) > 1:
        rates = ", ".join(f"{acked:,.0f}/{sent:,.0f}" for acked, sent in run.runs)
        note += f"; acked/sent per s of each run: {rates} (median run shown)"
    if run.sent < run.acked:
        note += " [red]INCOMPLETE: not every acknowledged message was delivered in time[/red]"
    return note


def _audit_note(result: AuditResult) -> str:
    indexed, scan = result.indexed, result.full_scan
    return (f"  {result.store}: filled in {result.fill_seconds:.1f} s; "
            f"{len(indexed.samples_ms)} indexed queries, {len(scan.samples_ms)} full scans, "
            f"{indexed.rows_returned:.1f} events per patient returned; chain: "
            f"{result.chain_checked}\n    plan with index: {indexed.plan}\n"
            f"    plan without: {scan.plan}")


def as_json(engine: list[EngineResult], refs: list[RawResult],
            audits: list[AuditResult]) -> dict[str, Any]:
    return {
        "throughput": [_engine_json(run, refs) for run in engine],
        "raw_references": [{**r.__dict__, "rows_per_s": r.rows_per_s} for r in refs],
        "audit_query": [_audit_json(result) for result in audits],
    }


def _engine_json(run: EngineResult, refs: list[RawResult]) -> dict[str, Any]:
    single = _raw(refs, run.store, run.producers, 1).rows_per_s
    batched = _raw(refs, run.store, run.producers, 100).rows_per_s
    return {
        "store": run.store, "producers": run.producers, "messages": run.messages,
        "acked": run.acked, "ack_seconds": run.ack_seconds, "acked_per_s": run.acked_per_s,
        "sent": run.sent, "sent_seconds": run.sent_seconds, "sent_per_s": run.sent_per_s,
        "group_commits": run.commits, "mean_commit_batch": run.mean_batch,
        "ack_latency_ms": run.ack_ms,
        "runs_acked_sent_per_s": run.runs,
        "raw_per_commit_rows_per_s": single, "raw_batched_100_rows_per_s": batched,
        "ratio_acked_vs_raw": run.acked_per_s / single,
        "ratio_sent_vs_raw": run.sent_per_s / single,
        "ratio_acked_vs_raw_batched": run.acked_per_s / batched,
        "ratio_sent_vs_raw_batched": run.sent_per_s / batched,
        "errors": run.errors[:20], "error_count": len(run.errors),
        "warnings": run.warnings[:20], "warning_count": len(run.warnings),
    }


def _audit_json(result: AuditResult) -> dict[str, Any]:
    indexed, scan = result.indexed.summary(), result.full_scan.summary()
    return {
        "store": result.store, "rows": result.rows, "patients": result.patients,
        "fill_seconds": result.fill_seconds, "chain": result.chain_checked,
        "indexed": indexed, "full_scan_reference": scan,
        "ratio_indexed_vs_full_scan": {k: indexed[k] / scan[k] for k in PERCENTILES},
        "plan_indexed": result.indexed.plan, "plan_full_scan": result.full_scan.plan,
        "samples_ms": {"indexed": result.indexed.samples_ms,
                       "full_scan": result.full_scan.samples_ms},
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
