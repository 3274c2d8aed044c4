"""`radbridge token create|list|revoke`: API tokens for the HTTP API.

`create` prints the token once (the store keeps only its digest); `list` never shows
secrets; `revoke` takes effect on the next request. Creating and revoking are audit
events naming `cli:<os user>`.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from datetime import timedelta

from rich.console import Console
from rich.table import Table
from rich.text import Text

from radbridge.engine.models import utcnow
from radbridge.engine.queries import iso
from radbridge.engine.units import parse_duration
from radbridge.interfaces.auth.errors import TokenError
from radbridge.interfaces.auth.identity import Role
from radbridge.interfaces.auth.tokens import create_token, list_tokens, revoke_token
from radbridge.interfaces.cli.common import add_store_options_to, open_store, print_json
from radbridge.interfaces.cli.messages_cmd import cli_actor


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("token", help="API tokens: create, list, revoke")
    actions = parser.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a token and print it (once)")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", help="what audit events call its caller (default "
                        "<role>-<random>); unique")
    create.add_argument("--expires", metavar="DURATION",
                        help="lifetime such as 90d or 12h (default: until revoked)")
    list_ = actions.add_parser("list", help="every token, without secrets")
    revoke = actions.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("token_id", type=int, metavar="ID")
    for action, handler in ((create, _create), (list_, _list), (revoke, _revoke)):
        add_store_options_to(action)
        action.add_argument("--json", action="store_true", help="print JSON")
        action.set_defaults(handler=handler)


def _create(args: argparse.Namespace) -> int:
    try:
        lifetime = None if args.expires is None else parse_duration(args.expires)
    except ValueError as exc:
        print(f"radbridge token create: --expires: {exc}", file=sys.stderr)
        return 2
    if lifetime is not None and lifetime <= 0:
        print("radbridge token create: --expires: expected a positive duration", file=sys.stderr)
        return 2
    expires_at = None if lifetime is None else utcnow() + timedelta(seconds=lifetime)
    name = args.name or f"{args.role}-{secrets.token_hex(3)}"
    _, database = open_store(args)
    try:
        with database.write() as session:
            token = create_token(session, name=name, role=args.role, created_by=cli_actor(),
                                 expires_at=expires_at)
    except TokenError as exc:
        print(f"radbridge token create: {exc}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    if args.json:
        print_json({"id": token.id, "name": token.name, "role": token.role.value,
                    "expires_at": iso(token.expires_at), "token": token.secret})
        return 0
    until = f"expires {iso(token.expires_at)}" if token.expires_at else "no expiry"
    print(f"token {token.id} ({token.name}, role {token.role.value}, {until}):")
    print(token.secret)
    print("It is shown only now; Radbridge keeps only its digest. Send it as "
          "'Authorization: Bearer <token>'.", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    _, database = open_store(args)
    try:
        with database.read() as session:
            tokens = list_tokens(session)
    finally:
        database.dispose()
    if args.json:
        print_json({"tokens": tokens})
        return 0
    table = Table("id", "name", "role", "state", "created", "expires", "last used",
                  title=f"{len(tokens)} token(s)")
    for token in tokens:
        table.add_row(*(Text(str(token[key])) for key in ("id", "name", "role", "state")),
                      *(Text(_minute(token[key])) for key in (
                          "created_at", "expires_at", "last_used_at")))
    Console().print(table)
    return 0


def _minute(iso_time: str | None) -> str:
    """2026-01-31T08:00:59.123+00:00 -> 2026-01-31 08:00 (UTC); '-' for none."""
    return "-" if iso_time is None else iso_time[:16].replace("T", " ")


def _revoke(args: argparse.Namespace) -> int:
    _, database = open_store(args)
    try:
        with database.write() as session:
            revoked = revoke_token(session, args.token_id, revoked_by=cli_actor())
    except TokenError as exc:
        print(f"radbridge token revoke: {exc}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    if args.json:
        print_json({"id": args.token_id, "revoked": revoked})
    else:
        print(f"token {args.token_id} " + ("revoked" if revoked else "was already revoked"))
    return 0
