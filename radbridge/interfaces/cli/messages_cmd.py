"""`radbridge messages list|show|reprocess|retry`: look at messages and replay them.

Reprocess and retry change state, so each appends audit events with the actor
`cli:<os user>`. Tables are printed with rich; `--json` prints JSON instead.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from radbridge.engine import queries, replay
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import MessageStatus
from radbridge.engine.settings import Settings
from radbridge.errors import RadbridgeError
from radbridge.interfaces.cli.common import add_store_options_to, open_store, print_json

Handler = Callable[[argparse.Namespace, Settings, Database], int]


def cli_actor() -> str:
    """The audit actor for commands run by hand: `cli:<os user>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("messages", help="list, show, reprocess and retry messages")
    actions = parser.add_subparsers(dest="messages_command", required=True, metavar="ACTION")

    list_ = _action(actions, "list", "messages newest first", _list)
    list_.add_argument("--channel", help="only this channel's messages")
    list_.add_argument("--status", choices=[status.value for status in MessageStatus])
    list_.add_argument("--before-id", type=int, metavar="ID",
                       help="the page after this id (the last id of the previous page)")
    list_.add_argument("--limit", type=int, default=50, help="messages per page (default 50)")

    show = _action(actions, "show", "one message with its stages and deliveries", _show)
    show.add_argument("message_id", type=int, metavar="ID")
    show.add_argument("--content", action="store_true", help="include each stage's content")

    reprocess = _action(actions, "reprocess", "process messages again, as a new generation",
                        _reprocess)
    reprocess.add_argument("message_ids", type=int, nargs="+", metavar="ID")

    retry = _action(actions, "retry", "move dead deliveries back to pending", _retry)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--message", type=int, metavar="ID", help="that message's deliveries")
    which.add_argument("--channel", help="that channel's deliveries (see --destination)")
    which.add_argument("--all", action="store_true", help="every dead delivery")
    retry.add_argument("--destination", help="with --channel: only this destination")


def _action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    handler: Handler,
) -> argparse.ArgumentParser:
    action = actions.add_parser(name, help=help_text)
    add_store_options_to(action)
    action.add_argument("--json", action="store_true", help="print JSON instead of a table")
    action.set_defaults(handler=lambda args: _with_store(args, handler))
    return action


def _with_store(args: argparse.Namespace, handler: Handler) -> int:
    settings, database = open_store(args)
    try:
        return handler(args, settings, database)
    except RadbridgeError as exc:
        print(f"radbridge: error: {exc}", file=sys.stderr)
        return 1
    finally:
        database.dispose()


def _list(args: argparse.Namespace, settings: Settings, database: Database) -> int:
    limit = max(1, min(args.limit, queries.MAX_PAGE))
    with database.read() as session:
        rows = queries.list_messages(
            session, channel=args.channel, status=args.status,
            before_id=args.before_id, limit=limit,
        )
    next_before_id = rows[-1]["id"] if len(rows) == limit else None
    if args.json:
        print_json({"messages": rows, "next_before_id": next_before_id})
        return 0
    table = Table(title=f"{len(rows)} messages")
    for name in ("id", "channel", "status", "gen", "received"):
        table.add_column(name, no_wrap=True)
    for name in ("accession", "deliveries", "error"):
        table.add_column(name)
    for row in rows:
        _add_row(
            table,
            str(row["id"]), row["channel"], row["status"], str(row["generation"]),
            row["received_at"][:19].replace("T", " "), row["accession"] or "",
            _deliveries_cell(row["deliveries"]), (row["error"] or "")[:60],
        )
    console = Console()
    console.print(table)
    if next_before_id is not None:
        console.print(f"more: --before-id {next_before_id}")
    return 0


def _add_row(table: Table, *values: str) -> None:
    """A row of plain text: stored values are never read as rich markup."""
    table.add_row(*(Text(value) for value in values))


def _deliveries_cell(deliveries: Mapping[str, Mapping[str, int]]) -> str:
    return ", ".join(
        f"{destination}:{'+'.join(sorted(statuses))}"
        for destination, statuses in sorted(deliveries.items())
    )


def _show(args: argparse.Namespace, settings: Settings, database: Database) -> int:
    with database.read() as session:
        detail = queries.message_detail(
            session, args.message_id, include_content=args.content,
            blobs=BlobStore(settings.blob_dir),
        )
    if args.json:
        print_json(detail)
        return 0
    console = Console()
    fields = Table("field", "value", show_header=False, title=f"message {detail['id']}")
    for key, value in detail.items():
        if key not in ("stages", "deliveries"):
            _add_row(fields, key, "" if value is None else str(value))
    console.print(fields)
    console.print(_stages_table(detail["stages"]))
    console.print(_deliveries_table(detail["deliveries"]))
    if args.content:
        for stage in detail["stages"]:
            if stage.get("content") is not None:
                note = " (truncated)" if stage["truncated"] else ""
                console.rule(escape(f"stage {stage['id']} {stage['stage']} "
                                    f"({stage['encoding']}){note}"))
                console.print(stage["content"], markup=False, highlight=False)
    return 0


def _stages_table(stages: list[dict[str, Any]]) -> Table:
    table = Table("id", "stage", "gen", "destination", "at", "type", "size", "detail",
                  title="stages")
    for stage in stages:
        _add_row(
            table,
            str(stage["id"]), stage["stage"], str(stage["generation"]),
            stage["destination"] or "", stage["at"][:23], stage["content_type"] or "",
            "" if stage["size"] is None else str(stage["size"]), stage["detail"] or "",
        )
    return table


def _deliveries_table(deliveries: list[dict[str, Any]]) -> Table:
    table = Table("id", "destination", "gen", "status", "attempts", "next attempt",
                  "last error", title="deliveries")
    for delivery in deliveries:
        _add_row(
            table,
            str(delivery["id"]), delivery["destination"], str(delivery["generation"]),
            delivery["status"], str(delivery["attempts"]),
            (delivery["next_attempt_at"] or "")[:19], (delivery["last_error"] or "")[:60],
        )
    return table


def _reprocess(args: argparse.Namespace, settings: Settings, database: Database) -> int:
    ids = replay.reprocess(database, args.message_ids, actor=cli_actor())
    if args.json:
        print_json({"reprocessed": ids})
    else:
        print(f"reprocessing {len(ids)} message(s): {', '.join(map(str, ids))}")
    return 0


def _retry(args: argparse.Namespace, settings: Settings, database: Database) -> int:
    if args.destination is not None and args.channel is None:
        print("radbridge: error: --destination needs --channel", file=sys.stderr)
        return 2
    retried = replay.retry_dead(
        database, message_id=args.message, channel=args.channel,
        destination=args.destination, all=args.all, actor=cli_actor(),
    )
    if args.json:
        print_json({"retried": retried})
    else:
        print(f"{retried} dead deliver{'y' if retried == 1 else 'ies'} back to pending")
    return 0
