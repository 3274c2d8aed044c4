"""`radbridge models list` and `radbridge infer STUDY_DIR --model NAME`: try a model card
on a study in a folder, on ONNX Runtime, and print its findings as JSON.

The findings go to stdout only; nothing is stored and nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radbridge.errors import ConfigError, RadbridgeError
from radbridge.inference.cards import load_cards
from radbridge.inference.offline import infer_folder
from radbridge.interfaces.cli.common import print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser("models", help="the model cards")
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    list_ = actions.add_parser("list", help="every card under --cards")
    list_.add_argument("--cards", type=Path, action="append", required=True, metavar="DIR")
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(handler=_list)
    infer = sub.add_parser("infer", help="run a model on a study folder, print findings")
    infer.add_argument("study", type=Path, metavar="STUDY_DIR")
    infer.add_argument("--model", required=True, metavar="NAME[:VERSION]")
    infer.add_argument("--cards", type=Path, action="append", required=True, metavar="DIR")
    infer.set_defaults(handler=_infer)


def _list(args: argparse.Namespace) -> int:
    try:
        cards = load_cards(args.cards)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
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


def _infer(args: argparse.Namespace) -> int:
    try:
        cards = load_cards(args.cards)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    name, _, version = args.model.partition(":")
    chosen = [(path, c) for path, c in cards
              if c.name == name and (not version or c.version == version)]
    if not chosen:
        print(f"radbridge: error: no card {args.model}; known: "
              f"{', '.join(c.key for _, c in cards) or 'none'}", file=sys.stderr)
        return 1
    path, card = max(chosen, key=lambda item: item[1].version)
    try:
        result = infer_folder(card, path.parent, args.study)
    except RadbridgeError as exc:
        print(f"radbridge: error: {exc}", file=sys.stderr)
        return 1
    print_json(result)
    return 0
