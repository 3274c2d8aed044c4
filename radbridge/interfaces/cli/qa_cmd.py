"""`radbridge qa ACTION`: clinical QA of the models. `qa evaluate FOLDER --labels CSV --out
DIR` runs the model cards on a held-out set (DICOM studies and their labels) the way
`radbridge infer` runs one, and writes DIR/evaluation.json and DIR/report.html (one
self-contained page with plots for the QA committee), printing a summary table.

From the store (the results the engine recorded and the radiologists' final reads):
`qa agreement` (agreement, sensitivity, specificity, PPV, NPV and the AI's positive rate
per model version, optionally per stratum), `qa drift` (score and input drift of a
model, current window against a baseline, optionally per scanner model) and `qa monitor`
(one pass raising drift alerts).

Each action registers itself through one function in ACTIONS, so a new one (agreement,
drift) is a function here or in its own module, added to that tuple.

Exit codes: 0 done, 1 the evaluation could not run (a backend down, an invalid card) or
`qa drift` found no observations, 2 bad input (the message names the file, line and
column, or the option).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal, TypeAlias, TypeVar

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm import Session

from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.engine.qa import monitor, queries
from radbridge.engine.receiver import GroupCommitter
from radbridge.errors import ConfigError
from radbridge.inference.cards import ModelCard, find_card, load_cards, shipped_folder
from radbridge.interfaces.cli.common import add_store_options_to, open_store, print_json
from radbridge.qa.drift import DriftThresholds, Judgement, KsResult
from radbridge.qa.errors import QaConfigError
from radbridge.qa.evaluate import (
    BackendChoice,
    Evaluation,
    EvaluationError,
    HeldOutError,
    evaluate,
    load_held_out,
)
from radbridge.qa.html_report import render_html
from radbridge.qa.metrics import DEFAULT_MIN_GROUP, Rate
from radbridge.qa.strata import DIMENSIONS

_T = TypeVar("_T")
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
BAD_INPUT = 2
EVALUATION_FILE, REPORT_FILE = "evaluation.json", "report.html"
BACKEND_KINDS: dict[str | None, Literal["card", "onnxruntime", "triton"]] = {
    None: "card", "onnx": "onnxruntime", "onnxruntime": "onnxruntime", "triton": "triton"}
"""--backend as `BackendChoice.kind`; without it, each card's own backend."""


def register(sub: SubParsers) -> None:
    parser = sub.add_parser("qa", help="clinical QA of the models: evaluation on held-out sets")
    actions = parser.add_subparsers(dest="qa_command", required=True, metavar="ACTION")
    for register_action in ACTIONS:
        register_action(actions)


def register_evaluate(actions: SubParsers) -> None:
    evaluate_ = actions.add_parser(
        "evaluate", help="run the models on a held-out set; write evaluation.json and "
                         "report.html")
    evaluate_.add_argument("folder", type=Path, metavar="FOLDER",
                           help="the held-out DICOM studies, in any layout")
    evaluate_.add_argument("--labels", type=Path, required=True, metavar="CSV",
                           help="study_uid or accession, finding (code), label (1/0); "
                                "other columns are strata")
    evaluate_.add_argument("--out", type=Path, required=True, metavar="DIR",
                           help="where evaluation.json and report.html are written "
                                "(e.g. one folder per date for scheduled runs)")
    evaluate_.add_argument("--cards", type=Path, action="append", metavar="DIR",
                           help="folder of model cards (repeatable; default: the shipped "
                                "ones)")
    evaluate_.add_argument("--models", nargs="+", metavar="NAME[:VERSION]",
                           help="only these models (default: every card with a labelled "
                                "finding)")
    evaluate_.add_argument("--backend", choices=("onnx", "onnxruntime", "triton"),
                           help="onnx(runtime): in-process; triton: a Triton server "
                                "(default: each card's own backend)")
    evaluate_.add_argument("--triton-url", metavar="HOST:PORT",
                           help="with --backend triton (default: the card's, or "
                                "127.0.0.1:8000)")
    evaluate_.add_argument("--protocol", choices=("http", "grpc"),
                           help="with --backend triton (default: the card's, or http)")
    evaluate_.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    evaluate_.add_argument("--min-group", type=int, default=30, metavar="N",
                           help="groups with fewer studies are flagged small (default 30)")
    evaluate_.add_argument("--confidence", type=float, default=0.95,
                           help="confidence level of the intervals (default 0.95)")
    evaluate_.add_argument("--json", action="store_true",
                           help="print the evaluation as JSON instead of the summary")
    evaluate_.set_defaults(handler=_evaluate)


def register_agreement(actions: SubParsers) -> None:
    agreement = actions.add_parser(
        "agreement", help="agreement with the radiologists' final reads, per model version "
                          "(and stratum), from the store")
    agreement.add_argument("--model", metavar="NAME", help="one model (default: all)")
    agreement.add_argument("--version", metavar="V", help="one version of --model")
    agreement.add_argument("--since", type=_date, metavar="DATE", help="first study date")
    agreement.add_argument("--until", type=_date, metavar="DATE",
                           help="last study date (default today with --since)")
    agreement.add_argument("--window", metavar="DAYS", help="the DAYS ending today, e.g. 90d "
                           "(instead of --since/--until; default: all study dates)")
    agreement.add_argument("--by", metavar="DIMENSION",
                           help="one row per group: " + ", ".join(DIMENSIONS) + ", or a DICOM "
                           "keyword the inference destination keeps (qa_strata)")
    _add_common(agreement)
    agreement.add_argument("--confidence", type=float, default=0.95,
                           help="confidence level of the intervals (default 0.95)")
    agreement.set_defaults(handler=_agreement)


def register_drift(actions: SubParsers) -> None:
    drift = actions.add_parser(
        "drift", help="score and input drift of a model, current window against a baseline")
    drift.add_argument("--model", required=True, metavar="NAME")
    drift.add_argument("--version", metavar="V", help="one version (default: each)")
    drift.add_argument("--baseline", metavar="FROM..TO", help="study dates, e.g. "
                       "2026-01-01..2026-03-31 (default: the 90 days before --current)")
    drift.add_argument("--current", metavar="FROM..TO",
                       help="study dates (default: the 30 days ending today)")
    drift.add_argument("--by-scanner", action="store_true",
                       help="also the score's drift per scanner model")
    drift.add_argument("--bins", type=int, default=10, help="bins of the baseline (default 10)")
    _add_common(drift)
    drift.set_defaults(handler=_drift)


def register_monitor(actions: SubParsers) -> None:
    watch = actions.add_parser(
        "monitor", help="one drift check of every model version; prints the alerts")
    watch.add_argument("--alert-channel", metavar="NAME",
                       help="also store each new alert as a JSON message on this channel "
                            "(a node that deploys it processes it)")
    watch.add_argument("--period-days", type=int, default=30,
                       help="length of the current window, periods from 1970-01-01 "
                            "(default 30)")
    watch.add_argument("--baseline-days", type=int, default=90,
                       help="baseline: the days before the current period (default 90)")
    watch.add_argument("--bins", type=int, default=10)
    watch.add_argument("--as-of", type=_date, metavar="DATE",
                       help="judge the windows ending at this study date (default today): "
                            "to look back at a past period")
    for name, default in (("psi-warn", 0.1), ("psi-alert", 0.25), ("ks-alpha", 0.01)):
        watch.add_argument(f"--{name}", type=float, default=default,
                           help=f"drift threshold (default {default:g})")
    _add_common(watch, monitor.ALERT_MIN_GROUP, "no alert for windows with fewer results")
    watch.set_defaults(handler=_monitor)


def _add_common(parser: argparse.ArgumentParser, min_group: int = DEFAULT_MIN_GROUP,
                meaning: str = "groups with fewer are flagged small") -> None:
    parser.add_argument("--min-group", type=int, default=min_group, metavar="N",
                        help=f"{meaning} (default {min_group})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_store_options_to(parser)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date such as 2026-01-31, "
                                         f"not {text!r}") from None


ACTIONS: tuple[Callable[[SubParsers], None], ...] = (
    register_evaluate, register_agreement, register_drift, register_monitor)


def _evaluate(args: argparse.Namespace) -> int:
    if args.min_group < 0 or not 0.0 < args.confidence < 1.0:
        return _fail("--min-group must be >= 0 and --confidence between 0 and 1", BAD_INPUT)
    try:
        cards = load_cards(args.cards or [shipped_folder()])
    except ConfigError as exc:
        return _fail(str(exc), BAD_INPUT)
    chosen = _chosen(cards, args.models)
    if chosen is None:
        return BAD_INPUT
    known = {f.finding.code for _, card in cards for f in card.findings}
    choice = BackendChoice(kind=BACKEND_KINDS[args.backend], url=args.triton_url,
                           protocol=args.protocol, timeout=args.timeout)
    try:
        held_out = load_held_out(args.folder, args.labels, known)
        result = evaluate(held_out, chosen, backend=choice, min_group=args.min_group,
                          confidence=args.confidence)
    except HeldOutError as exc:
        return _fail(str(exc), BAD_INPUT)
    except EvaluationError as exc:
        return _fail(str(exc), 1)
    try:
        written = _write(result, args.out)
    except OSError as exc:
        return _fail(f"cannot write to {args.out}: {exc.strerror or exc}", BAD_INPUT)
    if args.json:
        print(json.dumps(result.as_json(), indent=2, ensure_ascii=False))
    else:
        _print_summary(result, written)
    return 0


def _chosen(cards: list[tuple[Path, ModelCard]], wanted: list[str] | None
            ) -> list[tuple[Path, ModelCard]] | None:
    """The cards --models names (each NAME's newest version, or NAME:VERSION); every card
    without --models. None after printing which name matched no card."""
    if not wanted:
        return cards
    chosen = []
    for name in wanted:
        found = find_card(cards, name)
        if found is None:
            _fail(f"no card {name}; known: {', '.join(c.key for _, c in cards) or 'none'}",
                  BAD_INPUT)
            return None
        if found not in chosen:
            chosen.append(found)
    return chosen


def _write(result: Evaluation, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    evaluation, report = out / EVALUATION_FILE, out / REPORT_FILE
    evaluation.write_text(json.dumps(result.as_json(), indent=2, ensure_ascii=False) + "\n",
                          encoding="utf-8")
    report.write_text(render_html(result), encoding="utf-8")
    return [evaluation, report]


def _print_summary(result: Evaluation, written: list[Path]) -> None:
    table = Table(box=box.SIMPLE, title=f"{result.labelled_studies} labelled studies of "
                  f"{result.studies}",
                  caption=f"* a small group: fewer than {result.min_group} studies")
    table.add_column("model", no_wrap=True)
    for name in ("finding", "n", "AUC", "sens.", "spec."):
        table.add_column(name)
    for model in result.models:
        for finding in model.findings:
            auc = finding.auc
            table.add_row(*(Text(v) for v in (
                model.key, finding.code,
                f"{len(finding.records)}{'*' if finding.agreement.small else ''}",
                "n/a" if auc is None else f"{auc.value:.2f} ({auc.low:.2f}-{auc.high:.2f})",
                _rate(finding.agreement.sensitivity), _rate(finding.agreement.specificity))))
        if model.skipped:
            print(f"{model.key}: {len(model.skipped)} labelled studies not run "
                  f"(see the report)", file=sys.stderr)
    Console().print(table)
    for path in written:
        print(path)


def _rate(rate: Rate) -> str:
    """A percentage with its interval, short enough for an 80-column terminal."""
    if rate.value is None or rate.low is None or rate.high is None:
        return "n/a"
    return f"{rate.value:.0%} ({rate.low * 100:.0f}-{rate.high * 100:.0f})"


def _fail(message: str, code: int) -> int:
    print(f"radbridge: error: {message}", file=sys.stderr)
    return code


# --- agreement, drift, monitor: views of the store --------------------------------------


def _today() -> date:
    return datetime.now(UTC).date()


def _agreement(args: argparse.Namespace) -> int:
    try:
        if args.version and not args.model:
            raise QaConfigError("--version", "--model too")
        if args.window and (args.since or args.until):
            raise QaConfigError("--window", "either --window or --since/--until, not both")
        window = (queries.Window.trailing(args.window, _today(), "--window") if args.window
                  else queries.Window.between(args.since, args.until, _today()))
        report = _read(args, lambda s: queries.agreement(
            s, args.model, args.version, window, args.by, min_group=args.min_group,
            confidence=args.confidence))
    except QaConfigError as exc:
        return _fail(str(exc), BAD_INPUT)
    if args.json:
        print_json(report.as_json())
        return 0
    _print_agreement(report)
    return 0


def _print_agreement(report: queries.AgreementReport) -> None:
    """One table per model version and finding; rates in percent with their intervals
    (Cohen's kappa is in the JSON: ten columns do not fit 80 characters)."""
    where = f"study dates {report.window}" if report.window else "all study dates"
    console = Console()
    tables: dict[str, Table] = {}
    for row in report.rows:
        key = f"{row.model}:{row.version} {row.finding}"
        if key not in tables:
            tables[key] = _agreement_table(report, f"{key}, {where}")
        a = row.agreement
        tables[key].add_row(*(Text(v) for v in (
            row.group, str(row.n), f"{a.counts.total}{'*' if row.small else ''}",
            _percent(row.positive_rate, interval=False), _percent(a.agreement),
            _percent(a.sensitivity), _percent(a.specificity), _percent(a.ppv),
            _percent(a.npv))))
    for table in tables.values():
        console.print(table)
    if not tables:
        console.print(f"no AI results with observations, {where}")


_HEADERS = {"model": "scanner model", "age_band": "age band", "group": "group"}


def _agreement_table(report: queries.AgreementReport, title: str) -> Table:
    dimension = report.dimension or "group"
    table = Table(box=box.SIMPLE, title=title, pad_edge=False,
                  caption=f"n: AI results; read: with a radiologist's call (* fewer than "
                          f"{report.min_group}); rates in %, under each its "
                          f"{report.confidence:.0%} interval")
    table.add_column(_HEADERS.get(dimension, dimension), no_wrap=True)
    for name in ("n", "read", "AI+", "agree", "sens.", "spec.", "PPV", "NPV"):
        table.add_column(name, no_wrap=True)
    return table


def _percent(rate: Rate, *, interval: bool = True) -> str:
    if rate.value is None or rate.low is None or rate.high is None:
        return "n/a"
    if not interval:
        return f"{rate.value * 100:.0f}"
    # The interval on a line of its own keeps ten columns inside 80 characters.
    return f"{rate.value * 100:.0f}\n{rate.low * 100:.0f}-{rate.high * 100:.0f}"


def _drift(args: argparse.Namespace) -> int:
    try:
        windows = queries.drift_windows(
            _today(), args.baseline and queries.Window.parse(args.baseline, "--baseline"),
            args.current and queries.Window.parse(args.current, "--current"))
        options = queries.DriftOptions(bins=args.bins, min_group=args.min_group)
        reports = _read(args, lambda s: queries.drift(s, args.model, args.version, *windows,
                                                      options))
    except QaConfigError as exc:
        return _fail(str(exc), BAD_INPUT)
    if args.json:
        print_json({"reports": [r.as_json(scanners=args.by_scanner) for r in reports]})
    for report in [] if args.json else reports:
        _print_drift(report, args.by_scanner)
    if not reports:
        return _fail(f"no observations of model {args.model!r}", 1)
    return 0


def _print_drift(report: queries.DriftReport, by_scanner: bool) -> None:
    console = Console()
    table = Table(box=box.SIMPLE, title=f"{report.model}:{report.version} {report.finding}: "
                  f"{report.current} against baseline {report.baseline}",
                  caption="* small window; mean baseline -> current")
    for name in ("measure", "n", "mean", "PSI", "KS D (p)", "verdict"):
        table.add_column(name, no_wrap=name == "measure")
    for item in (report.score, *report.inputs):
        b, c = item.baseline, item.current
        table.add_row(*(Text(v) for v in (
            item.name, f"{b.n} / {c.n}{'*' if item.small else ''}",
            f"{_number(b.mean)} -> {_number(c.mean)}", _number(item.psi), _ks(item.ks),
            _verdict(item.judgement))))
    for cat in report.categories:
        table.add_row(*(Text(v) for v in (
            cat.name, "{} / {}{}".format(*cat.sizes, "*" if cat.small else ""),
            f"{len(cat.baseline)} -> {len(cat.current)} values", _number(cat.psi), "",
            _verdict(cat.judgement))))
    console.print(table)
    if by_scanner:
        scanners = Table("scanner model", "n", "PSI", "KS D (p)", "verdict", box=box.SIMPLE,
                         title="score drift per scanner model")
        for row in report.scanners:
            scanners.add_row(*(Text(v) for v in (
                row.scanner_model, f"{row.n_baseline} / {row.n_current}"
                f"{'*' if row.small else ''}", _number(row.psi), _ks(row.ks),
                _verdict(row.judgement))))
        console.print(scanners)


def _monitor(args: argparse.Namespace) -> int:
    try:
        settings = monitor.MonitorSettings(
            period_days=args.period_days, baseline_days=args.baseline_days, bins=args.bins,
            min_group=args.min_group, thresholds=DriftThresholds(
                psi_warn=args.psi_warn, psi_alert=args.psi_alert, ks_alpha=args.ks_alpha))
    except QaConfigError as exc:
        return _fail(str(exc), BAD_INPUT)
    stored, database = open_store(args)
    try:
        result = asyncio.run(_one_pass(database, BlobStore(stored.blob_dir),
                                       stored.inline_limit, settings, args.alert_channel,
                                       args.as_of))
    finally:
        database.dispose()
    if args.json:
        print_json(result.as_json())
        return 0
    raised = {alert.key for alert in result.raised}
    table = Table("model", "finding", "measure", "PSI", "KS D (p)", "n", "current", "new",
                  box=box.SIMPLE, title=f"{len(result.alerts)} drift alerts "
                  f"({len(raised)} new) over {len(result.checked)} model versions")
    for alert in result.alerts:
        table.add_row(*(Text(v) for v in (
            f"{alert.model}:{alert.version}", str(alert.finding), alert.measure,
            _number(alert.psi), "" if alert.ks_statistic is None else
            f"{alert.ks_statistic:.3f} ({alert.ks_p_value:.2g})",
            f"{alert.n_baseline} / {alert.n_current}", str(alert.current),
            "yes" if alert.key in raised else "")))
    Console().print(table)
    return 0


async def _one_pass(database: Database, blobs: BlobStore, inline_limit: int,
                    settings: monitor.MonitorSettings, channel: str | None,
                    as_of: date | None) -> monitor.MonitorPass:
    """One monitor pass; with a channel, alerts are stored through a receiver of our own."""
    if channel is None:
        return await monitor.run_pass(database, settings=settings, today=as_of)
    receiver = GroupCommitter(database, blobs, inline_limit=inline_limit,
                              audit_chain="cli/receiver")
    receiver.start()
    try:
        return await monitor.run_pass(database, settings=settings, today=as_of,
                                      receive=receiver.receive, alert_channel=channel)
    finally:
        receiver.stop()


def _read(args: argparse.Namespace, query: Callable[[Session], _T]) -> _T:
    """`query` on the store named by the options, in one read session."""
    _, database = open_store(args)
    try:
        with database.read() as session:
            return query(session)
    finally:
        database.dispose()


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _ks(ks: KsResult | None) -> str:
    return "n/a" if ks is None else f"{ks.statistic:.3f} ({ks.p_value:.2g})"


def _verdict(judgement: Judgement | None) -> str:
    return "n/a" if judgement is None else judgement.verdict.value.upper()
