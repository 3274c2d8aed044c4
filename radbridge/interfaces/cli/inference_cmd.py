"""`radbridge inference list|show`: the runs the engine made on ready studies, with
their status (done, skipped, failed-retryable, failed-final), findings and provenance."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from radbridge.engine.inference_runs import queries
from radbridge.interfaces.cli.common import add_store_options_to, open_store, print_json

STATUSES = ("done", "skipped", "failed-retryable", "failed-final")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("inference", help="inference runs on received studies")
    actions = parser.add_subparsers(dest="inference_command", required=True, metavar="ACTION")
    list_ = actions.add_parser("list", help="runs, newest first")
    list_.add_argument("--study", metavar="STUDY_UID")
    list_.add_argument("--model", metavar="NAME[:VERSION]")
    list_.add_argument("--status", choices=STATUSES)
    list_.add_argument("--positive", action="store_true", help="only runs with a positive finding")
    list_.add_argument("--limit", type=int, default=50)
    list_.add_argument("--offset", type=int, default=0)
    show = actions.add_parser("show", help="one run with its findings")
    show.add_argument("run_id", type=int, metavar="RUN_ID")
    for action, handler in ((list_, _list), (show, _show)):
        add_store_options_to(action)
        action.add_argument("--json", action="store_true", help="print JSON instead of tables")
        action.set_defaults(handler=handler)


def _list(args: argparse.Namespace) -> int:
    _, database = open_store(args)
    try:
        with database.read() as session:
            runs = queries.list_runs(session, queries.RunFilter(
                study_uid=args.study, model=args.model, status=args.status,
                positive=True if args.positive else None, limit=args.limit,
                offset=args.offset))
    finally:
        database.dispose()
    if args.json:
        print_json({"runs": runs})
        return 0
    table = Table("run", "study UID", "v", "model", "status", "positive", "series UID",
                  "ms", title=f"{len(runs)} runs")
    for run in runs:
        took = (run["preprocess_ms"] or 0) + (run["inference_ms"] or 0)
        table.add_row(*(Text(str(v)) for v in (
            run["id"], run["study_uid"], run["study_version"],
            f"{run['model_name']}:{run['model_version']}", run["status"],
            "EMERGENT" if run["emergent"] else ("yes" if run["positive"] else "no"),
            run["series_uid"] or run["reason"] or "", f"{took:.0f}")))
    Console().print(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    _, database = open_store(args)
    try:
        with database.read() as session:
            run = queries.run_detail(session, args.run_id)
    finally:
        database.dispose()
    if run is None:
        print(f"radbridge: error: no inference run {args.run_id}", file=sys.stderr)
        return 1
    if args.json:
        print_json(run)
        return 0
    console = Console()
    fields = Table("field", "value", show_header=False, title=f"inference run {args.run_id}")
    for key, value in run.items():
        if key != "findings":
            fields.add_row(Text(key), Text("" if value is None else str(value)))
    console.print(fields)
    findings = Table("finding", "probability", "positive", "location", "measurements",
                     title="findings")
    for item in run["findings"]:
        where = item["location"] or {}
        location = " ".join(f"{k}={v}" for k, v in where.items() if v is not None)
        measured = ", ".join(f"{m['name']} {m['value']} {m['unit']}"
                             for m in item["measurements"])
        findings.add_row(Text(f"{item['display']} ({item['system']} {item['code']})"),
                         Text(f"{item['probability']:.3f}"),
                         Text("EMERGENT" if item["emergent"] else str(item["positive"])),
                         Text(location), Text(measured))
    console.print(findings)
    return 0
