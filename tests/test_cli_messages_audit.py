"""`radbridge messages ...` and `radbridge audit ...`, run in-process on both engines."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from radbridge.engine import audit
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus, MessageStatus
from radbridge.engine.models import Delivery, Message
from radbridge.interfaces import cli
from radbridge.interfaces.cli import audit_cmd, messages_cmd
from tests.store_rows import add_delivery, add_message

Run = Callable[..., tuple[int, str, str]]


def _parser() -> argparse.ArgumentParser:
    """The real `radbridge` parser, or one with just these subcommands while others are
    still missing."""
    try:
        return cli.build_parser()
    except ImportError:
        pass
    parser = argparse.ArgumentParser(prog="radbridge")
    sub = parser.add_subparsers(dest="command", required=True)
    messages_cmd.register(sub)
    audit_cmd.register(sub)
    return parser


@pytest.fixture
def run(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run `radbridge ARGS... --database-url URL`; returns (exit code, stdout, stderr)."""

    def _run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        args = _parser().parse_args(
            [*argv, "--database-url", database_url, "--data-dir", str(tmp_path / "data")]
        )
        code = args.handler(args)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def _json(run: Run, *argv: str) -> Any:
    code, out, _ = run(*argv, "--json")
    assert code == 0
    return json.loads(out)


def test_messages_list_pages_and_filters(run: Run, database: Database) -> None:
    with database.write() as session:
        ids = [add_message(session).id for _ in range(3)]
        errored = add_message(session, channel="adt", status=MessageStatus.ERRORED,
                              error="[red] not markup").id
    page = _json(run, "messages", "list", "--limit", "2")
    assert [row["id"] for row in page["messages"]] == [errored, ids[2]]
    rest = _json(run, "messages", "list", "--limit", "2", "--before-id",
                 str(page["next_before_id"]))
    assert [row["id"] for row in rest["messages"]] == [ids[1], ids[0]]
    only = _json(run, "messages", "list", "--channel", "adt", "--status", "errored")
    assert [row["id"] for row in only["messages"]] == [errored]
    code, out, _ = run("messages", "list")
    assert code == 0 and "4 messages" in out and "errored" in out and "[red]" in out


def test_messages_show(run: Run, database: Database) -> None:
    with database.write() as session:
        message = add_message(session, content=b"MSH|hello")
        add_delivery(session, message, "ris", DeliveryStatus.DEAD, last_error="refused")
    detail = _json(run, "messages", "show", str(message.id), "--content")
    assert detail["stages"][0]["content"] == "MSH|hello"
    assert detail["deliveries"][0]["last_error"] == "refused"
    code, out, _ = run("messages", "show", str(message.id), "--content")
    assert code == 0 and "MSH|hello" in out and "refused" in out
    code, _, err = run("messages", "show", "999")
    assert code == 1 and "no message 999" in err


def test_messages_reprocess_is_audited(run: Run, database: Database) -> None:
    with database.write() as session:
        first = add_message(session, status=MessageStatus.ERRORED).id
        second = add_message(session, status=MessageStatus.FILTERED).id
    assert _json(run, "messages", "reprocess", str(first), str(second)) == {
        "reprocessed": [first, second]}
    with database.read() as session:
        statuses = {m.id: (m.status, m.generation) for m in session.query(Message)}
    assert statuses == {first: ("received", 1), second: ("received", 1)}
    with database.read() as session:
        events = audit.query(session, audit.AuditQuery(action="message.reprocessed"))
    assert {event.actor for event in events} == {messages_cmd.cli_actor()}
    assert messages_cmd.cli_actor().startswith("cli:")
    code, _, err = run("messages", "reprocess", str(first), "999")
    assert code == 1 and "999" in err
    with database.read() as session:
        assert session.get(Message, first).generation == 1  # type: ignore[union-attr]


def test_messages_retry(run: Run, database: Database) -> None:
    with database.write() as session:
        message = add_message(session)
        ris = add_delivery(session, message, "ris", DeliveryStatus.DEAD).id
        ehr = add_delivery(session, message, "ehr", DeliveryStatus.DEAD).id
        other = add_delivery(session, add_message(session, channel="adt"), "ris",
                             DeliveryStatus.DEAD).id
    assert _json(run, "messages", "retry", "--channel", "orders", "--destination", "ris") == {
        "retried": 1}
    code, out, _ = run("messages", "retry", "--message", str(message.id))
    assert code == 0 and out.startswith("1 dead delivery back to pending")
    assert _json(run, "messages", "retry", "--all") == {"retried": 1}
    with database.read() as session:
        statuses = session.scalars(
            select(Delivery.status).where(Delivery.id.in_([ris, ehr, other]))
        ).all()
    assert statuses == ["pending"] * 3
    code, _, err = run("messages", "retry", "--destination", "ris", "--all")
    assert code == 2 and "--destination needs --channel" in err
    with pytest.raises(SystemExit) as exited:
        run("messages", "retry")
    assert exited.value.code == 2


def test_audit_verify_and_tamper(run: Run, database: Database) -> None:
    audit.append_now(database, [audit.AuditRecord(action="message.received", patient_id="P1"),
                                audit.AuditRecord(action="message.viewed", patient_id="P2")])
    code, out, _ = run("audit", "verify")
    assert code == 0 and "2 events" in out
    assert _json(run, "audit", "verify")["head_seq"] == 2
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1"))
    code, out, _ = run("audit", "verify")
    assert code == 1 and "BROKEN" in out and "event 1" in out


def test_audit_query(run: Run, database: Database) -> None:
    audit.append_now(database, [
        audit.AuditRecord(action="message.received", patient_id="P1", channel="orders"),
        audit.AuditRecord(action="message.received", patient_id="P2", channel="orders"),
        audit.AuditRecord(action="message.viewed", patient_id="P1", actor="api:1.2.3.4"),
    ])
    code, out, _ = run("audit", "query", "--patient-id", "P1")
    result = json.loads(out)
    assert code == 0 and [e["seq"] for e in result["events"]] == [3, 1]
    code, out, _ = run("audit", "query", "--actor", "api:1.2.3.4", "--limit", "1")
    page = json.loads(out)
    assert [e["action"] for e in page["events"]] == ["message.viewed"]
    assert page["next_before_seq"] == 3
    code, out, _ = run("audit", "query", "--channel", "orders", "--before-seq", "2")
    assert [e["patient_id"] for e in json.loads(out)["events"]] == ["P1"]
    code, out, _ = run("audit", "query", "--since", "2999-01-01")
    assert json.loads(out)["events"] == []
    with pytest.raises(SystemExit):
        run("audit", "query", "--since", "last week")
