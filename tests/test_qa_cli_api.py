"""`radbridge qa agreement|drift|monitor` and GET /api/qa/agreement|drift, on SQLite and
PostgreSQL: the same documents as the queries give, and bad parameters refused by name."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from starlette.testclient import TestClient

from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.engine.models import Message
from radbridge.engine.qa import monitor, queries
from radbridge.engine.qa.queries import DriftOptions
from radbridge.interfaces.api import ApiContext, create_app
from radbridge.interfaces.cli import main
from tests.test_qa_queries import (
    FEBRUARY,
    IN_WINDOW,
    JANUARY,
    MARCH,
    MODEL,
    VERSION,
    _table,
    add_rows,
    drift_rows,
)

Cli = Callable[..., tuple[int, str, str]]
WINDOWS = ("--baseline", "2026-01-01..2026-01-31", "--current", "2026-03-01..2026-03-31")


@pytest.fixture
def store(database: Database) -> Database:
    add_rows(database, _table(IN_WINDOW, "Scanner-A", 3, 1, 4, 2)
             + _table(IN_WINDOW, "Scanner-B", 1, 0, 2, 0))
    add_rows(database, drift_rows(JANUARY, MARCH))
    return database


@pytest.fixture
def cli(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Runs `radbridge qa ...` on the test store; returns (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["qa", *argv, "--database-url", database_url,
                     "--data-dir", str(tmp_path / "data")])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def client(database: Database, tmp_path: Path) -> Iterator[TestClient]:
    context = ApiContext(database=database, blobs=BlobStore(tmp_path / "blobs"), channels={},
                         node_id="node-1", inline_limit=64, registry=CollectorRegistry(),
                         store_metrics=False)
    with TestClient(create_app(context)) as test_client:
        yield test_client


def _agreement(database: Database) -> dict[str, Any]:
    with database.read() as session:
        return queries.agreement(session, MODEL, VERSION, FEBRUARY, "model",
                                 min_group=5).as_json()


def _drift(database: Database, *, scanners: bool) -> dict[str, Any]:
    with database.read() as session:
        reports = queries.drift(session, MODEL, None, JANUARY, MARCH, DriftOptions(bins=8))
    return {"reports": [r.as_json(scanners=scanners) for r in reports]}


def _plain(document: dict[str, Any]) -> Any:
    return json.loads(json.dumps(document))


# --- CLI -------------------------------------------------------------------------------


def test_cli_agreement_json_is_the_query_result(store: Database, cli: Cli) -> None:
    code, out, _ = cli("agreement", "--model", MODEL, "--version", VERSION, "--since",
                       "2026-02-01", "--until", "2026-02-28", "--by", "model",
                       "--min-group", "5", "--json")
    assert code == 0 and json.loads(out) == _plain(_agreement(store))
    rows = json.loads(out)["rows"]
    assert [(r["group"], r["paired"], r["small"]) for r in rows] == [
        ("Scanner-A", 10, False), ("Scanner-B", 3, True)]


def test_cli_agreement_table_marks_small_groups(store: Database, cli: Cli) -> None:
    code, out, _ = cli("agreement", "--model", MODEL, "--since", "2026-02-01", "--until",
                       "2026-02-28", "--by", "model", "--min-group", "5")
    assert code == 0
    assert "Scanner-A" in out and "Scanner-B" in out and "3*" in out and "10*" not in out


def test_cli_drift_json_is_the_query_result(store: Database, cli: Cli) -> None:
    code, out, _ = cli("drift", "--model", MODEL, *WINDOWS, "--bins", "8", "--by-scanner",
                       "--json")
    assert code == 0 and json.loads(out) == _plain(_drift(store, scanners=True))
    code, out, _ = cli("drift", "--model", MODEL, *WINDOWS, "--bins", "8", "--json")
    assert json.loads(out) == _plain(_drift(store, scanners=False))
    code, out, _ = cli("drift", "--model", MODEL, *WINDOWS, "--by-scanner")
    assert code == 0 and "Shift-2" in out and "ALERT" in out


def test_cli_monitor_stores_each_alert_once(store: Database, cli: Cli) -> None:
    windows = monitor.MonitorSettings(period_days=30, baseline_days=60).windows(
        datetime.now(UTC).date())
    add_rows(store, drift_rows(*windows, model="watched"))
    options = ("--period-days", "30", "--baseline-days", "60", "--min-group", "30")
    passes = []
    for _ in range(2):
        code, out, _ = cli("monitor", "--alert-channel", "qa-alerts", *options, "--json")
        assert code == 0
        passes.append(json.loads(out))
    assert passes[1]["checked"] == [{"model": MODEL, "version": VERSION},
                                    {"model": "watched", "version": VERSION}]
    measures = {(a["model"], a["measure"]) for a in passes[0]["alerts"] if a["new"]}
    assert measures == {("watched", "input:slice_thickness"), ("watched", "input:kernel"),
                        ("watched", "scanner:Shift-2")}
    assert [a["new"] for a in passes[1]["alerts"]] == [False] * 3
    with store.read() as session:
        stored = session.execute(select(func.count()).select_from(Message)
                                 .where(Message.channel == "qa-alerts")).scalar_one()
    assert stored == 3
    code, out, _ = cli("monitor", *options)
    assert code == 0 and "3 drift alerts (0 new)" in out


@pytest.mark.parametrize("argv", [
    ("agreement", "--since", "2026-02-30"),
    ("drift", "--version", "1.0"),
])
def test_cli_usage_errors_exit_2(store: Database, cli: Cli, argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli(*argv)
    assert stopped.value.code == 2


@pytest.mark.parametrize(("argv", "named"), [
    (("agreement", "--window", "90"), "--window"),
    (("agreement", "--window", "90d", "--since", "2026-01-01"), "--window"),
    (("agreement", "--since", "2026-03-01", "--until", "2026-02-01"), "since"),
    (("agreement", "--version", "1.0"), "--version"),
    (("agreement", "--confidence", "1.5"), "confidence"),
    (("agreement", "--by", "scanner"), "by"),  # neither a dimension nor a DICOM keyword
    (("drift", "--model", MODEL, "--baseline", "2026-02-01..2026-01-01"), "--baseline"),
    (("drift", "--model", MODEL, "--current", "March"), "--current"),
    (("drift", "--model", MODEL, "--bins", "1"), "bins"),
    (("monitor", "--psi-alert", "0.05"), "psi_warn"),
    (("monitor", "--period-days", "0"), "period_days"),
])
def test_cli_bad_values_exit_2_naming_the_option(store: Database, cli: Cli,
                                                  argv: tuple[str, ...], named: str) -> None:
    code, _, err = cli(*argv)
    assert code == 2 and named in err


def test_cli_drift_of_an_unknown_model_exits_1(store: Database, cli: Cli) -> None:
    code, _, err = cli("drift", "--model", "nope", *WINDOWS)
    assert code == 1 and "no observations" in err


# --- API -------------------------------------------------------------------------------


def test_api_agreement_is_the_query_result(store: Database, client: TestClient) -> None:
    answer = client.get("/api/qa/agreement", params={
        "model": MODEL, "version": VERSION, "since": "2026-02-01", "until": "2026-02-28",
        "by": "model", "min_group": "5"})
    assert answer.status_code == 200
    assert answer.json() == _plain(_agreement(store))


def test_api_drift_is_the_query_result(store: Database, client: TestClient) -> None:
    params = {"model": MODEL, "baseline": "2026-01-01..2026-01-31",
              "current": "2026-03-01..2026-03-31", "bins": "8"}
    answer = client.get("/api/qa/drift", params={**params, "by_scanner": "true"})
    assert answer.status_code == 200
    assert answer.json() == _plain(_drift(store, scanners=True))
    assert client.get("/api/qa/drift", params=params).json() == _plain(
        _drift(store, scanners=False))


@pytest.mark.parametrize(("path", "params", "named"), [
    ("agreement", {"by": "scanner"}, "by"),
    ("agreement", {"window": "90"}, "window"),
    ("agreement", {"window": "90d", "since": "2026-01-01"}, "window"),
    ("agreement", {"since": "2026-02-30"}, "since"),
    ("agreement", {"min_group": "-1"}, "min_group"),
    ("agreement", {"confidence": "2"}, "confidence"),
    ("agreement", {"modle": MODEL}, "modle"),
    ("drift", {}, "model"),
    ("drift", {"model": MODEL, "baseline": "2026-02-01..2026-01-01"}, "baseline"),
    ("drift", {"model": MODEL, "bins": "x"}, "bins"),
    ("drift", {"model": MODEL, "by_scanner": "maybe"}, "by_scanner"),
])
def test_api_bad_parameters_answer_400(store: Database, client: TestClient, path: str,
                                       params: dict[str, str], named: str) -> None:
    answer = client.get(f"/api/qa/{path}", params=params)
    assert answer.status_code == 400 and named in answer.json()["error"]
