"""Audit queries and exports: every filter with keyset pages (both engines), the export
formats byte for byte, FHIR AuditEvents validated by fhir.resources (R4B), DICOM audit
messages parsed back, and the API and CLI around them."""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from starlette.testclient import TestClient

from radbridge.engine import audit
from radbridge.engine.audit_export import atna, event_map, fhir_audit, formats, queries
from radbridge.engine.audit_export.errors import AuditFilterError
from radbridge.engine.audit_export.event_map import AuditSource
from radbridge.engine.audit_export.events import LedgerEvent
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.interfaces import cli
from radbridge.interfaces.api import ApiContext, create_app
from radbridge.interfaces.cli import audit_cmd

AT = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
SOURCE = AuditSource("node-a:8080")


def _records() -> list[audit.AuditRecord]:
    """Six events over two patients, two channels, people and the engine."""
    return [
        audit.AuditRecord(action="message.received", actor="source:mllp:10.1.1.1:4000",
                          channel="hl7-in", message_id=1, patient_id="P1", accession="A1"),
        audit.AuditRecord(action="registry.order.created", actor="registry", channel="hl7-in",
                          message_id=1, patient_id="P1", accession="A1"),
        audit.AuditRecord(action="message.received", actor="source:dimse:CT1@10.2.2.2",
                          channel="dicom-in", message_id=2, patient_id="P1",
                          accession="A1", study_uid="1.2.3",
                          detail={"content_type": "application/dicom"}),
        audit.AuditRecord(action="delivery.failed", outcome="retry", actor="engine",
                          channel="ris-oru", message_id=3, patient_id="P2",
                          detail={"destination": "ris"}),
        audit.AuditRecord(action="message.viewed", actor="token:alice", channel="dicom-in",
                          message_id=2, patient_id="P1", study_uid="1.2.3"),
        audit.AuditRecord(action="registry.patient.updated", actor="registry",
                          patient_id="P2"),
    ]


@pytest.fixture
def ledger(database: Database) -> Database:
    audit.append_now(database, _records())
    return database


def _page(database: Database, **kwargs: Any) -> queries.Page:
    options = {k: kwargs.pop(k) for k in ("limit", "before_seq", "after_seq", "newest_first")
               if k in kwargs}
    with database.read() as session:
        return queries.page(session, queries.AuditFilter(**kwargs), **options)


def _seqs(found: queries.Page) -> list[int]:
    return [event.seq for event in found.events]


# --- queries ------------------------------------------------------------------------------


@pytest.mark.parametrize(("filters", "expected"), [
    ({"patient_id": "P1"}, [5, 3, 2, 1]),
    ({"accession": "A1"}, [3, 2, 1]),
    ({"study_uid": "1.2.3"}, [5, 3]),
    ({"channel": "dicom-in"}, [5, 3]),
    ({"actor": "token:alice"}, [5]),
    ({"action": "message.received"}, [3, 1]),
    ({"action": "registry.*"}, [6, 2]),
    ({"action": "message.*", "patient_id": "P1"}, [5, 3, 1]),
    ({"outcome": "retry"}, [4]),
    ({"message_id": 2}, [5, 3]),
    ({"patient_id": "' OR '1'='1"}, []),
    ({"action": "%.*"}, []),
    ({"action": "registr_.*"}, []),
])
def test_each_filter_selects_its_events_newest_first(ledger: Database, filters: dict[str, Any],
                                                     expected: list[int]) -> None:
    assert _seqs(_page(ledger, **filters)) == expected


def test_keyset_pages_both_ways(ledger: Database) -> None:
    first = _page(ledger, patient_id="P1", limit=2)
    assert (_seqs(first), first.next_seq) == ([5, 3], 3)
    second = _page(ledger, patient_id="P1", limit=2, before_seq=first.next_seq)
    assert (_seqs(second), second.next_seq) == ([2, 1], 1)
    assert _seqs(_page(ledger, patient_id="P1", limit=2, before_seq=1)) == []
    oldest = _page(ledger, patient_id="P1", limit=3, newest_first=False)
    assert (_seqs(oldest), oldest.next_seq) == ([1, 2, 3], 3)
    rest = _page(ledger, patient_id="P1", limit=3, newest_first=False, after_seq=3)
    assert (_seqs(rest), rest.next_seq) == ([5], None)


def test_time_range_is_inclusive_then_exclusive(database: Database) -> None:
    audit.append_now(database, [audit.AuditRecord(action="early", patient_id="P9")])
    time.sleep(0.01)
    middle = datetime.now(UTC)
    time.sleep(0.01)
    audit.append_now(database, [audit.AuditRecord(action="late", patient_id="P9")])
    with database.read() as session:
        late_at = queries.page(session, queries.AuditFilter(action="late")).events[0].at
    assert [e.action for e in _page(database, since=middle).events] == ["late"]
    assert [e.action for e in _page(database, until=middle).events] == ["early"]
    assert [e.action for e in _page(database, since=late_at).events] == ["late"]
    assert _page(database, until=late_at, since=middle).events == []


def test_stream_reads_every_page_in_order(ledger: Database) -> None:
    found = list(queries.stream(ledger, queries.AuditFilter(), page_size=2))
    assert [e.seq for e in found] == [1, 2, 3, 4, 5, 6]
    newest = list(queries.stream(ledger, queries.AuditFilter(), page_size=4,
                                 newest_first=True, max_events=5))
    assert [e.seq for e in newest] == [6, 5, 4, 3, 2]


@pytest.mark.parametrize(("filters", "name"), [
    ({"patient_id": "x" * 65}, "patient_id"),
    ({"action": "a*b"}, "action"),
    ({"since": datetime(2026, 1, 2)}, "since"),
    ({"since": AT, "until": AT}, "until"),
])
def test_unusable_filters_are_refused_by_name(filters: dict[str, Any], name: str) -> None:
    with pytest.raises(AuditFilterError) as caught:
        queries.AuditFilter(**filters)
    assert caught.value.name == name


# --- formats ------------------------------------------------------------------------------


def _event(**fields: Any) -> LedgerEvent:
    values: dict[str, Any] = {"seq": 7, "at": AT, "action": "message.received",
                              "actor": "source:dimse:CT1@10.2.2.2",
                              "chain": "node-a:8080/receiver", "channel": "dicom-in",
                              "message_id": 12, "patient_id": "P1", "accession": "A1",
                              "study_uid": "1.2.840.1", "hash": "ab" * 32,
                              "detail": {"content_type": "application/dicom", "size": 10}}
    values.update(fields)
    return LedgerEvent(**values)


def _render(name: str, events: list[LedgerEvent]) -> str:
    return "".join(formats.export_format(name).render(events, SOURCE))


def test_csv_has_a_header_and_one_row_per_event() -> None:
    text = _render("csv", [_event(), _event(seq=8, patient_id="=HYPERLINK(1)", detail={},
                                            actor="engine")])
    expected_header = ("seq,chain,at,actor,action,outcome,channel,message_id,patient_id,"
                       "accession,study_uid,detail,hash\r\n")
    first = ('7,node-a:8080/receiver,2026-03-04T05:06:07.891011+00:00,'
             'source:dimse:CT1@10.2.2.2,message.received,success,dicom-in,12,P1,A1,'
             '1.2.840.1,"{""content_type"":""application/dicom"",""size"":10}",'
             + "ab" * 32 + "\r\n")
    second = ("8,node-a:8080/receiver,2026-03-04T05:06:07.891011+00:00,engine,"
              "message.received,success,dicom-in,12,'=HYPERLINK(1),A1,1.2.840.1,{},"
              + "ab" * 32 + "\r\n")
    assert text == expected_header + first + second


def test_json_array_and_ndjson_round_trip() -> None:
    events = [_event(), _event(seq=8, detail={"n": 1})]
    expected = [e.as_json() for e in events]
    assert json.loads(_render("json", events)) == expected
    assert json.loads(_render("json", [])) == []
    assert [json.loads(line) for line in _render("ndjson", events).splitlines()] == expected
    assert expected[0]["at"] == "2026-03-04T05:06:07.891011+00:00"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(AuditFilterError, match="csv, json, ndjson, fhir, atna"):
        formats.export_format("xlsx")


def test_chunked_output_concatenates_to_the_same_bytes() -> None:
    parts = [f"line {i}\n" for i in range(1000)]
    chunks = list(formats.chunked(parts, size=100))
    assert b"".join(chunks) == "".join(parts).encode()
    assert all(100 <= len(chunk) < 109 for chunk in chunks[:-1]) and len(chunks[-1]) < 109


# --- the action table ---------------------------------------------------------------------


@pytest.mark.parametrize(("action", "detail", "study", "expected"), [
    ("message.received", {"content_type": "application/dicom"}, None, ("110104", "C")),
    ("message.received", {"content_type": "x-application/hl7-v2+er7"}, None, ("110107", "C")),
    ("delivery.sent", {"destination": "ris"}, None, ("110106", "R")),
    ("message.viewed", {}, "1.2.3", ("110103", "R")),
    ("message.viewed", {}, None, ("110110", "R")),
    ("study.viewed", {}, "1.2.3", ("110103", "R")),
    ("message.listed", {}, None, ("110112", "E")),
    ("audit.queried", {}, None, ("110101", "R")),
    ("registry.patient.created", {}, None, ("110110", "C")),
    ("registry.patient.merged", {}, None, ("110110", "U")),
    ("registry.order.created", {}, None, ("110109", "C")),
    ("registry.order.status", {}, None, ("110109", "U")),
    ("correlation.linked", {}, "1.2.3", ("110109", "U")),
    ("inference.run", {}, "1.2.3", ("110103", "R")),
    ("result.preliminary", {}, "1.2.3", ("110111", "C")),
    ("result.withdrawn", {}, "1.2.3", ("110111", "D")),
    ("token.created", {}, None, ("110113", "E")),
    ("channel.paused", {}, None, ("110113", "E")),
    ("config.loaded", {}, None, ("110100", "E")),
    ("message.transformed", {}, None, ("110100", "E")),
])
def test_actions_map_to_dicom_event_ids(action: str, detail: dict[str, Any],
                                        study: str | None, expected: tuple[str, str]) -> None:
    kind = event_map.kind_of(_event(action=action, detail=detail, study_uid=study))
    assert (kind.event_id.code, kind.action) == expected


def test_participants_name_the_sender_this_node_and_the_destination() -> None:
    received = _event()
    kind = event_map.kind_of(received)
    assert [(p.user_id, p.requestor, p.role and p.role.code, p.network, p.network_type)
            for p in event_map.participants(received, kind, "fallback")] == [
        ("CT1", True, "110153", "10.2.2.2", "2"),
        ("node-a:8080", False, "110152", None, None)]
    sent = _event(action="delivery.sent", actor="engine", chain="node-b:1/outbox",
                  channel="ris-oru", detail={"destination": "ris"})
    assert [(p.user_id, p.requestor, p.role and p.role.code)
            for p in event_map.participants(sent, event_map.kind_of(sent), "x")] == [
        ("node-b:1/engine", True, "110153"), ("ris-oru/ris", False, "110152")]
    viewed = _event(action="message.viewed", actor="api:2001:db8::5", chain="default",
                    detail={})
    people = event_map.participants(viewed, event_map.kind_of(viewed), "node-c")
    assert [(p.user_id, p.requestor, p.network, p.network_type, p.person) for p in people] == [
        ("api:2001:db8::5", True, "2001:db8::5", "2", True), ("node-c", False, None, None,
                                                               False)]


# --- DICOM audit messages -----------------------------------------------------------------


def _objects(root: ET.Element) -> dict[str, ET.Element]:
    return {o.find("ParticipantObjectIDTypeCode").get("csd-code"): o  # type: ignore[union-attr]
            for o in root.findall("ParticipantObjectIdentification")}


def test_atna_message_for_a_received_instance() -> None:
    body = atna.audit_message(_event(), SOURCE)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?><AuditMessage>')
    root = ET.fromstring(body)
    identification = root.find("EventIdentification")
    assert identification is not None and identification.attrib == {
        "EventActionCode": "C", "EventDateTime": "2026-03-04T05:06:07.891011Z",
        "EventOutcomeIndicator": "0"}
    assert [(c.tag, c.get("csd-code"), c.get("codeSystemName")) for c in identification] == [
        ("EventID", "110104", "DCM"), ("EventTypeCode", "message.received", "99RADBRIDGE")]
    assert [(p.get("UserID"), p.get("UserIsRequestor"))
            for p in root.findall("ActiveParticipant")] == [("CT1", "true"),
                                                           ("node-a:8080", "false")]
    source = root.find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == "node-a:8080"
    objects = _objects(root)
    patient, study = objects["2"], objects["110180"]
    assert (patient.get("ParticipantObjectID"), patient.get("ParticipantObjectTypeCode"),
            patient.get("ParticipantObjectTypeCodeRole")) == ("P1", "1", "1")
    assert (study.get("ParticipantObjectID"), study.get("ParticipantObjectTypeCode"),
            study.get("ParticipantObjectTypeCodeRole")) == ("1.2.840.1", "2", "3")
    assert [(e.tag, e.get("Number")) for e in study][1:] == [("Accession", "A1")]
    entry = objects["audit-event"]
    assert entry.get("ParticipantObjectID") == "7"
    details = {d.get("type"): base64.b64decode(d.get("value") or "")
               for d in entry.findall("ParticipantObjectDetail")}
    assert details == {"chain": b"node-a:8080/receiver", "hash": b"ab" * 32,
                       "detail": b'{"content_type":"application/dicom","size":10}'}
    assert objects["message"].get("ParticipantObjectID") == "12"


def test_atna_message_for_an_audit_search_carries_the_query() -> None:
    event = _event(action="audit.queried", actor="token:carol", outcome="success",
                   channel=None, message_id=None, study_uid=None, accession=None,
                   detail={"filters": {"patient_id": "P1"}, "returned": 3})
    root = ET.fromstring(atna.audit_message(event, AuditSource("n", site="HOSP")))
    objects = _objects(root)
    log = objects["12"]
    assert (log.get("ParticipantObjectID"), log.findtext("ParticipantObjectName")) == (
        "urn:radbridge:audit-ledger", "Security Audit Log")
    query = objects["query"]
    assert base64.b64decode(query.findtext("ParticipantObjectQuery") or "") == \
        b'{"patient_id":"P1"}'
    assert root.find("AuditSourceIdentification").get(  # type: ignore[union-attr]
        "AuditEnterpriseSiteID") == "HOSP"


def test_atna_values_that_xml_cannot_hold_are_replaced() -> None:
    body = atna.audit_message(_event(patient_id="P\x01\x1b2", accession="A&<1>"), SOURCE)
    objects = _objects(ET.fromstring(body))
    assert objects["2"].get("ParticipantObjectID") == "P\ufffd\ufffd2"
    assert objects["110180"].find("Accession").get("Number") == "A&<1>"  # type: ignore


def test_failures_map_to_outcome_indicators() -> None:
    for outcome, indicator in (("success", "0"), ("retry", "4"), ("failure", "8"),
                               ("dead", "8"), ("exploded", "12")):
        root = ET.fromstring(atna.audit_message(_event(outcome=outcome), SOURCE))
        assert root.find("EventIdentification").get(  # type: ignore[union-attr]
            "EventOutcomeIndicator") == indicator


# --- FHIR AuditEvent -----------------------------------------------------------------------


@pytest.mark.parametrize("event", [
    _event(),
    _event(action="message.viewed", actor="oidc:dr-who", detail={}, outcome="success"),
    _event(action="delivery.failed", actor="engine", outcome="dead",
           detail={"destination": "ris", "error": "refused"}),
    _event(action="audit.exported", actor="cli:ops", patient_id=None, study_uid=None,
           accession=None, message_id=None, chain="default",
           detail={"filters": {"action": "registry.*"}, "format": "csv"}),
], ids=["received", "viewed", "delivery-dead", "exported"])
def test_fhir_audit_events_validate_as_r4b(event: LedgerEvent) -> None:
    resource = fhir_audit.audit_event(event, AuditSource("node-a:8080", site="HOSP"))
    parsed = FhirAuditEvent.model_validate(resource)
    assert parsed.id == f"audit-{event.seq}"
    assert parsed.source.observer.display == "node-a:8080"
    assert sum(1 for agent in parsed.agent if agent.requestor) == 1


def test_fhir_audit_event_codes_and_entities() -> None:
    resource = fhir_audit.audit_event(_event(action="message.viewed", actor="token:alice",
                                             detail={}), SOURCE)
    assert resource["type"] == {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                "code": "110103", "display": "DICOM Instances Accessed"}
    assert resource["subtype"] == [{"system": "urn:radbridge:audit-action",
                                    "code": "message.viewed", "display": "message.viewed"}]
    assert (resource["action"], resource["outcome"], resource["recorded"]) == (
        "R", "0", "2026-03-04T05:06:07.891011+00:00")
    reader = resource["agent"][0]
    assert reader["who"]["identifier"]["value"] == "token:alice" and reader["requestor"]
    assert reader["type"]["coding"][0]["code"] == "IRCP"
    patient, study = resource["entity"][:2]
    assert patient["what"] == {"identifier": {"value": "P1"}, "type": "Patient"}
    assert (patient["type"]["code"], patient["role"]["code"]) == ("1", "1")
    assert study["what"]["identifier"] == {"system": "urn:dicom:uid",
                                           "value": "urn:oid:1.2.840.1"}
    assert (study["type"]["code"], study["role"]["code"]) == ("2", "3")
    assert study["extension"][0]["valueIdentifier"] == {"value": "A1"}


# --- the API ------------------------------------------------------------------------------


@pytest.fixture
def client(ledger: Database, tmp_path: Path) -> Iterator[TestClient]:
    context = ApiContext(database=ledger, blobs=BlobStore(tmp_path / "blobs"), channels={},
                         node_id="node-a:8080", inline_limit=1024, store_metrics=False)
    with TestClient(create_app(context), client=("10.0.0.9", 5000)) as test_client:
        yield test_client


def _ledger_actions(database: Database, action: str) -> list[LedgerEvent]:
    with database.read() as session:
        return queries.page(session, queries.AuditFilter(action=action)).events


def test_api_search_pages_oldest_first_and_takes_prefixes(client: TestClient,
                                                          ledger: Database) -> None:
    answer = client.get("/api/audit", params={"action": "registry.*", "after_seq": 1,
                                              "limit": 1}).json()
    assert ([e["seq"] for e in answer["events"]], answer["next_after_seq"]) == ([2], 2)
    both = client.get("/api/audit", params={"after_seq": 1, "before_seq": 5})
    assert both.status_code == 400
    long_value = client.get("/api/audit", params={"accession": "9" * 100})
    assert long_value.status_code == 400 and "accession" in long_value.json()["error"]


@pytest.mark.parametrize("name", ["csv", "json", "ndjson", "fhir", "atna"])
def test_api_export_streams_each_format(client: TestClient, ledger: Database,
                                        name: str) -> None:
    response = client.get("/api/audit/export", params={"format": name, "patient_id": "P1"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(formats.FORMATS[name].media_type
                                                       .split(";")[0])
    assert response.headers["content-disposition"].endswith(
        f'.{formats.FORMATS[name].extension}"')
    # the export's own audit event (7, filed under P1) is written before the stream starts
    assert _exported_seqs(name, response.text) == [1, 2, 3, 5, 7]
    [exported] = _ledger_actions(ledger, "audit.exported")
    assert (exported.actor, exported.patient_id) == ("api:10.0.0.9", "P1")
    assert exported.detail["format"] == name


def _exported_seqs(name: str, text: str) -> list[int]:
    parse: dict[str, Callable[[str], list[int]]] = {
        "csv": lambda t: [int(r["seq"]) for r in csv.DictReader(io.StringIO(t))],
        "json": lambda t: [e["seq"] for e in json.loads(t)],
        "ndjson": lambda t: [json.loads(line)["seq"] for line in t.splitlines()],
        "fhir": lambda t: [int(FhirAuditEvent.model_validate_json(line).id.split("-")[1])
                           for line in t.splitlines()],
        "atna": lambda t: [int(_objects(m)["audit-event"].get("ParticipantObjectID") or 0)
                           for m in ET.fromstring(t.encode())],
    }
    return parse[name](text)


def test_api_export_orders_limits_and_refuses_bad_parameters(client: TestClient) -> None:
    newest = client.get("/api/audit/export", params={"format": "ndjson", "order": "desc",
                                                     "limit": 2})
    assert [json.loads(line)["seq"] for line in newest.text.splitlines()] == [7, 6]
    for params, word in (({"format": "xlsx"}, "format"), ({"order": "up"}, "order"),
                         ({"before_seq": "3"}, "before_seq"), ({"since": "never"}, "since"),
                         ({"action": "a*b"}, "action")):
        answer = client.get("/api/audit/export", params=params)
        assert answer.status_code == 400 and word in answer.json()["error"], params


def test_api_forwarding_status_lists_no_destination_yet(client: TestClient) -> None:
    assert client.get("/api/audit/forwarding").json() == {"destinations": []}


# --- the CLI ------------------------------------------------------------------------------


def _cli(database_url: str, tmp_path: Path, *argv: str) -> int:
    args = cli.build_parser().parse_args(
        [*argv, "--database-url", database_url, "--data-dir", str(tmp_path / "data")])
    code: int = args.handler(args)
    return code


def test_cli_export_writes_fhir_and_atna_files(ledger: Database, database_url: str,
                                               tmp_path: Path) -> None:
    fhir_file, atna_file = tmp_path / "audit.ndjson", tmp_path / "audit.xml"
    assert _cli(database_url, tmp_path, "audit", "export", "--format", "fhir",
                "--action", "message.*", "--out", str(fhir_file), "--source-id", "ops") == 0
    resources = [FhirAuditEvent.model_validate_json(line)
                 for line in fhir_file.read_text().splitlines()]
    assert [r.id for r in resources] == ["audit-1", "audit-3", "audit-5"]
    assert {r.source.observer.display for r in resources} == {"ops"}
    assert _cli(database_url, tmp_path, "audit", "export", "--format", "atna",
                "--channel", "dicom-in", "--order", "desc", "--out", str(atna_file)) == 0
    messages = list(ET.fromstring(atna_file.read_bytes()))
    # newest first: this export's own event (Audit Log Used), the view, the receipt
    assert [m.find("EventIdentification/EventID").get("csd-code")  # type: ignore[union-attr]
            for m in messages] == ["110101", "110103", "110104"]
    exports = _ledger_actions(ledger, "audit.exported")
    assert [e.detail["filters"] for e in exports] == [{"channel": "dicom-in"},
                                                     {"action": "message.*"}]
    assert all(e.actor.startswith("cli:") for e in exports)


def test_cli_query_takes_a_prefix_and_pages_forward(ledger: Database, database_url: str,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert _cli(database_url, tmp_path, "audit", "query", "--action", "registry.*",
                "--after-seq", "0", "--limit", "1") == 0
    page = json.loads(capsys.readouterr().out)
    assert ([e["seq"] for e in page["events"]], page["next_after_seq"]) == ([2], 2)


def test_cli_parser_refuses_an_unknown_format() -> None:
    parser = argparse.ArgumentParser()
    audit_cmd.register(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["audit", "export", "--format", "xlsx"])
