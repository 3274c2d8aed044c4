"""`radbridge channels list|deploy FILE|undeploy NAME|pause NAME|resume NAME|reload`.

These talk to a running node's API (the changes happen in that node's process), so
they need its URL and a token: --api and --token, or $RADBRIDGE_API_URL and
$RADBRIDGE_TOKEN (an admin token for changes; `radbridge token create --role admin`).
Exit status: 0 done, 1 the node refused or could not be reached (every config problem
is printed as FILE:LINE: FIELD: MESSAGE, as `radbridge validate` prints it), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from radbridge.interfaces.cli.common import print_json

DEFAULT_API = "http://127.0.0.1:8080"
TIMEOUT = 120.0
"""Seconds to wait for an answer: undeploying lets sends in flight finish first."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("channels", help="deploy, undeploy, pause, resume, reload "
                            "channels of a running node (through its API)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="deployed channels and whether paused")
    deploy = actions.add_parser("deploy", help="deploy the channel(s) of a YAML file")
    deploy.add_argument("file", type=Path, metavar="FILE")
    deploy.add_argument("--replace", action="store_true",
                        help="redeploy a channel of that name that is deployed already")
    for name in ("undeploy", "pause", "resume"):
        one = actions.add_parser(name, help=f"{name} one channel")
        one.add_argument("name", metavar="NAME")
    reload = actions.add_parser("reload", help="make the node match its config files again")
    for action in (listing, deploy, *(actions.choices[n] for n in ("undeploy", "pause",
                                                                    "resume")), reload):
        action.add_argument("--api", metavar="URL", help="the node's API (default "
                            f"$RADBRIDGE_API_URL or {DEFAULT_API})")
        action.add_argument("--token", help="an API token (default $RADBRIDGE_TOKEN)")
        action.add_argument("--json", action="store_true", help="print the answer as JSON")
        action.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.action == "deploy":
        try:
            body = args.file.read_bytes()
        except OSError as exc:
            print(f"radbridge channels deploy: cannot read {args.file}: {exc.strerror}",
                  file=sys.stderr)
            return 1
    method, path, params, content = _request(args, body if args.action == "deploy" else None)
    url = args.api or os.environ.get("RADBRIDGE_API_URL") or DEFAULT_API
    token = args.token or os.environ.get("RADBRIDGE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if content is not None:
        headers["Content-Type"] = "application/yaml"
    try:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
            response = client.request(method, path, params=params, content=content,
                                      headers=headers)
    except httpx.HTTPError as exc:
        print(f"radbridge channels: cannot reach the node's API at {url}: "
              f"{type(exc).__name__}", file=sys.stderr)
        return 1
    return _show(args, response)


def _request(args: argparse.Namespace, body: bytes | None
             ) -> tuple[str, str, dict[str, str], bytes | None]:
    """(method, path, query, body) of the API call an action makes."""
    if args.action == "list":
        return "GET", "/api/control/channels", {}, None
    if args.action == "deploy":
        params = {"file": str(args.file)}
        if args.replace:
            params["replace"] = "true"
        return "POST", "/api/channels", params, body
    if args.action == "reload":
        return "POST", "/api/config/reload", {}, None
    name = quote(args.name, safe="")
    if args.action == "undeploy":
        return "DELETE", f"/api/channels/{name}", {}, None
    return "POST", f"/api/channels/{name}/{args.action}", {}, None


def _show(args: argparse.Namespace, response: httpx.Response) -> int:
    try:
        answer: dict[str, Any] = response.json()
    except ValueError:
        answer = {"error": response.text[:500]}
    if args.json:
        print_json(answer)
    elif response.is_success:
        _print_answer(answer)
    if response.is_success:
        return 0
    if not args.json:
        for issue in answer.get("issues", []):
            where = issue["file"] if issue.get("line") is None else \
                f"{issue['file']}:{issue['line']}"
            field = f" {issue['path']}:" if issue.get("path") else ""
            print(f"{where}:{field} {issue['message']}", file=sys.stderr)
        print(f"radbridge channels {args.action}: HTTP {response.status_code}: "
              f"{answer.get('error', '')}", file=sys.stderr)
    return 1


def _print_answer(answer: dict[str, Any]) -> None:
    if "channels" in answer:
        for channel in answer["channels"]:
            state = "paused" if channel["paused"] else "running"
            print(f"{channel['name']:<24} {state:<8} {channel['source']:<12} "
                  f"{','.join(channel['destinations'])}  ({channel['origin']}"
                  f"{': ' + channel['file'] if channel['file'] else ''})")
        return
    for change in answer.get("changes", []):
        print(f"{change['channel']}: {change['action']}")
        if change.get("diff"):
            print(change["diff"])
