"""QA reads from final reports, through the `qa-reports` destination on the real store.

A RIS final report (ORU^R01, OBR-25 F or C) or an EHR DiagnosticReport (final, amended,
corrected) gives the radiologist's call per finding: coded where the report codes it,
else from its text with negation. The report is placed on its study by Study Instance
UID, else by accession through the orders registry or the DICOM index; a report whose
study is not known yet waits by accession and joins the AI result once it is recorded.
A later report replaces an earlier one; anything that is no final report is ignored;
content that cannot be read is a permanent failure; report text never reaches a log.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from radbridge.channels import DEFAULT_DIR
from radbridge.engine.adapters import AdapterContext
from radbridge.engine.config import QaReportsDestination
from radbridge.engine.config_loader import load_channel_files
from radbridge.engine.models import AuditEvent, QaObservation, QaRead
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.qa.destination import QaReportSink
from radbridge.engine.qa.reports import NotFinal, read_report, reads_of
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.errors import PermanentDeliveryError
from radbridge.mappings.hl7.oru import build_oru_r01
from radbridge.mappings.results import result_from_json
from radbridge.qa.reading import DEFAULT_RULES, Call
from tests.engine_harness import Harness, channel, harness
from tests.inference_support import index_series, make_cards, service
from tests.test_correlation import ORDERED_STUDY, _correlate, _order

ROOT = Path(__file__).resolve().parents[1]
ORU_FINAL = ROOT / "samples" / "hl7" / "oru_r01_final.hl7"
FHIR_FINAL = ROOT / "samples" / "fhir" / "diagnostic_report_final.json"
ACCESSION = "ACC26120001"
HEMORRHAGE = ("SCT", "274100004")
FRACTURE = ("SCT", "72704001")
REPORTED = datetime(2026, 12, 1, 15, 15, tzinfo=UTC)
"""OBR-22 of the sample, 10:15 at -0500."""


@pytest.fixture
def h(database, tmp_path):
    with harness(database, tmp_path, [channel("dicom-in")]) as made:
        yield made


async def _nothing_handed_on(inbound: Inbound) -> Receipt:
    raise AssertionError("the qa-reports destination hands nothing on")


def sink(h: Harness, tmp_path: Path, **options: Any) -> QaReportSink:
    config = QaReportsDestination.model_validate({"name": "qa", "type": "qa-reports",
                                                  **options})
    context = AdapterContext(tmp_path, h.blobs, 1024, _nothing_handed_on, h.database)
    return QaReportSink(config, context)


def delivery(content: bytes, message_id: int = 11, *,
             content_type: str = "application/hl7-v2") -> OutboundDelivery:
    now = datetime.now(UTC)
    return OutboundDelivery(message_id, message_id, f"m{message_id}", "hl7-in", "qa", 1, 1,
                            f"k{message_id}", content_type, content, None, len(content), now,
                            now, patient_id="MRN100234", accession=ACCESSION)


def send(h: Harness, tmp_path: Path, content: bytes, message_id: int = 11,
         **options: Any) -> str:
    content_type = options.pop("content_type", "application/hl7-v2")
    sent = asyncio.run(sink(h, tmp_path, **options).send(
        delivery(content, message_id, content_type=content_type)))
    return sent.detail


def sample(**replace: str) -> bytes:
    text = ORU_FINAL.read_text(encoding="utf-8")
    for old, new in replace.items():
        text = text.replace(old, new)
    return text.encode("utf-8")


def oru(*lines: str, status: str = "F", coded: str | None = None, accession: str = ACCESSION,
        reported: str = "20261201101500-0500", study_uid: str | None = None) -> bytes:
    """A RIS final report: the lines as TX OBX, an optional coded hemorrhage OBX
    (OBX-5 as given) and Study Instance UID OBX."""
    segments = [
        "MSH|^~\\&|NW_RIS|NORTHWIND|RADBRIDGE|NORTHWIND|20261201101500-0500||ORU^R01^ORU_R01"
        "|NW-RIS-T|P|2.5.1",
        "PID|1||MRN100234^^^NORTHWIND^MR||MORGAN^ALEX||19720415|F",
        "ORC|RE|PLC5001^NW_EHR|FIL9001^NW_RIS||CM",
        f"OBR|1|PLC5001^NW_EHR|FIL9001^NW_RIS|CTHEADWO^CT HEAD^NWRAD||||||||||||||{accession}"
        f"||||{reported}|||{status}",
    ]
    for number, line in enumerate(lines, 1):
        segments.append(f"OBX|{number}|TX|18782-3^Report^LN|1|{line}||||||{status}")
    if coded is not None:
        segments.append(f"OBX|90|CWE|274100004^Cerebral hemorrhage^SCT|2|{coded}||||||{status}")
    if study_uid is not None:
        segments.append(f"OBX|91|ST|110180^Study Instance UID^DCM||{study_uid}||||||{status}")
    return ("\r".join(segments) + "\r").encode("utf-8")


def reads(h: Harness) -> dict[tuple[str, str], QaRead]:
    with h.database.read() as session:
        return {(r.finding_system, r.finding_code): r
                for r in session.execute(select(QaRead)).scalars()}


def all_reads(h: Harness) -> list[QaRead]:
    with h.database.read() as session:
        return list(session.execute(select(QaRead).order_by(QaRead.id)).scalars())


def agreement(h: Harness) -> list[tuple[str, bool, bool | None]]:
    """The join the QA queries make: (study, AI positive, radiologist positive)."""
    with h.database.read() as session:
        return [tuple(row) for row in session.execute(
            select(QaObservation.study_uid, QaObservation.ai_positive,
                   QaRead.radiologist_positive)
            .join(QaRead, (QaRead.study_uid == QaObservation.study_uid)
                  & (QaRead.finding_system == QaObservation.finding_system)
                  & (QaRead.finding_code == QaObservation.finding_code))
            .where(QaRead.radiologist_positive.is_not(None)))]


def qa_events(h: Harness) -> list[AuditEvent]:
    with h.database.read() as session:
        return list(session.execute(select(AuditEvent).where(
            AuditEvent.action == "qa.report").order_by(AuditEvent.seq)).scalars())


def study_with_ai_result(h: Harness, tmp_path: Path, accession: str = ACCESSION) -> str:
    """A CT study indexed with `accession` and run through the toy model (positive)."""
    study_uid = index_series(h, tmp_path / "study", AccessionNumber=accession)
    runner = service(h, make_cards(tmp_path))
    plan = runner.plan(study_uid, 1)
    for assignment in plan.routing.assignments:
        runner.run(plan, assignment)
    return study_uid


# --- HL7 v2 ---------------------------------------------------------------------------------

def test_a_final_oru_with_a_coded_obx_gives_a_coded_read_on_the_study_by_accession(
        h, tmp_path):
    study_uid = study_with_ai_result(h, tmp_path)
    detail = send(h, tmp_path, ORU_FINAL.read_bytes())
    assert detail == f"6 finding(s) read (1 coded), 6 stored, study {study_uid}"
    found = reads(h)
    assert set(found) == {(r.system, r.code) for r in DEFAULT_RULES}
    hemorrhage = found[HEMORRHAGE]
    assert (hemorrhage.study_uid, hemorrhage.accession, hemorrhage.call, hemorrhage.source,
            hemorrhage.radiologist_positive) == (study_uid, ACCESSION, "positive", "coded",
                                                 True)
    assert (hemorrhage.report_status, hemorrhage.reported_at, hemorrhage.message_id) == (
        "F", REPORTED, 11)
    # "No skull fracture." in the findings (the impression does not mention it)
    assert (found[FRACTURE].call, found[FRACTURE].source,
            found[FRACTURE].radiologist_positive) == ("negative", "text", False)
    # a pulmonary embolism is not mentioned: counted negative by the default rule
    assert (found[("SCT", "59282003")].call,
            found[("SCT", "59282003")].radiologist_positive) == ("not_mentioned", False)
    assert agreement(h) == [(study_uid, True, True)]
    [event] = qa_events(h)
    assert (event.message_id, event.accession, event.study_uid, event.patient_id) == (
        11, ACCESSION, study_uid, "MRN100234")
    assert json.loads(event.detail) == {"status": "F", "studies": [study_uid],
                                        "waiting": False, "findings": 6, "coded": 1,
                                        "stored": 6}


def test_a_text_only_report_is_read_with_negation(h, tmp_path):
    study_uid = index_series(h, tmp_path / "study", AccessionNumber=ACCESSION)
    send(h, tmp_path, oru("FINDINGS: The ventricles are normal in size.",
                          "IMPRESSION: No evidence of hemorrhage."))
    hemorrhage = reads(h)[HEMORRHAGE]
    assert (hemorrhage.study_uid, hemorrhage.call, hemorrhage.source,
            hemorrhage.radiologist_positive) == (study_uid, "negative", "text", False)
    send(h, tmp_path, oru("IMPRESSION: Possible small subdural hemorrhage.",
                          reported="20261201120000-0500"), message_id=12)
    uncertain = reads(h)[HEMORRHAGE]  # uncertain stays uncertain: out of the 2x2 table
    assert (uncertain.call, uncertain.radiologist_positive) == ("uncertain", None)


def test_a_report_before_the_study_waits_by_accession_and_joins_the_ai_result(h, tmp_path):
    detail = send(h, tmp_path, ORU_FINAL.read_bytes())
    assert detail.endswith("waiting for its study by accession")
    waiting = reads(h)[HEMORRHAGE]
    assert (waiting.study_uid, waiting.accession) == (f"acc:{ACCESSION}", ACCESSION)
    assert agreement(h) == []
    [event] = qa_events(h)
    assert (event.study_uid, json.loads(event.detail)["waiting"]) == (None, True)
    study_uid = study_with_ai_result(h, tmp_path)  # images, then the AI result
    moved = all_reads(h)
    assert {r.study_uid for r in moved} == {study_uid} and len(moved) == len(DEFAULT_RULES)
    assert agreement(h) == [(study_uid, True, True)]


def test_a_report_is_placed_through_the_order_its_study_is_linked_to(h, tmp_path):
    """The images carry another accession than the order; correlation linked them by the
    order's Study Instance UID, and the report names the order's accession."""
    index_series(h, tmp_path / "study", study_uid=ORDERED_STUDY, patient_id="MRN100999",
                 AccessionNumber="MODALITY-7")
    _order(h)
    _correlate(h, ORDERED_STUDY)
    send(h, tmp_path, ORU_FINAL.read_bytes())
    assert {r.study_uid for r in all_reads(h)} == {ORDERED_STUDY}
    # by the filler order number (OBR-3) when OBR-18 is empty
    send(h, tmp_path, sample(**{f"||{ACCESSION}||": "||||"}), message_id=12)
    assert {(r.study_uid, r.message_id) for r in all_reads(h)} == {(ORDERED_STUDY, 12)}


def test_a_waiting_report_moves_onto_its_study_when_a_later_report_finds_it(h, tmp_path):
    send(h, tmp_path, oru("IMPRESSION: No fracture.", accession="ACC-X"))
    study_uid = index_series(h, tmp_path / "study", AccessionNumber="ACC-X")
    send(h, tmp_path, oru("IMPRESSION: Acute hemorrhage.", accession="ACC-X",
                          reported="20261201120000-0500"), message_id=12)
    found = reads(h)
    assert {r.study_uid for r in all_reads(h)} == {study_uid}
    assert (found[HEMORRHAGE].call, found[FRACTURE].call) == ("positive", "not_mentioned")
    assert {r.message_id for r in all_reads(h)} == {12}


def test_a_corrected_final_replaces_the_read_and_an_older_report_does_not(h, tmp_path):
    study_uid = study_with_ai_result(h, tmp_path)
    send(h, tmp_path, ORU_FINAL.read_bytes())
    corrected = oru("ADDENDUM: On review, no evidence of hemorrhage; the density is a "
                    "vessel.", status="C", reported="20261201140000-0500")
    assert send(h, tmp_path, corrected, message_id=12).endswith(f"study {study_uid}")
    hemorrhage = reads(h)[HEMORRHAGE]
    assert (hemorrhage.call, hemorrhage.source, hemorrhage.report_status,
            hemorrhage.message_id) == ("negative", "text", "C", 12)
    assert len(all_reads(h)) == len(DEFAULT_RULES)  # replaced, not added
    assert agreement(h) == [(study_uid, True, False)]
    # the first final delivered again (a replay) is older: it changes nothing
    assert "0 stored" in send(h, tmp_path, ORU_FINAL.read_bytes(), message_id=13)
    assert reads(h)[HEMORRHAGE].message_id == 12


def test_a_report_of_another_order_on_the_same_study_does_not_erase_a_mention(h, tmp_path):
    """One study, two orders (a grouped procedure): each report names its own accession;
    the one that does not mention the finding keeps the other's call."""
    study = "1.2.826.0.1.3680043.10.1234.777"
    send(h, tmp_path, oru("IMPRESSION: Acute subdural hematoma.", study_uid=study,
                          accession="ACC-HEAD"))
    send(h, tmp_path, oru("IMPRESSION: Normal neck CT angiogram.", study_uid=study,
                          accession="ACC-NECK", reported="20261201110000-0500"), 12)
    assert (reads(h)[HEMORRHAGE].call, reads(h)[HEMORRHAGE].accession) == (
        "positive", "ACC-HEAD")
    send(h, tmp_path, oru("IMPRESSION: No hemorrhage.", study_uid=study,
                          accession="ACC-NECK", reported="20261201120000-0500"), 13)
    assert (reads(h)[HEMORRHAGE].call, reads(h)[HEMORRHAGE].accession) == (
        "negative", "ACC-NECK")


def test_preliminary_reports_other_messages_and_our_own_ai_results_are_ignored(h, tmp_path):
    preliminary = sample(**{"||CT|F|": "||CT|P|"})
    assert send(h, tmp_path, preliminary) == (
        "ORU^R01 with result status P (OBR-25) is not a final report; ignored")
    adt = (ROOT / "samples" / "hl7" / "adt_a01_admit.hl7").read_bytes()
    assert send(h, tmp_path, adt) == "ADT^A01 is not a report; ignored"
    document = json.loads((ROOT / "samples" / "results" / "ich-negative.json").read_text())
    document.update(status="corrected", revision=1, revision_reason="new images")
    own = build_oru_r01(result_from_json(document)).encode("utf-8")
    assert "|C|" in own.decode() and send(h, tmp_path, own).endswith(
        "not a radiologist's report; ignored")
    assert all_reads(h) == [] and qa_events(h) == []


@pytest.mark.parametrize("content", [
    b"this is not a message",
    b"MSH|^~\\&|NW_RIS|NORTHWIND\rPID|1||X",
    b'{"resourceType": "DiagnosticReport", "status": "final"',  # cut short
    b'["not", "a", "resource"]',
], ids=["text", "short-msh", "broken-json", "json-array"])
def test_content_that_cannot_be_read_is_a_permanent_failure(h, tmp_path, content):
    with pytest.raises(PermanentDeliveryError, match="not a readable final report"):
        send(h, tmp_path, content, content_type="application/octet-stream")
    assert all_reads(h) == []


def test_a_report_naming_no_study_and_no_accession_is_a_permanent_failure(h, tmp_path):
    nameless = oru("IMPRESSION: Acute hemorrhage.", accession="").replace(
        b"PLC5001^NW_EHR|FIL9001^NW_RIS", b"PLC5001^NW_EHR|")
    with pytest.raises(PermanentDeliveryError, match="cannot be placed"):
        send(h, tmp_path, nameless)
    bad_uid = oru("IMPRESSION: Acute hemorrhage.", study_uid="1.2.x")
    with pytest.raises(PermanentDeliveryError, match=r"OBX-5 \(Study Instance UID\)"):
        send(h, tmp_path, bad_uid)
    assert all_reads(h) == []


# --- FHIR -----------------------------------------------------------------------------------

def fhir_sample() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(FHIR_FINAL.read_text(encoding="utf-8"))
    return loaded


def test_a_final_fhir_diagnostic_report_gives_reads_on_its_imaging_study(h, tmp_path):
    detail = send(h, tmp_path, FHIR_FINAL.read_bytes(), content_type="application/fhir+json")
    assert detail == f"6 finding(s) read (1 coded), 6 stored, study {ORDERED_STUDY}"
    found = reads(h)
    assert (found[HEMORRHAGE].study_uid, found[HEMORRHAGE].call, found[HEMORRHAGE].source,
            found[HEMORRHAGE].report_status) == (ORDERED_STUDY, "positive", "coded", "F")
    assert found[HEMORRHAGE].reported_at == REPORTED  # issued
    assert found[HEMORRHAGE].accession == ACCESSION  # the ACSN identifier
    assert (found[FRACTURE].call, found[FRACTURE].source) == ("negative", "text")


def test_a_corrected_fhir_report_in_a_bundle_is_placed_by_its_service_request(h, tmp_path):
    study_uid = index_series(h, tmp_path / "study", AccessionNumber=ACCESSION)
    report = fhir_sample()
    for name in ("imagingStudy", "identifier", "contained", "result", "presentedForm"):
        del report[name]
    report.update(status="corrected", issued="2026-12-01T16:00:00Z",
                  conclusion="No evidence of intracranial hemorrhage.",
                  basedOn=[{"reference": "urn:uuid:order-1"}],
                  conclusionCode=[{"coding": [{"system": "http://snomed.info/sct",
                                               "code": "72704001"}]}])
    order = {"resourceType": "ServiceRequest", "status": "completed", "intent": "order",
             "subject": {"display": "x"}, "identifier": [{
                 "type": {"coding": [{"code": "ACSN"}]}, "value": ACCESSION}]}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:report-1", "resource": report},
        {"fullUrl": "urn:uuid:order-1", "resource": order}]}
    send(h, tmp_path, json.dumps(bundle).encode(), content_type="application/json")
    found = reads(h)
    assert (found[HEMORRHAGE].study_uid, found[HEMORRHAGE].call, found[HEMORRHAGE].source,
            found[HEMORRHAGE].report_status) == (study_uid, "negative", "text", "C")
    assert (found[FRACTURE].call, found[FRACTURE].source) == ("positive", "coded")


def test_fhir_reports_that_are_not_final_and_other_resources_are_ignored(h, tmp_path):
    preliminary = fhir_sample() | {"status": "preliminary"}
    assert send(h, tmp_path, json.dumps(preliminary).encode()) == (
        "DiagnosticReport with status preliminary is not a final report; ignored")
    patient = {"resourceType": "Patient", "id": "p1"}
    assert send(h, tmp_path, json.dumps(patient).encode()) == (
        "Patient holds no DiagnosticReport; ignored")
    assert all_reads(h) == []


def test_fhir_narrative_is_read_when_there_is_no_plain_text_form():
    report = fhir_sample()
    del report["presentedForm"], report["conclusion"], report["contained"], report["result"]
    report["text"] = {"status": "generated", "div": (
        '<div xmlns="http://www.w3.org/1999/xhtml"><p>FINDINGS: Scalp swelling &amp; no '
        "skull fracture.</p><p>IMPRESSION:<br/>Small subdural hematoma.</p></div>")}
    parsed = read_report(json.dumps(report).encode())
    assert not isinstance(parsed, NotFinal)
    calls = {(r.finding_system, r.finding_code): r.call for r in reads_of(parsed, DEFAULT_RULES)}
    assert (calls[HEMORRHAGE], calls[FRACTURE]) == (Call.POSITIVE, Call.NEGATIVE)
    bad = copy.deepcopy(fhir_sample())
    bad["presentedForm"][0]["data"] = base64.b64encode(b"\xff\xfe").decode()
    with pytest.raises(ValueError, match=r"presentedForm\.data"):
        read_report(json.dumps(bad).encode())


# --- rules and privacy ----------------------------------------------------------------------

def test_the_destination_reads_its_rules_and_the_findings_the_study_has(h, tmp_path):
    study_uid = study_with_ai_result(h, tmp_path)
    rules = {"findings": [{"code": "36118008", "display": "Pneumothorax",
                           "keywords": ["pneumothorax", "PTX"]}]}
    send(h, tmp_path, oru("IMPRESSION: Small left apical PTX. No hemorrhage."), rules=rules)
    found = reads(h)
    # the configured rule, plus the study's AI finding read by its default rule
    assert set(found) == {("SCT", "36118008"), HEMORRHAGE}
    assert (found[("SCT", "36118008")].call, found[HEMORRHAGE].call) == (
        "positive", "negative")
    assert agreement(h) == [(study_uid, True, False)]


def test_rules_are_checked_when_the_channel_loads():
    with pytest.raises(ValidationError, match=r"findings\[0\]\.keywords"):
        QaReportsDestination.model_validate({
            "name": "qa", "type": "qa-reports",
            "rules": {"findings": [{"code": "36118008", "display": "Pneumothorax"}]}})


def test_no_report_text_or_patient_data_reaches_the_logs(h, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    study_with_ai_result(h, tmp_path)
    send(h, tmp_path, ORU_FINAL.read_bytes())
    send(h, tmp_path, oru("IMPRESSION: Secretword hemorrhage.", status="P"), message_id=12)
    with pytest.raises(PermanentDeliveryError) as failed:
        send(h, tmp_path, oru("IMPRESSION: Secretword hemorrhage.", study_uid="9.x.SECRET"),
             message_id=13)
    with h.database.read() as session:
        details = " ".join(e.detail for e in session.execute(select(AuditEvent)).scalars())
    for secret in ("MORGAN", "19720415", "hematoma", "Secretword", "SECRET", "frontoparietal"):
        assert secret not in caplog.text
        assert secret not in str(failed.value)
        assert secret not in details
    assert "final report of message 11" in caplog.text  # logged, by id


def test_the_shipped_channels_send_reports_to_qa_and_only_reports(database, tmp_path):
    loaded = {item.config.name: item.config
              for item in load_channel_files([DEFAULT_DIR], env={})}
    hl7_in, ehr_reports = loaded["hl7-in"], loaded["ehr-reports"]
    assert (ehr_reports.source.type, ehr_reports.destination("qa").type) == (
        "http", "qa-reports")
    with harness(database, tmp_path, [hl7_in]) as made:
        report = made.receive(ORU_FINAL.read_bytes(), content_type="application/hl7-v2",
                              metadata={"hl7.type": "ORU^R01"}).message_id
        admit = made.receive((ROOT / "samples" / "hl7" / "adt_a01_admit.hl7").read_bytes(),
                             content_type="application/hl7-v2",
                             metadata={"hl7.type": "ADT^A01"}).message_id
        made.process_all()
        assert {d.destination for d in made.deliveries(report)} == {"registry", "qa"}
        assert {d.destination for d in made.deliveries(admit)} == {"registry"}
