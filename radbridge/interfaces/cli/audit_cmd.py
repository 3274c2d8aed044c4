"""`radbridge audit verify|query`: check the hash chain, search the audit trail.

`verify` exits 1 when the chain is broken, printing where and why.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from radbridge.engine import audit
from radbridge.errors import AuditChainBroken, RadbridgeError
from radbridge.interfaces.cli.common import add_store_options_to, open_store, print_json

QUERY_TEXT_FILTERS = ("patient_id", "accession", "study_uid", "channel", "actor", "action",
                      "outcome")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("audit", help="verify and query the audit ledger")
    actions = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    verify = actions.add_parser("verify", help="recompute the hash chain (exit 1 if broken)")
    add_store_options_to(verify)
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(handler=_verify)

    query = actions.add_parser("query", help="events matching all filters, newest first (JSON)")
    add_store_options_to(query)
    for name in QUERY_TEXT_FILTERS:
        query.add_argument(f"--{name.replace('_', '-')}", dest=name)
    query.add_argument("--message-id", type=int)
    query.add_argument("--since", type=_iso_time, help="ISO 8601 time, inclusive")
    query.add_argument("--until", type=_iso_time, help="ISO 8601 time, exclusive")
    query.add_argument("--before-seq", type=int, help="the page before this event number")
    query.add_argument("--limit", type=int, default=100, help="events per page (default 100)")
    query.set_defaults(handler=_query)


def _iso_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2025-01-31T08:00:00Z, got {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _verify(args: argparse.Namespace) -> int:
    _, database = open_store(args)
    try:
        report = audit.verify(database)
    except AuditChainBroken as exc:
        if args.json:
            print_json({"ok": False, "seq": exc.seq, "reason": exc.reason})
        else:
            print(f"audit chain BROKEN: {exc}")
        return 1
    except RadbridgeError as exc:
        print(f"radbridge: error: {exc}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    if args.json:
        print_json({"ok": True, "events": report.events, "chains": report.chains,
                    "head_seq": report.head_seq, "head_hash": report.head_hash})
    else:
        print(f"audit chains verified: {report.events} events in {report.chains} chain(s), "
              f"newest {report.head_seq} {report.head_hash}")
    return 0


def _query(args: argparse.Namespace) -> int:
    limit = max(1, min(args.limit, 10_000))
    filters = audit.AuditQuery(
        **{name: getattr(args, name) for name in QUERY_TEXT_FILTERS},
        message_id=args.message_id, since=args.since, until=args.until,
        before_seq=args.before_seq, limit=limit,
    )
    _, database = open_store(args)
    try:
        with database.read() as session:
            events = [audit.event_as_dict(event) for event in audit.query(session, filters)]
    except RadbridgeError as exc:
        print(f"radbridge: error: {exc}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    next_before_seq = events[-1]["seq"] if len(events) == limit else None
    print_json({"events": events, "next_before_seq": next_before_seq})
    return 0
