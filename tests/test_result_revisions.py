"""Changes after a result went out: the results ledger and the revisions it owes.

A result is published (the results destination), then the registry destination applies
a message that changes the facts: an order cancelled (withdrawn: the result JSON with
status withdrawn, a rejection note for the SR and SEG), a patient updated or merged
(corrected, with the patient as now; nothing new for the PACS). New images (a newer
study version) correct the result and replace the PACS objects. Each revision goes out
once, survives a failure between the commit and the hand-on, and is audited.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pydicom
import pytest
from sqlalchemy import select

from radbridge.engine.adapters import AdapterContext
from radbridge.engine.config import RegistryDestination, ResultsDestination
from radbridge.engine.models import AuditEvent, PublishedResult
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.engine.registry.destination import RegistrySink
from radbridge.engine.results.destination import ResultsPublisher
from radbridge.errors import TransientDeliveryError
from radbridge.mappings.results import AiResult, ResultStatus, result_from_json
from tests.engine_harness import channel, harness
from tests.inference_support import index_series, make_cards, service
from tests.test_correlation import ORDERED_STUDY, SAMPLES, _correlate, _order

ACCESSION = "ACC26120001"
AIMED = {"HC998877^^^ONTARIO-HC^HC~MRN100234": "MRN100999"}
"""Turns the ADT samples' patient into the test study's patient (MRN100999)."""


class Recorder:
    """The context's `receive`: keeps what is handed on; can fail once, like a crash."""

    def __init__(self) -> None:
        self.received: list[Inbound] = []
        self.fail_next = False
        self._seen: set[str] = set()

    async def __call__(self, inbound: Inbound) -> Receipt:
        if self.fail_next:
            self.fail_next = False
            raise OSError("store unavailable")
        duplicate = inbound.dedup_key in self._seen
        if not duplicate:
            self._seen.add(inbound.dedup_key or "")
            self.received.append(inbound)
        return Receipt(len(self.received), f"u{len(self.received)}", duplicate)

    def take(self) -> list[Inbound]:
        taken, self.received = self.received, []
        return taken


@pytest.fixture
def h(database, tmp_path):
    with harness(database, tmp_path, [channel("dicom-in")]) as made:
        yield made


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def context(h, tmp_path, recorder: Recorder) -> AdapterContext:
    return AdapterContext(tmp_path, h.blobs, 1024, recorder, h.database)


def publisher(h, tmp_path, recorder, **options: Any) -> ResultsPublisher:
    config = ResultsDestination.model_validate({
        "name": "publish", "type": "results", "results_channel": "ai-results",
        "pacs_channel": "pacs-out", **options})
    return ResultsPublisher(config, context(h, tmp_path, recorder))


def finished(study_uid: str, version: int) -> OutboundDelivery:
    now = datetime.now(UTC)
    content = json.dumps({"study_uid": study_uid, "version": version}).encode()
    return OutboundDelivery(1, 1, f"m{version}", "inference-done", "publish", 1, 1, "k",
                            "application/json", content, None, len(content), now, now)


def hl7_delivery(sample: str, uid: str, **replace: str) -> OutboundDelivery:
    text = (SAMPLES / f"{sample}.hl7").read_text(encoding="utf-8")
    for old, new in replace.items():
        text = text.replace(old, new)
    content = text.encode("utf-8")
    now = datetime.now(UTC)
    return OutboundDelivery(7, 7, uid, "hl7-in", "registry", 1, 1, uid, "application/hl7-v2",
                            content, None, len(content), now, now)


def registry(h, tmp_path, recorder) -> RegistrySink:
    config = RegistryDestination.model_validate({"name": "registry", "type": "registry"})
    return RegistrySink(config, context(h, tmp_path, recorder))


def run_models(h, cards, study_uid: str, version: int) -> None:
    runner = service(h, cards)
    plan = runner.plan(study_uid, version)
    runner.record_skipped(plan)
    for assignment in plan.routing.assignments:
        runner.run(plan, assignment)


def published(h, tmp_path, recorder, **options: Any) -> list[Inbound]:
    """The ordered head CT, linked, run and published: [result, SR, SEG]."""
    cards = make_cards(tmp_path)
    index_series(h, tmp_path / "study", study_uid=ORDERED_STUDY, patient_id="MRN100999",
                 AccessionNumber=ACCESSION)
    _order(h)
    _correlate(h, ORDERED_STUDY)
    run_models(h, cards, ORDERED_STUDY, 1)
    asyncio.run(publisher(h, tmp_path, recorder, **options).send(finished(ORDERED_STUDY, 1)))
    return recorder.take()


def result_of(inbound: Inbound) -> AiResult:
    return result_from_json(json.loads(inbound.content or b""))


def ledger_row(h) -> PublishedResult:
    with h.database.read() as session:
        return session.execute(select(PublishedResult)).scalar_one()


def test_the_first_publication_is_revision_0_with_its_objects_in_the_ledger(h, tmp_path,
                                                                           recorder):
    result, sr, seg = published(h, tmp_path, recorder)
    first = result_of(result)
    assert (first.status, first.revision) == (ResultStatus.PRELIMINARY, 0)
    assert result.dedup_key == f"result/{first.result_id}"
    row = ledger_row(h)
    assert (row.result_id, row.revision, row.state, row.pending) == (
        first.result_id, 0, "sent", None)
    assert [o["sop_instance_uid"] for o in row.dicom_objects] == [
        sr.metadata["sop_instance_uid"], seg.metadata["sop_instance_uid"]]


def test_a_cancelled_order_withdraws_the_result_and_rejects_its_pacs_objects(h, tmp_path,
                                                                            recorder):
    result, sr, seg = published(h, tmp_path, recorder)
    first = result_of(result)
    cancel = hl7_delivery("orm_o01_ca", "ca-1", **{
        "HC998877^^^ONTARIO-HC^HC~MRN100234": "MRN100999", "PLC5002": "PLC5001",
        "FIL9002": "FIL9001", "ACC26120002": ACCESSION})
    sent = asyncio.run(registry(h, tmp_path, recorder).send(cancel))
    assert "1 result revision(s) sent" in sent.detail
    revised, note = recorder.take()
    withdrawn = result_of(revised)
    assert (withdrawn.status, withdrawn.revision) == (ResultStatus.WITHDRAWN, 1)
    assert withdrawn.result_id == first.result_id  # same business identifiers
    assert withdrawn.revision_reason == "order cancelled"
    assert not withdrawn.emergent_findings  # no STAT update for a withdrawn result
    assert revised.dedup_key == f"result/{first.result_id}/r1"
    assert (note.channel, note.metadata["kind"]) == ("pacs-out", "kos")
    assert note.blob is not None
    kos = pydicom.dcmread(h.blobs.path(note.blob.sha256))
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113037"
    listed = {item.ReferencedSOPInstanceUID
              for study in kos.CurrentRequestedProcedureEvidenceSequence
              for series in study.ReferencedSeriesSequence
              for item in series.ReferencedSOPSequence}
    assert listed == {sr.metadata["sop_instance_uid"], seg.metadata["sop_instance_uid"]}
    row = ledger_row(h)
    assert (row.revision, row.state, row.pending, row.dicom_objects) == (1, "withdrawn", None,
                                                                         [])
    with h.database.read() as session:
        [event] = session.execute(select(AuditEvent).where(
            AuditEvent.action == "result.withdrawn")).scalars()
    assert (event.patient_id, event.accession, event.study_uid) == (
        "MRN100999", ACCESSION, ORDERED_STUDY)
    assert json.loads(event.detail)["revision"] == 1
    asyncio.run(registry(h, tmp_path, recorder).send(cancel))  # redelivered: nothing more
    assert recorder.take() == []


def test_a_failure_after_the_commit_sends_the_same_revision_on_redelivery(h, tmp_path,
                                                                          recorder):
    published(h, tmp_path, recorder)
    cancel = hl7_delivery("orm_o01_ca", "ca-2", **{
        "HC998877^^^ONTARIO-HC^HC~MRN100234": "MRN100999", "PLC5002": "PLC5001",
        "FIL9002": "FIL9001", "ACC26120002": ACCESSION})
    recorder.fail_next = True
    with pytest.raises(OSError):
        asyncio.run(registry(h, tmp_path, recorder).send(cancel))
    assert ledger_row(h).pending == "withdraw"  # the mark committed with the cancel
    asyncio.run(registry(h, tmp_path, recorder).send(cancel))
    revised, _note = recorder.take()
    assert revised.dedup_key.endswith("/r1")
    assert (ledger_row(h).state, ledger_row(h).pending) == ("withdrawn", None)


def test_a_demographic_update_corrects_the_result_once(h, tmp_path, recorder):
    [result, *_objects] = published(h, tmp_path, recorder)
    first = result_of(result)
    asyncio.run(registry(h, tmp_path, recorder).send(
        hl7_delivery("adt_a08_update", "a08-1", **AIMED)))
    [revised] = recorder.take()  # nothing for the PACS: its images did not change
    corrected = result_of(revised)
    assert (corrected.status, corrected.revision) == (ResultStatus.CORRECTED, 1)
    assert corrected.revision_reason == "patient demographics updated (ADT A08)"
    assert (corrected.patient.family, corrected.patient.given) == ("MORGAN-LÓPEZ", "ALEXIS")
    assert (first.patient.family, corrected.patient.identifier) == ("TRAUMA", "MRN100999")
    assert corrected.findings == first.findings
    # the same demographics again (a new message): nothing sent changes, no revision
    asyncio.run(registry(h, tmp_path, recorder).send(hl7_delivery(
        "adt_a08_update", "a08-2", **AIMED, **{"NW-ADT-0006": "NW-ADT-0007"})))
    assert recorder.take() == []
    assert ledger_row(h).revision == 1


def test_a_merge_corrects_the_result_to_the_surviving_patient(h, tmp_path, recorder):
    published(h, tmp_path, recorder)  # MRN100999, which the A40 sample merges away
    asyncio.run(registry(h, tmp_path, recorder).send(hl7_delivery("adt_a40_merge", "a40")))
    [revised] = recorder.take()
    corrected = result_of(revised)
    assert corrected.status is ResultStatus.CORRECTED
    assert corrected.revision_reason == "patient merged (ADT A40)"
    assert (corrected.patient.identifier, corrected.patient.family) == ("MRN100234", "MORGAN")


def test_a_site_can_turn_patient_corrections_off(h, tmp_path, recorder):
    published(h, tmp_path, recorder, correct_on_patient_change=False)
    asyncio.run(registry(h, tmp_path, recorder).send(
        hl7_delivery("adt_a08_update", "a08-off", **AIMED)))
    assert recorder.take() == []
    assert (ledger_row(h).revision, ledger_row(h).pending) == (0, None)


def test_new_images_correct_the_result_and_replace_what_the_pacs_holds(h, tmp_path,
                                                                      recorder):
    result, sr, _seg = published(h, tmp_path, recorder)
    first = result_of(result)
    run_models(h, tmp_path / "cards", ORDERED_STUDY, 2)  # the study's version 2
    sent = asyncio.run(publisher(h, tmp_path, recorder).send(finished(ORDERED_STUDY, 2)))
    assert "1 correcting earlier ones" in sent.detail
    revised, new_sr, new_seg, note = recorder.take()
    corrected = result_of(revised)
    assert (corrected.result_id, corrected.revision, corrected.status) == (
        first.result_id, 1, ResultStatus.CORRECTED)
    assert corrected.revision_reason == "new images"
    assert [new_sr.metadata["kind"], new_seg.metadata["kind"], note.metadata["kind"]] == [
        "sr", "seg", "kos"]
    assert new_sr.metadata["sop_instance_uid"] != sr.metadata["sop_instance_uid"]
    assert new_sr.blob is not None and note.blob is not None
    report = pydicom.dcmread(h.blobs.path(new_sr.blob.sha256))
    [predecessor] = [item.ReferencedSOPInstanceUID
                     for study in report.PredecessorDocumentsSequence
                     for series in study.ReferencedSeriesSequence
                     for item in series.ReferencedSOPSequence]
    assert predecessor == sr.metadata["sop_instance_uid"]
    kos = pydicom.dcmread(h.blobs.path(note.blob.sha256))
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113001"
    row = ledger_row(h)
    assert [o["sop_instance_uid"] for o in row.dicom_objects] == [
        new_sr.metadata["sop_instance_uid"], new_seg.metadata["sop_instance_uid"]]
    # the version-1 delivery tried again late: superseded, nothing handed on
    late = asyncio.run(publisher(h, tmp_path, recorder).send(finished(ORDERED_STUDY, 1)))
    assert recorder.take() == [] and late.detail.startswith("0 result(s)")
    with h.database.read() as session:
        assert session.execute(select(AuditEvent.action).where(
            AuditEvent.action == "result.corrected")).scalars().all() == ["result.corrected"]


def test_study_only_results_go_out_at_once_and_are_corrected_when_the_order_comes(
        h, tmp_path, recorder):
    cards = make_cards(tmp_path)
    study_uid = index_series(h, tmp_path / "study", patient_id="MRN100999",
                             AccessionNumber=ACCESSION)  # the modality's own Study UID
    run_models(h, cards, study_uid, 1)
    _correlate(h, study_uid)  # no order yet: unmatched
    sent = asyncio.run(publisher(h, tmp_path, recorder, unlinked="study-only").send(
        finished(study_uid, 1)))
    assert sent.detail.startswith("1 result(s)")
    result, sr, _seg = recorder.take()
    first = result_of(result)
    assert first.result_id.endswith("-s") and first.order.accession == ACCESSION
    assert (first.order.procedure.code, first.order.placer_number) == ("UNKNOWN", None)
    assert first.patient.identifier == "MRN100999"
    assert sr.metadata["kind"] == "sr"
    assert ledger_row(h).order_id is None
    # the order arrives over the registry: linked by accession, the result corrected
    asyncio.run(registry(h, tmp_path, recorder).send(hl7_delivery("orm_o01_nw", "nw-1")))
    [revised] = recorder.take()
    corrected = result_of(revised)
    assert (corrected.result_id, corrected.revision, corrected.status) == (
        first.result_id, 1, ResultStatus.CORRECTED)
    assert corrected.revision_reason == "linked to its order"
    assert (corrected.order.placer_number, corrected.order.procedure.code) == (
        "PLC5001", "CTHEADWO")
    row = ledger_row(h)
    assert row.order_id is not None and row.result_key.endswith(f"/{row.order_id}/toy-ct")


def test_study_only_holds_a_study_whose_header_has_no_accession(h, tmp_path, recorder):
    cards = make_cards(tmp_path)
    study_uid = index_series(h, tmp_path / "study", patient_id="MRN100999",
                             AccessionNumber="")
    run_models(h, cards, study_uid, 1)
    _correlate(h, study_uid)
    with pytest.raises(TransientDeliveryError, match="lacks the PatientID or AccessionNumber"):
        asyncio.run(publisher(h, tmp_path, recorder, unlinked="study-only").send(
            finished(study_uid, 1)))
    assert recorder.take() == []
