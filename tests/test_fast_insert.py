"""The SQLite fast path stores values exactly as SQLAlchemy would, and fails the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from radbridge.engine.db import Database, insert_many
from radbridge.engine.fast_insert import insert_rows, update_rows
from radbridge.engine.models import MESSAGES, STAGES, Message, MessageStage


def message_row(uid: str, at: datetime, **extra: object) -> dict[str, object]:
    return {"uid": uid, "channel": "c", "status": "received", "generation": 0,
            "received_at": at, "updated_at": at, "source": "s", "content_type": "text/plain",
            "dedup_key": extra.get("dedup_key"), "patient_id": "P1", "accession": None,
            "study_uid": None, "metadata": {"hl7.type": "ADT^A01", "n": "ü"}, "attempts": 0}


def test_rows_read_back_through_the_models(database: Database) -> None:
    at = datetime(2026, 11, 25, 9, 30, 0, 0, tzinfo=timezone(timedelta(hours=-5)))
    with database.write() as session:
        connection = session.connection()
        ids = insert_many(connection, MESSAGES, [message_row("u1", at), message_row("u2", at)])
        insert_rows(connection, STAGES, [{
            "message_id": ids[0], "generation": 0, "stage": "received", "at": at,
            "destination": None, "detail": None, "content_type": "text/plain",
            "content": b"\x00\xffbytes", "content_sha256": None, "content_size": 7,
            "in_blob": False}])
    with database.read() as session:
        messages = session.execute(select(Message).order_by(Message.id)).scalars().all()
        stage = session.execute(select(MessageStage)).scalar_one()
    assert [m.id for m in messages] == ids and ids[1] == ids[0] + 1
    assert messages[0].received_at == at and messages[0].received_at.tzinfo is not None
    assert messages[0].received_at.astimezone(UTC).hour == 14
    assert messages[0].meta == {"hl7.type": "ADT^A01", "n": "ü"}
    assert stage.content == b"\x00\xffbytes" and stage.in_blob is False


def test_updates_change_only_the_keyed_rows_and_read_back_through_the_models(
        database: Database) -> None:
    at = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    later = at.astimezone(timezone(timedelta(hours=2))) + timedelta(minutes=5)
    with database.write() as session:
        ids = insert_many(session.connection(), MESSAGES,
                          [message_row(f"u{n}", at) for n in range(3)])
    with database.write() as session:
        update_rows(session.connection(), MESSAGES, "id", [
            {"id": ids[0], "status": "routed", "updated_at": later, "error": None,
             "metadata": {"k": "ö", "n": 1}},
            {"id": ids[2], "status": "errored", "updated_at": later, "error": "bad",
             "metadata": {}},
        ])
    with database.read() as session:
        rows = session.execute(select(Message).order_by(Message.id)).scalars().all()
    assert [(m.status, m.error, m.meta) for m in rows] == [
        ("routed", None, {"k": "ö", "n": 1}),
        ("received", None, {"hl7.type": "ADT^A01", "n": "ü"}),
        ("errored", "bad", {}),
    ]
    assert rows[0].updated_at == later and rows[1].updated_at == at


def test_a_constraint_violation_is_sqlalchemys_integrity_error(database: Database) -> None:
    at = datetime.now(UTC)
    with pytest.raises(IntegrityError), database.write() as session:
        insert_many(session.connection(), MESSAGES,
                    [message_row("same", at), message_row("same", at)])
    with database.read() as session:
        assert session.execute(select(Message)).first() is None


def test_naive_times_are_refused(database: Database) -> None:
    with pytest.raises(Exception, match="naive"), database.write() as session:
        insert_many(session.connection(), MESSAGES, [message_row("n", datetime.now())])
