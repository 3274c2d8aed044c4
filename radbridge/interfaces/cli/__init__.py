"""The `radbridge` command: one subcommand module per job, each with `register(sub)`.

Exit codes: 0 success, 1 the command ran and found a problem (invalid config, broken
audit chain), 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from radbridge import __version__

SUBCOMMAND_MODULES = ("run", "validate", "messages", "audit", "db", "prune", "send", "studies",
                      "reconcile", "dicom", "infer", "inference", "demo", "qa",
                      "token",
                      "channels")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radbridge", description="HL7/FHIR integration engine with an imaging-AI extension."
    )
    parser.add_argument("--version", action="version", version=f"radbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"radbridge.interfaces.cli.{name}_cmd")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    sys.stdout.flush()
    return result
