"""`radbridge validate FILE_OR_DIR...`: check channel files without starting anything.

It only reads YAML and imports the Python functions the channels name: no store is
opened, no port bound, no process started, so it is safe in CI and in pre-commit hooks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radbridge.engine.config_loader import load_channel_files
from radbridge.errors import ConfigError
from radbridge.interfaces.cli.common import print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "validate",
        help="check channel files and report every problem",
        description="Check channel files (or directories of *.yaml/*.yml) and print every "
        "problem as FILE:LINE: FIELD: MESSAGE. Exit status 1 when there is any.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        loaded = load_channel_files(args.paths)
    except ConfigError as exc:
        if args.json:
            issues = [{"file": issue.file, "line": issue.line, "path": issue.path,
                       "message": issue.message} for issue in exc.issues]
            print_json({"ok": False, "channels": [], "issues": issues})
        else:
            for issue in exc.issues:
                print(issue, file=sys.stderr)
        return 1
    names = [channel.config.name for channel in loaded]
    if args.json:
        print_json({"ok": True, "channels": names, "issues": []})
    else:
        files = len({channel.file for channel in loaded})
        print(f"OK: {len(names)} channel(s) in {files} file(s)")
    return 0
