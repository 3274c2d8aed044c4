"""`radbridge db upgrade|current`: schema migrations by hand (run also does upgrade)."""

from __future__ import annotations

import argparse

from radbridge.engine.migrate import current_revision, head_revision
from radbridge.interfaces.cli.common import add_store_options_to, open_store


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("db", help="schema migrations of the store")
    actions = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    for name, help_text in (("upgrade", "apply pending migrations"),
                            ("current", "print the schema revision")):
        action = actions.add_parser(name, help=help_text)
        add_store_options_to(action)
        action.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    _, database = open_store(args)
    print(f"schema at {current_revision(database)} (head {head_revision()})")
    database.dispose()
    return 0
