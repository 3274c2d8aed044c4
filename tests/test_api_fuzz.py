"""Bad input in every query parameter of every GET route, on both engines: SQL
metacharacters, NUL, backslashes, odd Unicode, 100 kB strings, numbers past 64 bits.
With an admin token, the answer is a success or a 4xx with a JSON error, never a 5xx,
and nothing in the store changes but the audit trail's read events.

There is no OpenAPI description: `GET_PARAMS` lists each route's parameters, copied
from the `query_params(request, (...))` tuple of its handler, and a test checks that it
names every GET route (a new route needs its line here). Requests go to the ASGI app
directly: an HTTP client refuses URLs past 64 KiB, and a server in front would refuse
them too, but the app must hold on its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.routing import Route

from radbridge.engine import audit
from radbridge.engine.db import Database
from radbridge.engine.models import AUDIT_EVENTS, AUDIT_HEAD, Base
from radbridge.interfaces import api, api_audit
from radbridge.interfaces.api import create_app
from radbridge.interfaces.auth.authenticator import Authenticator
from radbridge.interfaces.auth.identity import Role
from radbridge.interfaces.auth.tokens import TokenVerifier
from tests.test_auth_api import authed_context, bearer, make_tokens, seed

MESSAGES = ("channel", "status", "patient_id", "accession", "before_id", "limit")
STUDIES = ("state", "accession", "patient_id", "modality", "channel", "limit", "offset")
INFERENCE = ("study_uid", "model", "status", "positive", "limit", "offset")
AGREEMENT = ("model", "version", "since", "until", "window", "by", "min_group", "confidence")
DRIFT = ("model", "version", "baseline", "current", "by_scanner", "bins", "min_group")

GET_PARAMS: dict[str, tuple[str, ...]] = {
    "/health": (),
    "/ready": (),
    "/metrics": (),
    "/api/me": (),
    "/api/channels": (),
    "/api/channels/{name}": (),
    "/api/messages": MESSAGES,
    "/api/messages/{message_id:int}": ("content",),
    "/api/studies": STUDIES,
    "/api/studies/{study_uid}": ("instances",),
    "/api/inference": INFERENCE,
    "/api/inference/{run_id:int}": (),
    "/api/qa/agreement": AGREEMENT,
    "/api/qa/drift": DRIFT,
    "/api/reconciliation": ("state", "limit", "before_id"),
    "/api/audit": (*api_audit.FILTER_PARAMS, "before_seq", "after_seq", "limit"),
    "/api/audit/export": (*api_audit.FILTER_PARAMS, "format", "limit", "order"),
    "/api/audit/studies/{study_uid}": (),
    "/api/audit/forwarding": (),
    "/api/control/channels": (),
    "/console": (),
    "/console/": (),
    "/console/{path:path}": (),
}
"""Route path -> the query parameters its handler takes."""

NO_NODE = {"/api/control/channels"}
"""Routes that answer 503 by design here: this API has no node (runtime control) behind it."""

READ_ACTIONS = {"message.listed", "message.viewed", "study.listed", "study.viewed",
                "inference.listed", "inference.viewed", "audit.queried", "audit.exported",
                "audit.study-cycle-viewed"}
"""What a GET may add to the audit trail: the record of the read itself."""

HUGE = 100_000
METACHARACTERS = ["'", '"', ";", "--", "/*", "*/", "%00", "\x00", "\\", "%", "_", "`",
                  "' OR '1'='1", "'; DROP TABLE messages; --", "\\x00", "${jndi:x}", "..",
                  "\u202e", "\ufeff", "\u0130", "😀", "ß", "²", "٣", "\r\n", "\t", " "]
NUMBERS = [str(2**70), str(-2**70), str(2**63), str(2**63 - 1), "-1", "0", "1e309", "NaN",
           "inf", "0x10", " 7", "7 ", "1.5", "1_000"]
PLAUSIBLE = ["ich", "orders", "open", "all", "done", "true", "false", "csv", "json", "fhir",
             "atna", "asc", "desc", "2026-01-01", "2026-01-01T00:00:00Z", "30d", "sex",
             "2026-01-01..2026-01-31", "PAT-0042", "ACC-0042", "1.2.826.0.1.3680043.10.1001",
             "message.*"]
"""Values a handler accepts, so that the other parameters reach deeper code."""



@dataclass(frozen=True)
class Huge:
    """A value of `count` times `unit`, drawn as this (a failure then prints 40 characters)."""

    unit: str
    count: int

    def __str__(self) -> str:
        return self.unit * self.count


values = st.one_of(
    st.sampled_from(METACHARACTERS),
    st.sampled_from(NUMBERS),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.sampled_from(PLAUSIBLE),
    st.lists(st.sampled_from(METACHARACTERS + PLAUSIBLE), min_size=2, max_size=6).map("".join),
    st.text(max_size=40),
    st.sampled_from([Huge("A", HUGE), Huge("'", HUGE), Huge("é", HUGE // 2), Huge("9", HUGE),
                     Huge("%00", HUGE // 3)]),
)


def _get_routes() -> list[Route]:
    return [r for r in api.ROUTES if isinstance(r, Route) and "GET" in (r.methods or ())]


def _fill(path: str, data: st.DataObject) -> str:
    """The route's path with each path parameter drawn from the same strategies (quoted)."""
    def value(match: re.Match[str]) -> str:
        if match.group(1) == "int":
            return str(data.draw(st.integers(min_value=0, max_value=2**70)))
        drawn = str(data.draw(values.filter(lambda v: str(v).strip("/") != "")))
        return quote(drawn, safe="") if match.group(1) != "path" else quote(drawn, safe="/")

    return re.sub(r"{\w+(?::(\w+))?}", value, path)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class AsgiClient:
    """GETs straight into the ASGI app, from the test's thread through a portal."""

    def __init__(self, app: Starlette, portal: BlockingPortal) -> None:
        self.app, self.portal = app, portal

    def get(self, url: str, query: str = "", headers: dict[str, str] | None = None) -> Answer:
        return self.portal.call(self._get, url, query, headers or {})

    async def _get(self, url: str, query: str, headers: dict[str, str]) -> Answer:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": unquote(url), "raw_path": url.encode(), "root_path": "",
            "query_string": query.encode(), "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "headers": [(b"host", b"testserver")] + [
                (k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        sent: list[dict[str, Any]] = []
        done = anyio.Event()
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # the app answered 500 and raised it again: show what it was
            return Answer(500, {}, repr(exc).encode())
        finally:
            done.set()
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return Answer(start["status"],
                      {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}, body)


def _snapshot(database: Database) -> dict[str, str]:
    """A digest of each table's rows, but for the audit trail (reads add to it)."""
    digests = {}
    with database.read() as session:
        for table in Base.metadata.sorted_tables:
            if table in (AUDIT_EVENTS, AUDIT_HEAD):
                continue
            rows = session.execute(select(table).order_by(*table.primary_key.columns)).all()
            text = json.dumps([list(row) for row in rows], default=str, sort_keys=True)
            digests[table.name] = hashlib.sha256(text.encode()).hexdigest()
    return digests


def _added_actions(database: Database, after_seq: int) -> set[str]:
    with database.read() as session:
        return set(session.execute(select(AUDIT_EVENTS.c.action).where(
            AUDIT_EVENTS.c.seq > after_seq)).scalars())


def _last_seq(database: Database) -> int:
    with database.read() as session:
        return max(session.execute(select(AUDIT_EVENTS.c.seq)).scalars(), default=0)


def test_the_parameter_table_names_every_get_route() -> None:
    paths = {route.path for route in _get_routes()}
    assert sorted(paths - set(GET_PARAMS)) == [], "add these routes to GET_PARAMS"
    assert sorted(set(GET_PARAMS) - paths) == [], "these routes are gone"


@pytest.fixture
def fuzzed(database: Database, tmp_path: Path) -> Iterator[tuple[AsgiClient, dict[str, str]]]:
    seed(database)
    headers = bearer(make_tokens(database)[Role.ADMIN])
    context = authed_context(database, tmp_path)
    # Last use is written once, by the warm-up request below, so the store then holds still.
    context.auth = Authenticator(TokenVerifier(database, touch_every=float("inf")))
    with start_blocking_portal() as portal:
        client = AsgiClient(create_app(context), portal)
        assert client.get("/api/channels", headers=headers).status == 200
        yield client, headers


def _problem(answer: Answer, path: str) -> str | None:
    """What is wrong with an answer to bad input (None: a success or a JSON 4xx)."""
    text = f"{answer.status} {answer.body[:200].decode(errors='replace')}"
    if answer.status >= 500 and not (answer.status == 503 and path in NO_NODE):
        return text
    if answer.status >= 400 and (answer.headers.get("content-type") != "application/json"
                                 or not isinstance(json.loads(answer.body).get("error"), str)):
        return f"not a JSON error: {text}"
    return None


@pytest.mark.parametrize("path", sorted(GET_PARAMS))
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_bad_values_in_every_parameter_never_fail_the_server_or_change_the_store(
        fuzzed: tuple[AsgiClient, dict[str, str]], database: Database, path: str,
        data: st.DataObject) -> None:
    client, headers = fuzzed
    before, last_seq = _snapshot(database), _last_seq(database)
    names = list(GET_PARAMS[path])
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))
                       if names else st.just([]))
    params = {name: str(data.draw(values)) for name in chosen}
    if data.draw(st.booleans()):
        params[data.draw(st.sampled_from(["x", "limit'", "patient_id\x00"]))] = "1"
    answer = client.get(_fill(path, data), urlencode(params), headers)
    assert _problem(answer, path) is None
    assert _snapshot(database) == before
    assert _added_actions(database, last_seq) <= READ_ACTIONS


NASTY = [*METACHARACTERS, *NUMBERS, *(str(h) for h in (
    Huge("A", HUGE), Huge("'", HUGE), Huge("é", HUGE // 2), Huge("9", HUGE)))]
SAMPLE_PATH_VALUES = {"int": "1", "path": "index.html", "": "orders"}
SLOT = r"{\w+(?::(\w+))?}"


def _with_path_value(path: str, index: int | None, value: str) -> str:
    """`path` with its path parameter number `index` set to `value`, the others to samples."""
    slots = iter(range(1000))

    def fill(match: re.Match[str]) -> str:
        if next(slots) == index:
            return quote(value, safe="")
        return SAMPLE_PATH_VALUES[match.group(1) or ""]

    return re.sub(SLOT, fill, path)


@pytest.mark.parametrize("path", sorted(GET_PARAMS))
def test_each_parameter_takes_each_bad_value(fuzzed: tuple[AsgiClient, dict[str, str]],
                                            database: Database, path: str) -> None:
    """Not left to chance: every parameter, path ones too, gets every value of `NASTY`."""
    client, headers = fuzzed
    before, last_seq = _snapshot(database), _last_seq(database)
    slots = re.findall(SLOT, path)
    plain = _with_path_value(path, None, "")
    problems = []
    for value in NASTY:
        for name in GET_PARAMS[path]:
            if problem := _problem(client.get(plain, urlencode({name: value}), headers), path):
                problems.append(f"?{name}={value[:20]!r}: {problem}")
        for index, kind in enumerate(slots):
            if kind == "int" or not value.strip("/"):
                continue
            url = _with_path_value(path, index, value)
            if problem := _problem(client.get(url, "", headers), path):
                problems.append(f"path {value[:20]!r}: {problem}")
    assert problems == []
    assert _snapshot(database) == before
    assert _added_actions(database, last_seq) <= READ_ACTIONS


def test_the_audit_chain_still_verifies_after_the_reads(
        fuzzed: tuple[AsgiClient, dict[str, str]], database: Database) -> None:
    client, headers = fuzzed
    for path in ("/api/messages", "/api/studies", "/api/inference", "/api/audit"):
        name = "model" if path == "/api/inference" else "patient_id"
        for value in ("'; DROP TABLE audit_events; --", "\x00", "A" * HUGE, "PAT-0042"):
            assert client.get(path, urlencode({name: value}), headers).status < 500
    report = audit.verify(database)  # raises AuditChainBroken at the first bad row
    assert report.events > len(Role)  # the tokens made, and the reads since
