"""The audit ledger: a hash chain that exposes edits, deletions, reordering and cut tails."""

from __future__ import annotations

from datetime import timedelta

import pytest

from radbridge.engine import audit
from radbridge.engine.models import utcnow
from radbridge.errors import AuditChainBroken


def fill(database, count=6):
    audit.append_now(database, [
        audit.AuditRecord(action="message.received", channel="lab", message_id=i,
                          patient_id=f"P{i % 2}", accession=f"A{i}", detail={"n": i})
        for i in range(count)
    ])


def tamper(database, statement):
    with database.engine.begin() as connection:
        connection.exec_driver_sql(statement)


def test_an_untouched_chain_verifies(database):
    fill(database)
    audit.append_now(database, [audit.AuditRecord(action="message.viewed", actor="api:x")])
    report = audit.verify(database)
    assert report.events == 7 and report.head_seq == 7


@pytest.mark.parametrize("statement, broken_at", [
    ("UPDATE audit_events SET patient_id = 'P9' WHERE seq = 3", 3),
    ("UPDATE audit_events SET detail = '{\"n\":99}' WHERE seq = 2", 2),
    ("UPDATE audit_events SET outcome = 'failure' WHERE seq = 5", 5),
    ("DELETE FROM audit_events WHERE seq = 4", 5),
])
def test_an_edited_or_deleted_row_is_found(database, statement, broken_at):
    fill(database)
    tamper(database, statement)
    with pytest.raises(AuditChainBroken) as caught:
        audit.verify(database)
    assert caught.value.seq == broken_at


def test_a_cut_off_tail_is_found(database):
    fill(database)
    tamper(database, "DELETE FROM audit_events WHERE seq = 6")
    with pytest.raises(AuditChainBroken, match="head"):
        audit.verify(database)


def test_a_recomputed_forgery_still_breaks_the_link_to_the_next_row(database):
    fill(database)
    from radbridge.engine.audit import _HASHED_COLUMNS, _hashed_fields, event_hash
    from radbridge.engine.models import AuditEvent

    with database.read() as session:
        row = session.get(AuditEvent, 2)
        forged = {column: getattr(row, column) for column in _HASHED_COLUMNS}
    forged["patient_id"] = "P9"
    new_hash = event_hash(row.prev_hash, _hashed_fields(forged))
    tamper(database,
           f"UPDATE audit_events SET patient_id = 'P9', hash = '{new_hash}' WHERE seq = 2")
    with pytest.raises(AuditChainBroken) as caught:
        audit.verify(database)
    assert caught.value.seq == 3


def test_query_filters_and_paginates_newest_first(database):
    fill(database, count=10)
    with database.read() as session:
        first = audit.query(session, audit.AuditQuery(patient_id="P0", limit=3))
        rest = audit.query(session, audit.AuditQuery(patient_id="P0", limit=3,
                                                      before_seq=first[-1].seq))
        by_accession = audit.query(session, audit.AuditQuery(accession="A7"))
        none_yet = audit.query(session, audit.AuditQuery(since=utcnow() + timedelta(hours=1)))
    assert [e.message_id for e in first] == [8, 6, 4]
    assert [e.message_id for e in rest] == [2, 0]
    assert [e.message_id for e in by_accession] == [7]
    assert none_yet == []


def test_events_commit_or_roll_back_with_their_transaction(database):
    with pytest.raises(RuntimeError), database.write() as session:
        audit.append(session, [audit.AuditRecord(action="message.received")])
        raise RuntimeError("the state change failed")
    assert audit.verify(database).events == 0


def test_each_writer_has_its_own_chain_and_all_are_verified(database):
    audit.append_now(database, [audit.AuditRecord(action="message.received")], chain="n1/receiver")
    audit.append_now(database, [audit.AuditRecord(action="delivery.sent")], chain="n1/outbox")
    audit.append_now(database, [audit.AuditRecord(action="message.received")], chain="n1/receiver")
    report = audit.verify(database)
    assert (report.events, report.chains) == (3, 2)
    with database.read() as session:
        chains = [e["chain"] for e in map(audit.event_as_dict,
                                          audit.query(session, audit.AuditQuery()))]
    assert chains == ["n1/receiver", "n1/outbox", "n1/receiver"]


def test_a_chain_whose_head_row_was_deleted_is_found(database):
    audit.append_now(database, [audit.AuditRecord(action="a")], chain="n1/receiver")
    audit.append_now(database, [audit.AuditRecord(action="b")], chain="n1/outbox")
    tamper(database, "DELETE FROM audit_head WHERE chain = 'n1/outbox'")
    with pytest.raises(AuditChainBroken, match="no head row"):
        audit.verify(database)


def test_cutting_one_chains_tail_is_found_while_others_are_intact(database):
    for _ in range(3):
        audit.append_now(database, [audit.AuditRecord(action="a")], chain="n1/receiver")
    audit.append_now(database, [audit.AuditRecord(action="b")], chain="n1/outbox")
    tamper(database, "DELETE FROM audit_events WHERE seq = 3")
    with pytest.raises(AuditChainBroken, match="n1/receiver"):
        audit.verify(database)
