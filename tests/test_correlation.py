"""Correlation in the store: studies linked to orders whichever arrives first, the
reconciliation queue, and decisions by hand, each an audit event (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from radbridge.engine import audit
from radbridge.engine.correlation.service import (
    CorrelationError,
    Settings,
    correlate_study,
    link_by_hand,
    reject_by_hand,
    retry_for_orders,
)
from radbridge.engine.models import Order, ReconciliationItem, StudyOrderLink
from radbridge.engine.receiver import Inbound
from radbridge.engine.registry.apply import apply_event
from radbridge.engine.registry.changes import MessageRef
from radbridge.mappings.correlation import Outcome
from radbridge.mappings.dicom.records import CONTENT_TYPE, InstanceRecord
from radbridge.mappings.hl7.inbound import parse_message
from radbridge.mappings.hl7.reading import decode
from tests.engine_harness import Harness, channel, harness

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "hl7"
CHAIN = "test/correlation"
ORDERED_STUDY = "1.2.826.0.1.3680043.10.1234.26120001"  # ZDS-1 of orm_o01_nw.hl7


def _index(h: Harness, study_uid: str, *, accession: str | None = "ACC26120001",
           patient_id: str | None = "MRN100999", sop: str = "1") -> None:
    record = InstanceRecord(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=f"{study_uid}.9.{sop}",
        study_uid=study_uid, series_uid=f"{study_uid}.9", transfer_syntax_uid="1.2.840.10008.1.2.1",
        patient_id=patient_id, issuer_of_patient_id="NORTHWIND" if patient_id else None,
        accession=accession, modality="CT", study_date="20261201")
    ref = h.blobs.put_bytes(f"{study_uid}/{sop}".encode())
    h.receiver.receive_sync(Inbound(channel="dicom-in", content_type=CONTENT_TYPE,
                                    source="test", blob=ref, dedup_key=f"{sop}/{ref.sha256}",
                                    study_uid=study_uid, dicom=record))


def _order(h: Harness, sample: str = "orm_o01_nw", **replace: str) -> tuple[int, ...]:
    text = decode((SAMPLES / f"{sample}.hl7").read_bytes())
    for old, new in replace.items():
        text = text.replace(old, new)
    event = parse_message(text)
    with h.database.write() as session:
        result = apply_event(session, event, MessageRef(uid=f"m-{hash(text)}", message_id=1,
                                                        channel="hl7-in", default_issuer=""),
                             CHAIN)
        retry_for_orders(session, result.orders, actor="channel:hl7-in", chain=CHAIN)
    return result.orders


def _correlate(h: Harness, study_uid: str):
    with h.database.write() as session:
        return correlate_study(session, study_uid, Settings(), actor="test", chain=CHAIN)


def _links(h: Harness) -> list[tuple[str, int, str, float]]:
    with h.database.read() as session:
        return [(link.study_uid, link.order_id, link.rule, link.confidence) for link in
                session.execute(select(StudyOrderLink).order_by(StudyOrderLink.id)).scalars()]


def _items(h: Harness) -> list[ReconciliationItem]:
    with h.database.read() as session:
        return list(session.execute(select(ReconciliationItem)
                                    .order_by(ReconciliationItem.id)).scalars())


def _actions(h: Harness) -> list[str]:
    with h.database.read() as session:
        return [e.action for e in audit.query(session, audit.AuditQuery(limit=500))
                if e.action.startswith("correlation.")][::-1]


@pytest.fixture
def h(database, tmp_path):
    with harness(database, tmp_path, [channel("dicom-in")]) as made:
        yield made


def test_order_first_then_study_links_by_the_study_uid_the_order_assigned(h):
    first, _second = _order(h)
    _index(h, ORDERED_STUDY)
    decision = _correlate(h, ORDERED_STUDY)
    assert decision.outcome is Outcome.LINKED
    assert _links(h) == [(ORDERED_STUDY, first, "study_uid", 1.0)]
    assert _items(h) == [] and _actions(h) == ["correlation.linked"]


def test_study_first_is_queued_then_linked_when_its_order_arrives(h):
    _index(h, "1.2.3.4")  # the modality made its own Study UID; accession ACC26120001
    assert _correlate(h, "1.2.3.4").outcome is Outcome.UNMATCHED
    [item] = _items(h)
    assert (item.kind, item.state) == ("unmatched", "open")
    first, _ = _order(h)
    assert _links(h) == [("1.2.3.4", first, "accession", 0.95)]
    [item] = _items(h)
    assert (item.state, item.resolved_by) == ("linked", "channel:hl7-in")
    assert _actions(h) == ["correlation.queued", "correlation.linked", "correlation.resolved"]


def test_an_accession_of_two_patients_waits_for_a_person(h):
    _order(h)
    _order(h, MRN100999="MRN555", PLC5001="PLC7001", FIL9001="FIL7001",
           PLC5002="PLC7002", FIL9002="FIL7002", **{ORDERED_STUDY: "1.2.3.99"})
    _index(h, "1.2.3.4")
    decision = _correlate(h, "1.2.3.4")
    assert decision.outcome is Outcome.CONFLICT and "2 different patients" in decision.reason
    [item] = _items(h)
    assert [c["rule"] for c in item.candidates] == ["accession", "accession"]
    assert _links(h) == []
    chosen = item.candidates[0]["order_id"]
    with h.database.write() as session:
        link_by_hand(session, item.id, [chosen], actor="cli:analyst", note="checked the RIS",
                     chain=CHAIN)
    assert _links(h) == [("1.2.3.4", chosen, "manual", 1.0)]
    [item] = _items(h)
    assert (item.state, item.resolved_by, item.note) == ("linked", "cli:analyst",
                                                         "checked the RIS")
    with pytest.raises(CorrelationError, match="not open"), h.database.write() as session:
        reject_by_hand(session, item.id, actor="cli:analyst", note="again", chain=CHAIN)


def test_a_study_without_patient_or_accession_is_rejected_by_hand(h):
    _index(h, "1.2.3.5", accession=None, patient_id=None)
    decision = _correlate(h, "1.2.3.5")
    assert decision.outcome is Outcome.UNMATCHED
    assert "no accession" in decision.reason and "no PatientID" in decision.reason
    [item] = _items(h)
    with h.database.write() as session:
        reject_by_hand(session, item.id, actor="api:qa", note="phantom scan", chain=CHAIN)
    [item] = _items(h)
    assert item.state == "rejected"
    with h.database.read() as session:
        [event] = audit.query(session, audit.AuditQuery(action="correlation.rejected"))
    assert (event.actor, json.loads(event.detail)["note"]) == ("api:qa", "phantom scan")


def test_the_same_verdict_twice_keeps_one_item_and_unknown_studies_are_an_error(h):
    _index(h, "1.2.3.6", accession="NOPE", patient_id="NOBODY")
    _correlate(h, "1.2.3.6")
    _correlate(h, "1.2.3.6")
    assert [i.state for i in _items(h)] == ["open"]
    with pytest.raises(CorrelationError, match="not in the DICOM index"):
        _correlate(h, "9.9.9")


def test_a_cancelled_order_is_not_linked(h):
    _order(h)
    with h.database.write() as session:
        for order in session.execute(select(Order)).scalars():
            order.status = "cancelled"
    _index(h, ORDERED_STUDY)
    assert _correlate(h, ORDERED_STUDY).outcome is Outcome.UNMATCHED


def test_the_queue_through_the_api_and_the_cli(h, capsys):
    from prometheus_client import CollectorRegistry
    from starlette.testclient import TestClient

    from radbridge.interfaces.api import ApiContext, create_app
    from radbridge.interfaces.cli import main

    _index(h, "1.2.3.7", accession="ACC-X", patient_id="NOBODY")
    _index(h, "1.2.3.8", accession="ACC-Y", patient_id="NOBODY", sop="2")
    _correlate(h, "1.2.3.7")
    _correlate(h, "1.2.3.8")
    first, _ = _order(h)
    context = ApiContext(h.database, h.blobs, h.channels, "node-a", 1024,
                         registry=CollectorRegistry())
    with TestClient(create_app(context)) as client:
        items = client.get("/api/reconciliation").json()["items"]
        assert [i["study_uid"] for i in items] == ["1.2.3.8", "1.2.3.7"]
        target = items[1]["id"]
        no_note = client.post(f"/api/reconciliation/{target}/link", json={"order_ids": [first]})
        linked = client.post(f"/api/reconciliation/{target}/link",
                             json={"order_ids": [first], "note": "same exam, RIS typo"})
        again = client.post(f"/api/reconciliation/{target}/reject", json={"note": "no"})
        missing = client.post("/api/reconciliation/9999/reject", json={"note": "no"})
        study = client.get("/api/studies/1.2.3.7").json()
    assert no_note.status_code == 400 and linked.status_code == 200
    assert linked.json()["state"] == "linked" and again.status_code == 409
    assert missing.status_code == 404
    assert [(o["order_id"], o["rule"]) for o in study["orders"]] == [(first, "manual")]

    url = h.database.url
    assert main(["reconcile", "list", "--database-url", url, "--json"]) == 0
    [open_item] = json.loads(capsys.readouterr().out)["items"]
    assert open_item["study_uid"] == "1.2.3.8"
    assert main(["reconcile", "reject", str(open_item["id"]), "--note", "test scan",
                 "--database-url", url]) == 0
    assert "rejected by cli:" in capsys.readouterr().out
    assert main(["reconcile", "reject", str(open_item["id"]), "--note", "twice",
                 "--database-url", url]) == 1
    assert main(["reconcile", "list", "--state", "all", "--database-url", url, "--json"]) == 0
    states = {i["study_uid"]: i["state"] for i in json.loads(capsys.readouterr().out)["items"]}
    assert states == {"1.2.3.7": "linked", "1.2.3.8": "rejected"}


MERGE_INTO_C = {"NW-ADT-0003": "NW-ADT-0903", "HC998877^^^ONTARIO-HC^HC~MRN100234": "MRN777",
                "MRG|MRN100999": "MRG|MRN100234"}
"""adt_a40_merge.hl7 rewritten: B (MRN100234) merged into C (MRN777)."""


@pytest.mark.parametrize("merges", [
    [("adt_a40_merge", {}), ("adt_a40_merge", MERGE_INTO_C)],   # A into B, then B into C
    [("adt_a40_merge", MERGE_INTO_C), ("adt_a40_merge", {})],   # B into C, then A into B
], ids=["chain", "reverse"])
def test_a_study_under_a_merged_away_identifier_links_to_the_survivors_order(h, merges):
    first, _ = _order(h)  # placed for A (MRN100999)
    for sample, replace in merges:
        _order(h, sample, **replace)
    _index(h, "1.2.3.9")  # the modality still sends A's identifier; accession ACC26120001
    decision = _correlate(h, "1.2.3.9")
    assert (decision.outcome, decision.order_ids) == (Outcome.LINKED, (first,))


def test_twice_the_same_study_or_order_changes_nothing(h):
    first, _ = _order(h)
    _order(h)  # the same ORM again: the registry applies it once
    _index(h, ORDERED_STUDY)
    _correlate(h, ORDERED_STUDY)
    _correlate(h, ORDERED_STUDY)  # e.g. announced again as version 2
    assert _links(h) == [(ORDERED_STUDY, first, "study_uid", 1.0)]
    assert _actions(h) == ["correlation.linked"]


def test_an_order_without_accession_is_still_found_by_patient_and_date(h):
    orders = _order(h, **{"ACC26120001": "", "ZDS|1.2.826.0.1.3680043.10.1234.26120001"
                          "^NW_RIS^Application^DICOM": "ZDS|"})
    _index(h, "1.2.3.10", accession=None)
    decision = _correlate(h, "1.2.3.10")
    assert decision.outcome is Outcome.LINKED and decision.matches[0].rule.value == \
        "patient_window" and decision.order_ids == (orders[0],)


def test_a_study_with_an_empty_patient_id_is_placed_by_accession_or_queued(h):
    first, _ = _order(h)
    _index(h, "1.2.3.11", patient_id=None)
    assert _correlate(h, "1.2.3.11").order_ids == (first,)
    _index(h, "1.2.3.12", patient_id=None, accession=None, sop="2")
    assert _correlate(h, "1.2.3.12").outcome is Outcome.UNMATCHED


def test_a_combined_exam_links_both_orders_from_its_instances_accessions(h):
    first, second = _order(h)  # ACC26120001 (CT) and ACC26120002 (XR) for one patient
    _index(h, "1.2.3.13", accession="ACC26120001", sop="1")
    _index(h, "1.2.3.13", accession="ACC26120002", sop="2")
    decision = _correlate(h, "1.2.3.13")
    assert (decision.outcome, sorted(decision.order_ids)) == (Outcome.LINKED,
                                                              sorted((first, second)))
