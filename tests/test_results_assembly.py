"""Results assembled from the store: a finished run on a study linked to its order gives
one result with the order, the surviving patient, the study's series and a draft report;
a study without an order waits; a study decided to have none gets nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pydicom
import pytest

from radbridge.engine.adapters import AdapterContext
from radbridge.engine.config import ResultsDestination
from radbridge.engine.correlation.service import reject_by_hand
from radbridge.engine.models import ReconciliationItem
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.engine.results.assemble import NoOrder, NotLinked, results_for
from radbridge.engine.results.destination import ResultsPublisher
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError
from radbridge.mappings.results import PRELIMINARY_NOTICE, result_from_json, result_to_json
from tests.engine_harness import channel, harness
from tests.inference_support import index_series, make_cards, service
from tests.test_correlation import ORDERED_STUDY, _correlate, _order

CHAIN = "test/results"


@pytest.fixture
def cards_dir(tmp_path):
    return make_cards(tmp_path)


@pytest.fixture
def h(database, tmp_path):
    with harness(database, tmp_path, [channel("dicom-in")]) as made:
        yield made


def run_models(h, cards, study_uid: str) -> None:
    runner = service(h, cards)
    plan = runner.plan(study_uid, 1)
    runner.record_skipped(plan)
    for assignment in plan.routing.assignments:
        runner.run(plan, assignment)


def test_a_linked_study_gives_one_result_per_finished_run_and_order(h, cards_dir, tmp_path):
    index_series(h, tmp_path / "study", study_uid=ORDERED_STUDY, patient_id="MRN100999",
                 AccessionNumber="ACC26120001")
    _order(h)
    assert _correlate(h, ORDERED_STUDY).order_ids
    run_models(h, cards_dir, ORDERED_STUDY)
    with h.database.read() as session:
        [source] = results_for(session, ORDERED_STUDY, 1, endpoint="http://pacs/dicom-web")
    result = source.result
    assert (result.patient.identifier, result.patient.issuer) == ("MRN100999", "NORTHWIND")
    assert (result.patient.family, result.patient.given) == ("TRAUMA", "ZULU")
    assert result.order.accession == "ACC26120001"
    assert result.order.procedure.code == "CTHEADWO"
    assert result.model.name == "toy-ct" and result.model.demonstration
    [finding] = result.findings
    assert finding.positive and finding.location is not None
    assert result.study is not None and result.study.endpoint == "http://pacs/dicom-web"
    [series] = result.study.series
    assert len(series.instances) == 10 and result.series_uids == (series.series_uid,)
    assert result.report_text.startswith(PRELIMINARY_NOTICE)
    assert "toy-ct 0.1.0" in result.report_text
    assert result_from_json(result_to_json(result)) == result
    with h.database.read() as session:  # assembled again: the same result, same id
        [again] = results_for(session, ORDERED_STUDY, 1, endpoint="http://pacs/dicom-web")
    assert again.result == result


def test_a_study_without_an_order_waits_and_one_decided_to_have_none_gets_nothing(
        h, cards_dir, tmp_path):
    study_uid = index_series(h, tmp_path / "study", patient_id="NOBODY",
                             AccessionNumber="NO-SUCH")
    run_models(h, cards_dir, study_uid)
    _correlate(h, study_uid)  # unmatched: queued
    with h.database.read() as session, pytest.raises(NotLinked):
        results_for(session, study_uid, 1)
    with h.database.write() as session:
        item = session.query(ReconciliationItem).filter_by(study_uid=study_uid).one()
        reject_by_hand(session, item.id, actor="test", note="no order", chain=CHAIN)
    with h.database.read() as session, pytest.raises(NoOrder):
        results_for(session, study_uid, 1)


def ready_done(study_uid: str) -> OutboundDelivery:
    now = datetime.now(UTC)
    content = json.dumps({"study_uid": study_uid, "version": 1}).encode()
    return OutboundDelivery(1, 1, "m1", "inference-done", "publish", 1, 1, "k",
                            "application/json", content, None, len(content), now, now)


def publisher(h, tmp_path, received: list[Inbound]) -> ResultsPublisher:
    async def receive(inbound: Inbound) -> Receipt:
        received.append(inbound)
        return Receipt(len(received), f"u{len(received)}", False)

    config = ResultsDestination.model_validate({
        "name": "publish", "type": "results", "results_channel": "ai-results",
        "pacs_channel": "pacs-out"})
    return ResultsPublisher(config, AdapterContext(tmp_path, h.blobs, 1024, receive,
                                                   h.database))


def test_the_publisher_hands_on_results_then_the_sr_and_seg(h, cards_dir, tmp_path):
    index_series(h, tmp_path / "study", study_uid=ORDERED_STUDY, patient_id="MRN100999",
                 AccessionNumber="ACC26120001")
    _order(h)
    _correlate(h, ORDERED_STUDY)
    run_models(h, cards_dir, ORDERED_STUDY)
    received: list[Inbound] = []
    sent = asyncio.run(publisher(h, tmp_path, received).send(ready_done(ORDERED_STUDY)))
    assert sent.detail == "1 result(s), 2 DICOM object(s)"
    result, sr, seg = received
    assert (result.channel, result.metadata["emergent"]) == ("ai-results", "true")
    assert result_from_json(json.loads(result.content or b"")).order.accession == "ACC26120001"
    assert [sr.channel, seg.channel] == ["pacs-out", "pacs-out"]
    assert [sr.metadata["kind"], seg.metadata["kind"]] == ["sr", "seg"]
    for made in (sr, seg):
        assert made.blob is not None
        dataset = pydicom.dcmread(h.blobs.path(made.blob.sha256))
        assert dataset.StudyInstanceUID == ORDERED_STUDY
        assert made.dedup_key == f"dicom/{dataset.SOPInstanceUID}"
    again: list[Inbound] = []  # tried again: the same keys, so nothing is handed on twice
    asyncio.run(publisher(h, tmp_path, again).send(ready_done(ORDERED_STUDY)))
    assert [m.dedup_key for m in again] == [m.dedup_key for m in received]


def test_the_publisher_holds_an_unlinked_study_and_drops_a_rejected_one(h, cards_dir,
                                                                       tmp_path):
    study_uid = index_series(h, tmp_path / "study", patient_id="NOBODY",
                             AccessionNumber="NO-SUCH")
    run_models(h, cards_dir, study_uid)
    _correlate(h, study_uid)
    received: list[Inbound] = []
    with pytest.raises(TransientDeliveryError, match="held"):
        asyncio.run(publisher(h, tmp_path, received).send(ready_done(study_uid)))
    with h.database.write() as session:
        item = session.query(ReconciliationItem).filter_by(study_uid=study_uid).one()
        reject_by_hand(session, item.id, actor="test", note="no order", chain=CHAIN)
    with pytest.raises(PermanentDeliveryError, match="no order"):
        asyncio.run(publisher(h, tmp_path, received).send(ready_done(study_uid)))
    assert received == []


def test_results_of_a_cancelled_order_are_suppressed(h, cards_dir, tmp_path):
    index_series(h, tmp_path / "study", study_uid=ORDERED_STUDY, patient_id="MRN100999",
                 AccessionNumber="ACC26120001")
    _order(h)
    _correlate(h, ORDERED_STUDY)
    run_models(h, cards_dir, ORDERED_STUDY)
    _order(h, "orm_o01_ca", **{  # the CA sample, aimed at this patient's head CT order
        "HC998877^^^ONTARIO-HC^HC~MRN100234": "MRN100999", "PLC5002": "PLC5001",
        "FIL9002": "FIL9001", "ACC26120002": "ACC26120001"})
    with h.database.read() as session, pytest.raises(NoOrder, match="cancelled"):
        results_for(session, ORDERED_STUDY, 1)
