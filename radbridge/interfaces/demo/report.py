"""The demo's summary: JSON (for scripts and tests) or rich tables (for a person).

Identifiers only: the patient ID, accession and study UID, never the patient's name or
birth date (the demo's patient is synthetic, but the summary is shaped like a real one).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from radbridge.interfaces.demo.runner import OUTPUTS, CaseResult

PRIORITY_TARGET = 1.0
"""Seconds from the model's answer to the priority update leaving (issue 7)."""
ALL_TARGET = 5.0
"""Seconds from the model's answer to every output leaving."""


def iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def findings(result: CaseResult) -> list[dict[str, Any]]:
    """One row per finding of each run (a run without findings: one row of its status)."""
    rows = []
    for run in result.runs:
        base = {"model": run["model_name"], "version": run["model_version"],
                "demonstration": bool(run.get("demonstration")), "status": run["status"],
                "series_uid": run.get("series_uid"), "instances": run.get("instances"),
                "preprocess_ms": run.get("preprocess_ms"),
                "inference_ms": run.get("inference_ms"), "reason": run.get("reason")}
        for finding in run.get("findings") or [{}]:
            location = finding.get("location") or {}
            rows.append({**base, "finding": finding.get("display"),
                         "code": finding.get("code"), "positive": finding.get("positive"),
                         "emergent": finding.get("emergent"),
                         "probability": finding.get("probability"),
                         "location_mm": location.get("patient_mm"),
                         "location_instance": location.get("sop_instance_uid")})
    return rows


def targets(result: CaseResult) -> dict[str, bool | None]:
    """Whether the issue's targets held (None when the outputs to judge are missing)."""
    priority = result.outputs.get("priority")
    spans = [seen.from_answer for seen in result.outputs.values()]
    return {
        "priority_within_1s_of_answer": None if priority is None or priority.from_answer
        is None else priority.from_answer <= PRIORITY_TARGET,
        "all_within_5s_of_answer": None if result.missing or None in spans or not spans
        else max(s for s in spans if s is not None) <= ALL_TARGET,
    }


def as_json(result: CaseResult, **extra: Any) -> dict[str, Any]:
    case = result.case
    ready, answer = result.ready_at, result.answer_at
    return {
        "ok": result.ok, "problem": result.problem, "missing": result.missing,
        "case": {"patient_id": case.patient_id, "accession": case.accession,
                 "study_uid": case.study_uid, "order_priority": "STAT" if case.stat
                 else "routine", "slices": result.slices, "instances": result.instances,
                 "haemorrhage": result.positive},
        "client_steps_s": {k: _round(v) for k, v in result.steps.items()},
        "study_ready_at": iso(ready), "model_answer_at": iso(answer),
        "ready_to_answer_s": None if ready is None or answer is None else _round(answer - ready),
        "linked_orders": [{k: o.get(k) for k in ("accession", "rule", "confidence")}
                          for o in result.linked],
        "findings": findings(result),
        "outputs": {kind: {"label": seen.label, "where": seen.where, "at": iso(seen.at),
                           "from_ready_s": _round(seen.from_ready),
                           "from_answer_s": _round(seen.from_answer)}
                    for kind, seen in result.outputs.items()},
        "expected_outputs": result.expected,
        "targets": targets(result),
        "audit": result.audit,
        **extra,
    }


def show(console: Console, result: CaseResult) -> None:
    """The summary as tables: findings, outputs with their timings, the audit trail."""
    case = result.case
    console.print()
    console.print(f"[bold]Patient[/] {case.patient_id}  [bold]accession[/] {case.accession}"
                  f"  [bold]study[/] {case.study_uid}  ({result.instances} instances)")
    if result.ready_at is not None and result.answer_at is not None:
        console.print(f"Study ready -> model's answer: {result.answer_at - result.ready_at:.2f} s")
    table = Table(title="Findings", title_justify="left")
    for column in ("Model", "Version", "Demo", "Finding", "P", "Result", "Location (mm)"):
        table.add_column(column)
    answered = [row for row in findings(result) if row["status"] != "skipped"]
    for row in answered:
        table.add_row(
            row["model"], row["version"], "yes" if row["demonstration"] else "no",
            row["finding"] or row["status"],
            "-" if row["probability"] is None else f"{row['probability']:.3f}",
            "positive" + (" (emergent)" if row["emergent"] else "") if row["positive"]
            else "negative" if row["status"] == "done" else row["status"],
            "-" if not row["location_mm"] else ", ".join(f"{v:g}" for v in row["location_mm"]))
    console.print(table)
    skipped = [row["model"] for row in findings(result) if row["status"] == "skipped"]
    if skipped:
        console.print(f"Not applicable to this study (skipped): {', '.join(skipped)}")
    if any(row["demonstration"] for row in answered):
        console.print("[bold yellow]DEMONSTRATION model: trained on synthetic data only, "
                      "not for clinical use.[/]")
    outputs = Table(title="Outputs", title_justify="left")
    for column in ("Output", "From study-ready (s)", "From model's answer (s)", "Where"):
        outputs.add_column(column, overflow="fold")
    for spec in OUTPUTS:
        seen = result.outputs.get(spec.kind)
        if seen is not None:
            outputs.add_row(spec.label, _seconds(seen.from_ready), _seconds(seen.from_answer),
                            seen.where)
        elif spec.kind in result.expected:
            outputs.add_row(spec.label, "[red]missing[/]", "", "")
    console.print(outputs)
    held = targets(result)
    console.print(f"Targets: priority within {PRIORITY_TARGET:g} s of the answer: "
                  f"{_verdict(held['priority_within_1s_of_answer'])}; all outputs within "
                  f"{ALL_TARGET:g} s: {_verdict(held['all_within_5s_of_answer'])}")
    trail = Table(title=f"Audit trail of patient {case.patient_id}", title_justify="left")
    for column in ("Time (UTC)", "Action", "Actor", "Outcome", "Channel", "Events"):
        trail.add_column(column)
    for event in result.audit:
        trail.add_row(str(event["at"])[11:23], event["action"], event["actor"],
                      str(event["outcome"]), event.get("channel") or "", str(event["count"]))
    console.print(trail)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _verdict(held: bool | None) -> str:
    return "n/a" if held is None else "[green]met[/]" if held else "[red]not met[/]"
