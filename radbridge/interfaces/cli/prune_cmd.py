"""`radbridge prune`: apply retention by age and/or size (see engine/retention.py)."""

from __future__ import annotations

import argparse
import getpass
import sys

from radbridge.engine.blobstore import BlobStore
from radbridge.engine.retention import prune
from radbridge.engine.units import parse_duration, parse_size
from radbridge.interfaces.cli.common import add_store_options_to, open_store, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("prune", help="delete old finished messages and unused blobs")
    add_store_options_to(parser)
    parser.add_argument("--max-age", type=parse_duration, help="e.g. 30d: older messages go")
    parser.add_argument("--max-size", type=parse_size,
                        help="e.g. 10GB: oldest messages go until stored content fits")
    parser.add_argument("--include-errored", action="store_true",
                        help="also prune errored messages and dead letters")
    parser.add_argument("--include-queued", action="store_true",
                        help="also prune messages with deliveries still owed (loses them!)")
    parser.add_argument("--dry-run", action="store_true", help="count only")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.max_age is None and args.max_size is None:
        print("radbridge prune: give --max-age, --max-size or both", file=sys.stderr)
        return 2
    settings, database = open_store(args)
    report = prune(
        database, BlobStore(settings.blob_dir), max_age=args.max_age, max_size=args.max_size,
        include_errored=args.include_errored, include_queued=args.include_queued,
        dry_run=args.dry_run, actor=f"cli:{getpass.getuser()}",
    )
    database.dispose()
    if args.json:
        print_json(report.__dict__)
    else:
        verb = "would prune" if report.dry_run else "pruned"
        print(f"{verb} {report.messages} message(s); removed {report.blobs} unused blob(s), "
              f"{report.blob_bytes} bytes")
    return 0
