"""`radbridge reconcile list|link|reject`: the studies the rules could not place.

Link and reject are decisions: each is an audit event naming `cli:<os user>` and the
note given, and linking records the study-order link with that actor.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from radbridge.engine.correlation import queries, service
from radbridge.errors import RadbridgeError
from radbridge.interfaces.cli.common import add_store_options_to, open_store, print_json
from radbridge.interfaces.cli.messages_cmd import cli_actor

STATES = ("open", "linked", "rejected", "superseded", "all")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("reconcile", help="the reconciliation queue of unplaced studies")
    actions = parser.add_subparsers(dest="reconcile_command", required=True, metavar="ACTION")
    list_ = actions.add_parser("list", help="queued studies, newest first")
    list_.add_argument("--state", choices=STATES, default="open")
    list_.add_argument("--limit", type=int, default=50)
    list_.add_argument("--before-id", type=int, metavar="ID")
    link = actions.add_parser("link", help="link a queued study to its order(s)")
    link.add_argument("item_id", type=int, metavar="ITEM")
    link.add_argument("--order", type=int, action="append", required=True, metavar="ORDER_ID",
                      dest="orders", help="an order id (repeat for a combined exam)")
    link.add_argument("--note", required=True, help="why (kept in the audit ledger)")
    reject = actions.add_parser("reject", help="decide a queued study has no order")
    reject.add_argument("item_id", type=int, metavar="ITEM")
    reject.add_argument("--note", required=True, help="why (kept in the audit ledger)")
    for action, handler in ((list_, _list), (link, _link), (reject, _reject)):
        add_store_options_to(action)
        action.add_argument("--json", action="store_true", help="print JSON instead of a table")
        action.set_defaults(handler=handler)


def _list(args: argparse.Namespace) -> int:
    _, database = open_store(args)
    try:
        with database.read() as session:
            items = queries.list_items(session, state=None if args.state == "all"
                                       else args.state, limit=args.limit,
                                       before_id=args.before_id)
    finally:
        database.dispose()
    if args.json:
        print_json({"items": items})
        return 0
    table = Table("item", "study UID", "kind", "reason", "candidates", "state",
                  title=f"{len(items)} item(s)")
    for item in items:
        candidates = ", ".join(f"{c['order_id']} ({c['rule']})" for c in item["candidates"])
        table.add_row(*(Text(str(v)) for v in (item["id"], item["study_uid"], item["kind"],
                                                item["reason"], candidates, item["state"])))
    Console().print(table)
    return 0


def _link(args: argparse.Namespace) -> int:
    return _decide(args, lambda session, actor: service.link_by_hand(
        session, args.item_id, args.orders, actor=actor, note=args.note, chain="cli"))


def _reject(args: argparse.Namespace) -> int:
    return _decide(args, lambda session, actor: service.reject_by_hand(
        session, args.item_id, actor=actor, note=args.note, chain="cli"))


def _decide(args: argparse.Namespace, decide: object) -> int:
    _, database = open_store(args)
    try:
        with database.write() as session:
            item = decide(session, cli_actor())  # type: ignore[operator]
            view = queries.item_view(item)
    except RadbridgeError as exc:
        print(f"radbridge: error: {exc}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    if args.json:
        print_json(view)
    else:
        print(f"item {view['id']}: {view['state']} by {view['resolved_by']}")
    return 0
