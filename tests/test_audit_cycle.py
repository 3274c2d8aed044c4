"""The study-to-report cycle in one call: a study's rows written as the engine leaves them
(instances from two senders, a reconciliation decided by a person, the order link, a
run, a published result, the result's messages handed from channel to channel and their
deliveries, people viewing it), then the cycle read back through the function, the API
and the CLI, against hand-written expectations. Both engines."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from radbridge.engine import audit
from radbridge.engine.audit_export import queries
from radbridge.engine.audit_export.cycle import study_cycle
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import (
    DicomInstance,
    DicomSeries,
    DicomStudy,
    InferenceRun,
    Message,
    Order,
    Patient,
    PublishedResult,
    ReconciliationItem,
    StudyOrderLink,
)
from radbridge.interfaces import cli
from radbridge.interfaces.api import ApiContext, create_app
from tests.store_rows import add_delivery, add_message

UID = "1.2.826.0.1.3680043.8.498.1"
T0 = datetime(2020, 1, 6, 8, 0, tzinfo=UTC)
"""Long before the audit events the test appends (they are stamped now)."""


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(minutes: float) -> str:
    return at(minutes).isoformat()


def _message(session: Any, channel: str, source: str, minutes: float, *,
             meta: dict[str, str] | None = None, dedup_key: str | None = None) -> Message:
    message = add_message(session, channel=channel, patient_id="P1", accession="A1",
                          study_uid=UID)
    message.source, message.received_at, message.meta = source, at(minutes), meta or {}
    message.dedup_key = dedup_key
    session.flush()
    return message


def _instance(session: Any, series: DicomSeries, sop: str, message: Message, minutes: float,
              version: int = 1) -> None:
    session.add(DicomInstance(
        series_id=series.id, study_uid=UID, sop_instance_uid=sop, version=version,
        current=True, message_id=message.id, blob_sha256="0" * 64, size=100,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", transfer_syntax_uid="1.2.840.10008.1.2.1",
        received_at=at(minutes)))


def _sent(session: Any, message: Message, destination: str, minutes: float,
          status: str = DeliveryStatus.SENT, **fields: Any) -> str:
    delivery = add_delivery(session, message, destination, status, **fields)
    delivery.updated_at = at(minutes)
    if status == DeliveryStatus.SENT:
        delivery.sent_at = at(minutes)
    session.flush()
    return delivery.idempotency_key


@pytest.fixture
def study(database: Database) -> dict[str, int]:
    """The rows of one study's cycle; returns the ids the expectations name."""
    with database.write() as session:
        row = DicomStudy(study_uid=UID, channel="dicom-in", patient_id="P1", accession="A1",
                         modalities="CT", state="ready", ready_version=1, series_count=1,
                         instance_count=3, first_received_at=at(1), last_received_at=at(3))
        session.add(row)
        session.flush()
        series = DicomSeries(study_id=row.id, series_uid=f"{UID}.1", modality="CT",
                             instance_count=3)
        session.add(series)
        session.flush()
        ct = [_message(session, "dicom-in", "dimse:CT1@10.2.2.2", m) for m in (1, 2, 2.5)]
        for index, (message, minutes) in enumerate(zip(ct[:2], (1, 2), strict=True)):
            _instance(session, series, f"{UID}.1.{index + 1}", message, minutes)
        _instance(session, series, f"{UID}.1.2", ct[2], 2.5, version=2)
        web = _message(session, "dicomweb-in", "http:10.3.3.3", 3)
        _instance(session, series, f"{UID}.1.3", web, 3)
        session.add(ReconciliationItem(
            study_uid=UID, kind="unmatched", reason="no order yet", window_seconds=7200,
            state="linked", created_at=at(3.5), updated_at=at(3.9), resolved_by="token:bob",
            note="found it"))
        _message(session, "study-ready", "assembly", 3.75, meta={"version": "1"})
        patient = Patient(identifier="P1")
        session.add(patient)
        session.flush()
        order = Order(patient_id=patient.id, accession="A1", placer_number="PL1",
                      status="IP")
        session.add(order)
        session.flush()
        session.add(StudyOrderLink(study_uid=UID, order_id=order.id, rule="accession",
                                   confidence=1.0, reason="accession A1",
                                   decided_by="correlation:study-ready/correlate",
                                   created_at=at(4)))
        run = InferenceRun(study_uid=UID, study_version=1, model_name="fracture-xr",
                           model_version="1.0", card_sha256="c" * 64, device_identifier="dev",
                           demonstration=True, backend="onnxruntime", status="done",
                           positive=True, created_at=at(5), updated_at=at(5))
        session.add(run)
        session.flush()
        session.add(PublishedResult(
            result_key=f"{UID}/{order.id}/fracture-xr", result_id="R1", study_uid=UID,
            order_id=order.id, model_name="fracture-xr", run_id=run.id,
            patient_digest="d" * 64, results_channel="ai-results", pacs_channel="pacs-out",
            created_at=at(6), updated_at=at(6)))
        result_meta = {"result_id": "R1", "revision": "0", "status": "preliminary",
                       "run_id": str(run.id)}
        results = _message(session, "ai-results", "results:inference-done/publish", 6,
                           meta=result_meta)
        handed = _sent(session, results, "oru", 6 + 10 / 60)
        oru = _message(session, "ris-oru", "channel:ai-results", 6 + 11 / 60,
                       meta=result_meta, dedup_key=handed)
        _sent(session, oru, "ris", 6 + 20 / 60)
        sr = _message(session, "pacs-out", "results:inference-done/publish", 6.5,
                      meta={"result_id": "R1", "revision": "0", "kind": "SR"})
        _sent(session, sr, "pacs", 7, DeliveryStatus.DEAD, attempts=3,
              last_error="association rejected")
        ids = {"order": order.id, "run": run.id, "results": results.id, "oru": oru.id,
               "sr": sr.id}
    audit.append_now(database, [
        audit.AuditRecord(action="message.received", actor="source:dimse:CT1@10.2.2.2",
                          study_uid=UID, patient_id="P1"),
        audit.AuditRecord(action="correlation.linked", actor="correlation:study-ready",
                          study_uid=UID),
        audit.AuditRecord(action="result.corrected", actor="results", study_uid=UID,
                          patient_id="P1", accession="A1",
                          detail={"result_id": "R1", "revision": 1, "model": "fracture-xr",
                                  "run": ids["run"], "reason": "new images"}),
        audit.AuditRecord(action="message.viewed", actor="token:alice", study_uid=UID,
                          message_id=ids["oru"], patient_id="P1"),
        audit.AuditRecord(action="study.listed", actor="token:carol", study_uid=UID),
        audit.AuditRecord(action="message.viewed", actor="token:alice", study_uid="9.9"),
    ])
    return ids


def test_the_cycle_of_a_study(database: Database, study: dict[str, int]) -> None:
    with database.read() as session:
        cycle = study_cycle(session, UID)
    assert cycle is not None
    assert cycle["study"]["patient_id"] == "P1" and cycle["study"]["instance_count"] == 3
    assert cycle["received"] == [
        {"channel": "dicom-in", "source": "dimse:CT1@10.2.2.2", "instances": 3, "series": 1,
         "bytes": 300, "new_versions": 1, "first": iso(1), "last": iso(2.5)},
        {"channel": "dicomweb-in", "source": "http:10.3.3.3", "instances": 1, "series": 1,
         "bytes": 100, "new_versions": 0, "first": iso(3), "last": iso(3)}]
    [order] = cycle["orders"]
    assert (order["order_id"], order["accession"], order["rule"], order["decided_by"],
            order["linked_at"]) == (study["order"], "A1", "accession",
                                    "correlation:study-ready/correlate", iso(4))
    [run] = cycle["inference"]
    assert (run["model_name"], run["model_version"], run["status"], run["positive"]) == (
        "fracture-xr", "1.0", "done", True)
    assert [(r["result_id"], r["revision"], r["state"]) for r in cycle["results"]] == [
        ("R1", 0, "sent")]
    # revision 0 from the message that handed it on, revision 1 from the ledger alone
    assert [(r["status"], r["result_id"], r["revision"], r["reason"], r["message_id"])
            for r in cycle["revisions"]] == [
        ("preliminary", "R1", 0, None, study["results"]),
        ("corrected", "R1", 1, "new images", None)]
    assert cycle["revisions"][0]["at"] == iso(6)
    messages = {m["message_id"]: m for m in cycle["messages"]}
    results, oru, sr = (messages[study[k]] for k in ("results", "oru", "sr"))
    assert [(d["destination"], d["status"], d["handed_to"]) for d in results["deliveries"]] \
        == [("oru", "sent", study["oru"])]
    assert [(d["destination"], d["status"], d["handed_to"]) for d in oru["deliveries"]] == [
        ("ris", "sent", None)]
    assert [(d["destination"], d["status"], d["attempts"], d["last_error"])
            for d in sr["deliveries"]] == [("pacs", "dead", 3, "association rejected")]
    assert (results["output"], sr["meta"]["kind"]) == (True, "SR")
    assert [m["channel"] for m in cycle["messages"] if not m["output"]] == ["study-ready"]
    assert [(p["actor"], p["action"], p["read"]) for p in cycle["people"]] == [
        ("token:alice", "message.viewed", True), ("token:carol", "study.listed", True)]
    assert cycle["truncated"] == {"messages": False, "people": False}


def test_the_timeline_is_in_time_order(database: Database, study: dict[str, int]) -> None:
    with database.read() as session:
        cycle = study_cycle(session, UID)
    assert cycle is not None
    steps = [(s["step"], s.get("channel") or s.get("by") or s.get("actor") or s.get("model")
              or s.get("result_id")) for s in cycle["timeline"]]
    assert steps == [
        ("received", "dicom-in"),
        ("received", "dicomweb-in"),
        ("reconciliation-unmatched", None),
        ("message", "study-ready"),
        ("reconciliation-linked", "token:bob"),
        ("order-linked", "correlation:study-ready/correlate"),
        ("inference-done", "fracture-xr:1.0"),
        ("result-preliminary", "R1"),
        ("message", "ai-results"),
        ("delivery-sent", "ai-results"),
        ("message", "ris-oru"),
        ("delivery-sent", "ris-oru"),
        ("message", "pacs-out"),
        ("delivery-dead", "pacs-out"),
        ("result-corrected", "R1"),
        ("viewed", "token:alice"),
        ("viewed", "token:carol"),
    ]
    times = [s["at"] for s in cycle["timeline"]]
    assert times == sorted(times) and times[0] == iso(1) and times[13] == iso(7)


def test_a_study_nothing_names_has_no_cycle(database: Database) -> None:
    with database.read() as session:
        assert study_cycle(session, "1.2.3.4.5") is None


# --- the API and the CLI ----------------------------------------------------------------


@pytest.fixture
def client(database: Database, tmp_path: Path) -> Iterator[TestClient]:
    context = ApiContext(database=database, blobs=BlobStore(tmp_path / "blobs"), channels={},
                         node_id="node-a:8080", inline_limit=1024, store_metrics=False)
    with TestClient(create_app(context), client=("10.0.0.9", 5000)) as test_client:
        yield test_client


def test_api_cycle_is_audited_and_shows_itself_next_time(client: TestClient,
                                                         database: Database,
                                                         study: dict[str, int]) -> None:
    answer = client.get(f"/api/audit/studies/{UID}")
    assert answer.status_code == 200
    first = answer.json()
    with database.read() as session:
        fresh = study_cycle(session, UID)
    assert fresh is not None
    same = ("study", "received", "orders", "reconciliation", "inference", "results",
            "revisions", "messages")
    assert {k: first[k] for k in same} == {k: fresh[k] for k in same}
    assert [p["actor"] for p in first["people"]] == ["token:alice", "token:carol"]
    with database.read() as session:
        [viewed] = queries.page(session, queries.AuditFilter(
            action="audit.study-cycle-viewed")).events
    assert (viewed.actor, viewed.study_uid, viewed.patient_id, viewed.accession) == (
        "api:10.0.0.9", UID, "P1", "A1")
    again = client.get(f"/api/audit/studies/{UID}").json()
    assert [(p["actor"], p["action"]) for p in again["people"]][-1] == (
        "api:10.0.0.9", "audit.study-cycle-viewed")
    assert again["timeline"][-1]["step"] == "viewed"


def test_api_cycle_of_an_unknown_study_is_404(client: TestClient, database: Database) -> None:
    answer = client.get("/api/audit/studies/1.2.3.4.5")
    assert answer.status_code == 404 and "1.2.3.4.5" in answer.json()["error"]
    assert client.get(f"/api/audit/studies/{'1' * 65}").status_code == 404
    assert client.get(f"/api/audit/studies/{UID}", params={"x": "1"}).status_code == 400


def _cli(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
         *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    args = cli.build_parser().parse_args(
        [*argv, "--database-url", database_url, "--data-dir", str(tmp_path / "data")])
    code: int = args.handler(args)
    return code, capsys.readouterr().out


def test_cli_study_prints_the_timeline(database_url: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str],
                                       study: dict[str, int]) -> None:
    code, out = _cli(database_url, tmp_path, capsys, "audit", "study", UID)
    lines = out.splitlines()
    assert code == 0
    assert lines[:2] == [f"study {UID}", "  patient P1  accession A1  state ready  instances 3"]
    assert lines[2] == (f"{iso(1)}  received                 channel=dicom-in  "
                        f"source=dimse:CT1@10.2.2.2  instances=3  last={iso(2.5)}")
    assert lines[15].split()[1:] == ["delivery-dead", "message_id=" + str(study["sr"]),
                                     "channel=pacs-out", "destination=pacs", "attempts=3"]
    code, out = _cli(database_url, tmp_path, capsys, "audit", "study", UID, "--json")
    assert code == 0 and json.loads(out)["study_uid"] == UID
    code, _ = _cli(database_url, tmp_path, capsys, "audit", "study", "7.7.7")
    assert code == 1


# --- end to end: a real `radbridge run`, a real study, a real collector ----------------------


@pytest.mark.slow
def test_a_real_study_cycle_and_its_atna_trail(tmp_path: Path) -> None:
    """The shipped channels in `radbridge run --atna-syslog udp://...`: an ADT and an order
    over MLLP, the ordered head CT over C-STORE. The cycle shows the instances, the link
    by Study Instance UID, the runs, the result and where each rendering went; the
    collector (rsyslog) receives the ledger as DICOM audit messages, this view included."""
    from tests.e2e.conftest import RadbridgeNode, free_port, wait_until
    from tests.e2e.test_correlation_flows import ORDERED_STUDY, send_hl7, shipped
    from tests.e2e.test_results_flow import outbox, send_ordered_head_ct
    from tests.peers import rsyslog as rsyslog_peer
    from tests.peers.dcmtk import missing_tools
    from tests.peers.fixtures import peer_unavailable

    reason = rsyslog_peer.missing() or (", ".join(missing_tools()) or None)
    if reason is not None:
        peer_unavailable(reason, "rsyslog and dcmtk")
    collector = rsyslog_peer.Rsyslog(tmp_path / "rsyslog")
    collector.start()
    hl7_port, dicom_port = free_port(), free_port()
    node = RadbridgeNode(tmp_path, channel_yaml=shipped(hl7_port, dicom_port),
                         database_url=f"sqlite:///{tmp_path / 'store.db'}", node_id="flow",
                         extra_args=("--atna-syslog", f"udp://127.0.0.1:{collector.udp_port}"))
    try:
        node.start()
        send_hl7(hl7_port, "adt_a04_register", "orm_o01_nw", tmp=tmp_path)
        send_ordered_head_ct(dicom_port, tmp_path / "study")
        wait_until(lambda: len(outbox(node, "pacs", "*.dcm")) >= 2, 180, "the SR and SEG")
        wait_until(lambda: outbox(node, "ehr", "*.json")
                   and len(outbox(node, "ris", "*.hl7")) >= 2, 60, "the HL7 and FHIR outputs")
        wait_until(lambda: all(d["status"] == "sent" for m in node.client.get(
            f"/api/audit/studies/{ORDERED_STUDY}").json()["messages"] for d in m["deliveries"]),
            60, "every delivery of the study sent")
        cycle = node.client.get(f"/api/audit/studies/{ORDERED_STUDY}").json()
        wait_until(lambda: {("110104", ORDERED_STUDY), ("110101", ORDERED_STUDY)}
                   <= _atna_events(collector), 30, "the audit trail at the collector")
    finally:
        node.close()
        collector.stop()
    [received] = cycle["received"]
    assert (received["channel"], received["source"]) == ("dicom-in", "dimse:STORESCU@127.0.0.1")
    assert received["instances"] == cycle["study"]["instance_count"] > 0
    [order] = cycle["orders"]
    assert (order["accession"], order["rule"]) == ("ACC26120001", "study_uid")
    assert [(r["model_name"], r["status"]) for r in cycle["inference"]
            if r["status"] == "done"] == [("ich-ct", "done")]
    assert [(r["status"], r["revision"]) for r in cycle["revisions"]] == [("preliminary", 0)]
    delivered = {(m["channel"], d["destination"]) for m in cycle["messages"]
                 for d in m["deliveries"] if m["output"]}
    assert {("ris-oru", "ris"), ("ehr-fhir", "ehr"), ("pacs-out", "pacs"),
            ("ai-results", "oru")} <= delivered
    handed = {d["destination"]: d["handed_to"] for m in cycle["messages"]
              if m["channel"] == "ai-results" for d in m["deliveries"]}
    assert all(handed[name] is not None for name in ("oru", "fhir", "priority"))
    views = [(p["actor"], p["action"]) for p in cycle["people"]]
    assert views and set(views) == {("token:bootstrap-admin", "audit.study-cycle-viewed")}


def _atna_events(collector: Any) -> set[tuple[str, str | None]]:
    """(EventID, study UID) of each DICOM audit message the collector holds."""
    found = set()
    for message in collector.messages():
        root = ET.fromstring(message["msg"].removeprefix("\ufeff").encode())
        study = next((o.get("ParticipantObjectID") for o in
                      root.iter("ParticipantObjectIdentification")
                      if o.find("ParticipantObjectIDTypeCode").get("csd-code") == "110180"),
                     None)
        found.add((root.find("EventIdentification/EventID").get("csd-code"), study))
    return found
