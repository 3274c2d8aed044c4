"""The console's server side: its static files under /console/ (public, only what the
package ships, with CSP and ETags) and the message search by patient id and accession it
relies on (GET /api/messages, engine/queries.py), on both engines, on their indexes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event, text
from starlette.testclient import TestClient

from radbridge.engine import audit, queries
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.interfaces import api_console
from radbridge.interfaces.api import ApiContext, create_app
from radbridge.interfaces.auth import policy
from tests.store_rows import add_message


@pytest.fixture
def client(database: Database, tmp_path: Path) -> Iterator[TestClient]:
    context = ApiContext(database=database, blobs=BlobStore(tmp_path / "blobs"), channels={},
                         node_id="node-1", inline_limit=64, registry=CollectorRegistry(),
                         store_metrics=False)
    with TestClient(create_app(context), client=("10.0.0.9", 40000)) as test_client:
        yield test_client


# --- the static files ----------------------------------------------------------------------


def test_index_is_served_with_its_security_headers(client: TestClient) -> None:
    answer = client.get("/console/")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="app.js"></script>' in answer.text
    policy_header = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy_header and "connect-src 'self'" in policy_header
    assert "default-src 'none'" in policy_header
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-cache"


def test_console_without_slash_redirects(client: TestClient) -> None:
    answer = client.get("/console", follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (308, "/console/")


@pytest.mark.parametrize("path, media_type", [
    ("app.js", "text/javascript; charset=utf-8"),
    ("views/messages.js", "text/javascript; charset=utf-8"),
    ("console.css", "text/css; charset=utf-8"),
])
def test_files_have_their_media_types(client: TestClient, path: str, media_type: str) -> None:
    answer = client.get(f"/console/{path}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == media_type
    assert answer.content == api_console.assets()[path].body


def test_a_matching_etag_answers_304_without_a_body(client: TestClient) -> None:
    first = client.get("/console/app.js")
    again = client.get("/console/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == first.headers["etag"]
    changed = client.get("/console/app.js", headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200


@pytest.mark.parametrize("path", [
    "nope.js",
    "__init__.py",            # in the package, not in static/
    "%2e%2e/api_console.py",  # decoded to ../api_console.py: not a key of the table
    "..%2f..%2fapi.py",
    "views",                  # a folder
])
def test_only_the_console_files_are_served(client: TestClient, path: str) -> None:
    answer = client.get(f"/console/{path}")
    assert answer.status_code == 404
    assert answer.json()["error"].startswith("the console has no file")


def test_head_answers_like_get_without_a_body(client: TestClient) -> None:
    answer = client.head("/console/console.css")
    assert answer.status_code == 200 and answer.content == b""
    assert answer.headers["content-type"] == "text/css; charset=utf-8"


IMPORT = re.compile(r"""(?:import|from)\s+[^'"]*?["'](\.{1,2}/[^"']+)["']""")
REFERENCE = re.compile(r"""(?:src|href)="([^"#:]+)\"""")


def test_every_file_the_console_loads_is_shipped() -> None:
    """Each relative import of each module, and each file index.html names, is an asset:
    a file missing from package-data would break the page only once installed."""
    assets = api_console.assets()
    wanted: set[str] = set(REFERENCE.findall(assets["index.html"].body.decode()))
    for name, asset in assets.items():
        if name.endswith(".js"):
            folder = Path(name).parent
            for relative in IMPORT.findall(asset.body.decode()):
                wanted.add(str((Path("/") / folder / relative).resolve()).lstrip("/"))
    assert wanted and wanted <= set(assets), sorted(wanted - set(assets))
    assert {"app.js", "console.css", "views/channels.js", "charts.js"} <= wanted


def test_the_console_files_are_public_in_the_access_policy() -> None:
    for path in ("/console", "/console/", "/console/app.js", "/console/views/audit.js"):
        assert policy.access_for("GET", path).public
        assert policy.access_for("HEAD", path).public
    assert not policy.access_for("POST", "/console/app.js").public


def test_the_static_files_hold_no_inline_script_or_style() -> None:
    """The CSP forbids inline code, so none may be there to break."""
    index = api_console.assets()["index.html"].body.decode()
    assert re.search(r"<script(?![^>]*\bsrc=)", index) is None
    assert " style=" not in index and "<style" not in index
    assert not re.search(r"\bon[a-z]+=", index)


# --- messages by patient id and accession -----------------------------------------------------


def _store(database: Database) -> dict[str, int]:
    """Five messages: P1/A1 on orders, P2/A2 on orders, P1/A3 on adt, P2/A2 on adt, P1/A1."""
    rows = [("orders", "P1", "A1"), ("orders", "P2", "A2"), ("adt", "P1", "A3"),
            ("adt", "P2", "A2"), ("orders", "P1", "A1")]
    ids = {}
    with database.write() as session:
        for index, (channel, patient, accession) in enumerate(rows, start=1):
            ids[f"m{index}"] = add_message(session, channel=channel, patient_id=patient,
                                           accession=accession).id
    return ids


def _ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


def test_list_messages_by_patient_and_accession(database: Database) -> None:
    m = _store(database)
    with database.read() as session:
        assert _ids(queries.list_messages(session, patient_id="P1")) == [m["m5"], m["m3"], m["m1"]]
        assert _ids(queries.list_messages(session, accession="A2")) == [m["m4"], m["m2"]]
        assert _ids(queries.list_messages(session, patient_id="P1", accession="A1")) == [
            m["m5"], m["m1"]]
        assert _ids(queries.list_messages(session, patient_id="P2", channel="adt")) == [m["m4"]]
        assert _ids(queries.list_messages(session, patient_id="P1", limit=2)) == [
            m["m5"], m["m3"]]
        assert _ids(queries.list_messages(session, patient_id="P1", before_id=m["m3"])) == [
            m["m1"]]
        assert queries.list_messages(session, patient_id="nobody") == []
        assert queries.list_messages(session, accession="A1' OR '1'='1") == []


def test_api_searches_messages_by_patient_and_accession(client: TestClient,
                                                        database: Database) -> None:
    m = _store(database)
    answer = client.get("/api/messages", params={"patient_id": "P2", "limit": 1})
    assert answer.status_code == 200
    body = answer.json()
    assert (_ids(body["messages"]), body["next_before_id"]) == ([m["m4"]], m["m4"])
    again = client.get("/api/messages", params={"patient_id": "P2",
                                                "before_id": body["next_before_id"]})
    assert _ids(again.json()["messages"]) == [m["m2"]]
    by_accession = client.get("/api/messages", params={"accession": "A3"}).json()
    assert _ids(by_accession["messages"]) == [m["m3"]]
    with database.read() as session:
        events = audit.query(session, audit.AuditQuery(action="message.listed"))
    # the newest first: the accession search, then the two patient pages
    assert [(e.patient_id, e.accession) for e in events] == [
        (None, "A3"), ("P2", None), ("P2", None)]


@pytest.mark.parametrize("name", ["patient_id", "accession"])
def test_api_refuses_identifiers_longer_than_their_column(client: TestClient,
                                                          name: str) -> None:
    answer = client.get("/api/messages", params={name: "X" * 65})
    assert answer.status_code == 400
    assert answer.json()["error"] == (f"query parameter {name!r}: expected at most 64 "
                                      "characters")
    assert client.get("/api/messages", params={name: "X" * 64}).status_code == 200


def _captured_list_query(database: Database, **filters: str) -> tuple[str, Any]:
    """The SQL (and parameters) `list_messages` sends for these filters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "FROM messages" in statement and "deliveries" not in statement:
            seen.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        with database.read() as session:
            queries.list_messages(session, **filters)  # type: ignore[arg-type]
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
    [found] = seen
    return found


@pytest.mark.parametrize("column", ["patient_id", "accession"])
def test_the_search_uses_the_column_index(database: Database, column: str) -> None:
    _store(database)
    statement, parameters = _captured_list_query(database, **{column: "P1" if column ==
                                                               "patient_id" else "A1"})
    with database.engine.connect() as connection:
        if database.is_postgres:
            # A five-row table is read whole by choice; forbid that to see the index is usable.
            connection.execute(text("SET enable_seqscan = off"))
            plan = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()
        else:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}",
                                              parameters).all()
    described = " | ".join(str(row[-1]) for row in plan)
    assert f"ix_messages_{column}" in described, described
