"""`radbridge qa ACTION`: clinical QA of the models. `qa evaluate FOLDER --labels CSV --out
DIR` runs the model cards on a held-out set (DICOM studies and their labels) the way
`radbridge infer` runs one, and writes DIR/evaluation.json and DIR/report.html (one
self-contained page with plots for the QA committee), printing a summary table.

Each action registers itself through one function in ACTIONS, so a new one (agreement,
drift) is a function here or in its own module, added to that tuple.

Exit codes: 0 done, 1 the evaluation could not run (a backend down, an invalid card),
2 bad input (the message names the file, line and column).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeAlias

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from radbridge.errors import ConfigError
from radbridge.inference.cards import ModelCard, find_card, load_cards, shipped_folder
from radbridge.qa.evaluate import (
    BackendChoice,
    Evaluation,
    EvaluationError,
    HeldOutError,
    evaluate,
    load_held_out,
)
from radbridge.qa.html_report import render_html
from radbridge.qa.metrics import Rate

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


ACTIONS: tuple[Callable[[SubParsers], None], ...] = (register_evaluate,)


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
