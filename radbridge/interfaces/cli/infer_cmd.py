"""`radbridge models list|export-triton` and `radbridge infer STUDY_DIR --model NAME`: see
the model cards, deploy them to Triton, and try one on a study in a folder, on ONNX
Runtime in-process or on a Triton server, printing its findings as JSON.

The findings go to stdout only; nothing is stored. With `--backend triton` the study's
tensor (no names, no identifiers) goes to the Triton server named; otherwise nothing
leaves the machine. Without --cards, the cards shipped with Radbridge are used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal

from radbridge.errors import ConfigError, RadbridgeError
from radbridge.inference.backends import TritonTarget
from radbridge.inference.cards import (
    ModelCard,
    OnnxBackend,
    TritonBackend,
    load_cards,
    shipped_folder,
)
from radbridge.inference.offline import infer_folder
from radbridge.inference.triton_export import export_repository
from radbridge.interfaces.cli.common import print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser("models", help="the model cards")
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    list_ = actions.add_parser("list", help="every card under --cards")
    _cards_option(list_)
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(handler=_list)
    export = actions.add_parser("export-triton", help="write a Triton model repository")
    export.add_argument("out", type=Path, metavar="DIR")
    _cards_option(export)
    export.add_argument("--backend", choices=("onnxruntime", "python"), default="onnxruntime",
                        help="Triton backend: onnxruntime (production) or python (a "
                             "model.py wrapping onnxruntime, for CPU-only test servers)")
    export.add_argument("--max-batch-size", type=int, default=8)
    export.set_defaults(handler=_export)
    infer = sub.add_parser("infer", help="run a model on a study folder, print findings")
    infer.add_argument("study", type=Path, metavar="STUDY_DIR")
    infer.add_argument("--model", required=True, metavar="NAME[:VERSION]")
    _cards_option(infer)
    infer.add_argument("--backend", choices=("onnxruntime", "triton"),
                       help="default: the card's own backend")
    infer.add_argument("--triton-url", metavar="HOST:PORT",
                       help="with --backend triton (default: the card's, or 127.0.0.1:8000)")
    infer.add_argument("--protocol", choices=("http", "grpc"),
                       help="with --backend triton (default: the card's, or http)")
    infer.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    infer.set_defaults(handler=_infer)


def _cards_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cards", type=Path, action="append", metavar="DIR",
                        help="folder of model cards (repeatable; default: the shipped ones)")


def _load(args: argparse.Namespace) -> list[tuple[Path, ModelCard]] | None:
    folders = args.cards or [shipped_folder()]
    try:
        return load_cards([f for f in folders if args.cards or f.is_dir()])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _list(args: argparse.Namespace) -> int:
    cards = _load(args)
    if cards is None:
        return 1
    rows = [{"name": c.name, "version": c.version, "task": c.task, "use_case": c.use_case,
             "demonstration": c.demonstration, "backend": c.backend.kind, "file": str(path)}
            for path, c in cards]
    if args.json:
        print_json({"models": rows})
    else:
        for row in rows:
            flag = " (demonstration)" if row["demonstration"] else ""
            print(f"{row['name']}:{row['version']}  {row['task']}  {row['use_case']}"
                  f"  {row['backend']}{flag}")
    return 0


def _export(args: argparse.Namespace) -> int:
    cards = _load(args)
    if cards is None:
        return 1
    if not cards:
        print("radbridge: error: no model cards to export", file=sys.stderr)
        return 1
    latest: dict[str, tuple[Path, ModelCard]] = {}
    for path, card in cards:  # one version per name in a repository: the newest
        if card.name not in latest or card.version > latest[card.name][1].version:
            latest[card.name] = (path, card)
    try:
        folders = export_repository(list(latest.values()), args.out, backend=args.backend,
                                    max_batch_size=args.max_batch_size)
    except RadbridgeError as exc:
        print(f"radbridge: error: {exc}", file=sys.stderr)
        return 1
    for folder in folders:
        print(f"{folder}  ({args.backend})")
    return 0


def _infer(args: argparse.Namespace) -> int:
    cards = _load(args)
    if cards is None:
        return 1
    name, _, version = args.model.partition(":")
    chosen = [(path, c) for path, c in cards
              if c.name == name and (not version or c.version == version)]
    if not chosen:
        print(f"radbridge: error: no card {args.model}; known: "
              f"{', '.join(c.key for _, c in cards) or 'none'}", file=sys.stderr)
        return 1
    path, card = max(chosen, key=lambda item: item[1].version)
    if args.backend == "onnxruntime" and not isinstance(card.backend, OnnxBackend):
        print(f"radbridge: error: {card.key} has no ONNX file (its backend is "
              f"{card.backend.kind})", file=sys.stderr)
        return 1
    try:
        result = infer_folder(card, path.parent, args.study, target=_target(args, card))
    except RadbridgeError as exc:
        print(f"radbridge: error: {exc}", file=sys.stderr)
        return 1
    print_json(result)
    return 0


def _target(args: argparse.Namespace, card: ModelCard) -> TritonTarget | None:
    if args.backend != "triton":
        return None
    section = card.backend if isinstance(card.backend, TritonBackend) else None
    url: str = args.triton_url or (section.url if section else "127.0.0.1:8000")
    # argparse's choices hold --protocol to the same two values as the card's field.
    protocol: Literal["http", "grpc"] = args.protocol or (
        section.protocol if section else "http")
    return TritonTarget(url=url, protocol=protocol, timeout=args.timeout)
