"""Reprocess and dead-letter retry on both engines, with their audit events."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from radbridge.engine import audit, replay
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus, MessageStatus
from radbridge.engine.models import AuditEvent, Delivery, Message, utcnow
from radbridge.errors import NotFound
from tests.store_rows import add_delivery, add_message


def _events(database: Database, action: str) -> list[AuditEvent]:
    with database.read() as session:
        return audit.query(session, audit.AuditQuery(action=action, limit=1000))


def test_reprocess_starts_a_new_generation(database: Database) -> None:
    with database.write() as session:
        message = add_message(session, status=MessageStatus.ERRORED, generation=2,
                              error="transformer failed", study_uid="1.2.3")
        message.attempts = 3
        other = add_message(session, status=MessageStatus.FILTERED)
    assert replay.reprocess(database, [message.id, other.id, message.id],
                            actor="cli:alice") == [message.id, other.id]
    with database.read() as session:
        again = session.get(Message, message.id)
        assert again is not None
        assert (again.status, again.generation, again.attempts) == ("received", 3, 0)
        assert again.error is None
    events = _events(database, "message.reprocessed")
    assert [event.message_id for event in events] == [other.id, message.id]
    first = events[1]
    assert (first.actor, first.channel, first.patient_id, first.accession, first.study_uid) == (
        "cli:alice", "orders", "P1", "A1", "1.2.3")
    assert json.loads(first.detail) == {
        "previous_status": "errored", "previous_generation": 2, "generation": 3}
    assert audit.verify(database).events == 2


def test_reprocess_unknown_id_changes_nothing(database: Database) -> None:
    with database.write() as session:
        message = add_message(session, status=MessageStatus.ERRORED)
    with pytest.raises(NotFound, match="999"):
        replay.reprocess(database, [message.id, 999], actor="cli:alice")
    with database.read() as session:
        again = session.get(Message, message.id)
        assert again is not None and (again.status, again.generation) == ("errored", 0)
    assert _events(database, "message.reprocessed") == []
    assert replay.reprocess(database, [], actor="cli:alice") == []


def _dead_fixture(database: Database) -> dict[str, int]:
    """Dead deliveries across channels and destinations, plus ones not to touch."""
    with database.write() as session:
        a = add_message(session, channel="orders")
        b = add_message(session, channel="orders")
        c = add_message(session, channel="adt")
        old = add_message(session, channel="orders", generation=1)
        ids = {
            "a-ris": add_delivery(session, a, "ris", DeliveryStatus.DEAD, attempts=10,
                                  last_error="refused").id,
            "a-ehr": add_delivery(session, a, "ehr", DeliveryStatus.DEAD, attempts=10).id,
            "b-ris": add_delivery(session, b, "ris", DeliveryStatus.DEAD, attempts=10).id,
            "b-ehr": add_delivery(session, b, "ehr", DeliveryStatus.SENT, attempts=1).id,
            "c-ris": add_delivery(session, c, "ris", DeliveryStatus.DEAD, attempts=4).id,
            "old-gen": add_delivery(session, old, "ris", DeliveryStatus.DEAD, generation=0).id,
        }
    return ids


def _statuses(database: Database) -> dict[int, tuple[str, int]]:
    with database.read() as session:
        rows = session.execute(select(Delivery.id, Delivery.status, Delivery.attempts)).all()
    return {row[0]: (row[1], row[2]) for row in rows}


def test_retry_dead_by_channel_and_destination(database: Database) -> None:
    ids = _dead_fixture(database)
    before = utcnow()
    assert replay.retry_dead(database, channel="orders", destination="ris", actor="api:h") == 2
    statuses = _statuses(database)
    assert statuses[ids["a-ris"]] == ("pending", 0)
    assert statuses[ids["b-ris"]] == ("pending", 0)
    assert statuses[ids["a-ehr"]] == ("dead", 10)
    assert statuses[ids["b-ehr"]] == ("sent", 1)
    assert statuses[ids["c-ris"]] == ("dead", 4)
    assert statuses[ids["old-gen"]][0] == "dead"  # superseded by a reprocess
    with database.read() as session:
        retried = session.get(Delivery, ids["a-ris"])
        assert retried is not None and retried.next_attempt_at >= before
        assert retried.last_error == "refused"
    events = _events(database, "delivery.retried")
    assert sorted(json.loads(e.detail)["delivery_id"] for e in events) == sorted(
        [ids["a-ris"], ids["b-ris"]])
    assert {(e.actor, e.channel, e.patient_id) for e in events} == {("api:h", "orders", "P1")}


def test_retry_dead_by_message_then_all(database: Database) -> None:
    ids = _dead_fixture(database)
    with database.read() as session:
        message_id = session.get(Delivery, ids["c-ris"]).message_id  # type: ignore[union-attr]
    assert replay.retry_dead(database, message_id=message_id, actor="cli:bob") == 1
    assert _statuses(database)[ids["c-ris"]] == ("pending", 0)
    assert replay.retry_dead(database, all=True, actor="cli:bob") == 3
    assert replay.retry_dead(database, all=True, actor="cli:bob") == 0
    assert len(_events(database, "delivery.retried")) == 4
    assert audit.verify(database).events == 4


def test_retry_dead_needs_a_filter(database: Database) -> None:
    with pytest.raises(ValueError, match="all=True"):
        replay.retry_dead(database, actor="cli:bob")


def test_retry_dead_in_batches(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "RETRY_BATCH", 2)
    with database.write() as session:
        for _ in range(5):
            add_delivery(session, add_message(session), "ris", DeliveryStatus.DEAD)
    assert replay.retry_dead(database, channel="orders", actor="cli:bob") == 5
    with database.read() as session:
        dead = session.scalar(select(func.count()).where(Delivery.status == "dead"))
    assert dead == 0
    assert len(_events(database, "delivery.retried")) == 5
