"""Revisions of a result in every rendering: ORU^R01 (OBR-25 C / X, OBX-11 C / D,
strict hl7apy), the worklist priority update (none for a withdrawn result), the FHIR
Bundle (conditional updates of Radbridge's own resources; entered-in-error), against
Medplum; the corrected SR naming its predecessor and the IOCM rejection note (dciodvfy,
and stored by Orthanc over C-STORE)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from radbridge.mappings.fhir.bundle import render_bundle
from radbridge.mappings.hl7.oru import build_oru_r01, oru_control_id
from radbridge.mappings.hl7.priority import priority_control_id
from radbridge.mappings.hl7.transforms import worklist_priority
from radbridge.mappings.payload import Payload
from radbridge.mappings.results import (
    AiResult,
    ResultFormatError,
    ResultStatus,
    result_from_json,
    result_to_json,
)
from radbridge.mappings.sr import SrRenderError, render_rejection, render_sr
from tests.peers.fhir_server import FhirServer
from tests.test_fhir_destination import _send, _sender
from tests.test_hl7_builders import assert_valid_hl7, get, obx_by_code, parsed
from tests.test_sr_render import ct_series, dciodvfy_errors, sample_result, save


def revised(result: AiResult, status: ResultStatus, revision: int = 1,
            reason: str = "order cancelled") -> AiResult:
    return replace(result, status=status, revision=revision, revision_reason=reason)


@pytest.fixture
def first() -> AiResult:
    return sample_result()


def test_json_round_trips_a_revision_and_refuses_an_inconsistent_one(first):
    withdrawn = revised(first, ResultStatus.WITHDRAWN)
    document = result_to_json(withdrawn)
    assert (document["status"], document["revision"]) == ("withdrawn", 1)
    assert result_from_json(document) == withdrawn
    assert "status" not in result_to_json(first)  # the first result's JSON is unchanged
    with pytest.raises(ResultFormatError, match="status"):
        replace(first, revision=2)  # a revision cannot be preliminary
    with pytest.raises(ResultFormatError, match="status"):
        replace(first, status=ResultStatus.CORRECTED)  # nor the first one corrected
    with pytest.raises(ResultFormatError, match="revision"):
        revised(first, ResultStatus.CORRECTED, revision=-1)
    assert withdrawn.revision_key == f"{first.result_id}/r1"
    assert first.revision_key == first.result_id


@pytest.mark.parametrize(("status", "obr_25", "obx_11", "opening"), [
    (ResultStatus.CORRECTED, "C", "C", "CORRECTED: new images."),
    (ResultStatus.WITHDRAWN, "X", "D", "WITHDRAWN: new images."),
])
def test_the_oru_of_a_revision_says_what_it_is_in_its_statuses(first, status, obr_25, obx_11,
                                                               opening):
    revision = revised(first, status, reason="new images")
    text = build_oru_r01(revision)
    assert_valid_hl7(text)
    message, original = parsed(text), parsed(build_oru_r01(first))
    assert get(message.segment("OBR"), 25) == obr_25
    assert {get(obx, 11) for obx in message.segments("OBX")} == {obx_11}
    assert get(original.segment("OBR"), 25) == "P"
    # the order's numbers are the same, so the RIS finds the result it replaces
    for field in (2, 3, 18):
        assert get(message.segment("OBR"), field) == get(original.segment("OBR"), field)
    assert get(message.segment("MSH"), 10) == oru_control_id(revision) != oru_control_id(first)
    [report, *_] = obx_by_code(message, "18782-3")
    assert get(report, 5).startswith(opening)


def test_no_priority_update_for_a_withdrawn_result_and_a_new_id_for_a_corrected_one(first):
    assert first.emergent_findings
    payload = Payload(content=json.dumps(result_to_json(
        revised(first, ResultStatus.WITHDRAWN))).encode(), content_type="application/json")
    marked = worklist_priority(payload)
    assert marked.metadata["emergent"] == "false" and marked.content == payload.content
    corrected = revised(first, ResultStatus.CORRECTED, reason="new images")
    assert priority_control_id(corrected, "ORM_O01") != priority_control_id(first, "ORM_O01")


def entries(bundle, kind: str):
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_the_bundle_of_a_revision_updates_radbridge_resources_and_creates_the_rest(first):
    bundle = render_bundle(revised(first, ResultStatus.WITHDRAWN))
    for kind in ("Observation", "DiagnosticReport"):
        for entry in entries(bundle, kind):
            assert entry["request"]["method"] == "PUT"
            assert entry["request"]["url"].startswith(f"{kind}?identifier=")
            assert entry["resource"]["status"] == "entered-in-error"
    for kind in ("Patient", "Device", "ServiceRequest", "ImagingStudy"):
        [entry] = entries(bundle, kind)
        assert entry["request"]["method"] == "POST" and "ifNoneExist" in entry["request"]
    corrected = render_bundle(revised(first, ResultStatus.CORRECTED, reason="new images"))
    [report] = entries(corrected, "DiagnosticReport")
    assert report["resource"]["status"] == "preliminary"
    assert report["resource"]["conclusion"].startswith("CORRECTED: new images.")


async def test_medplum_replaces_the_report_in_place_then_marks_it_entered_in_error(
        fhir_server: FhirServer, first, tmp_path: Path) -> None:
    fhir_server.reset()
    result = replace(first, result_id="res-revised-1")
    sender = _sender(fhir_server.base_url, tmp_path)
    identifier = "urn:radbridge:result|res-revised-1"
    try:
        await _send(sender, render_bundle(result), 1)
        corrected = revised(result, ResultStatus.CORRECTED, reason="new images")
        await _send(sender, render_bundle(corrected), 2)
        [report] = fhir_server.search("DiagnosticReport", identifier=identifier)
        assert report["status"] == "preliminary"
        assert report["conclusion"].startswith("CORRECTED: new images.")
        withdrawn = revised(result, ResultStatus.WITHDRAWN, revision=2)
        await _send(sender, render_bundle(withdrawn), 3)
    finally:
        await sender.close()
    [report] = fhir_server.search("DiagnosticReport", identifier=identifier)
    assert report["status"] == "entered-in-error"
    observations = fhir_server.search("Observation", subject=report["subject"]["reference"])
    assert observations and {o["status"] for o in observations} == {"entered-in-error"}
    assert len(fhir_server.search("Patient")) == 1


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    folder = tmp_path_factory.mktemp("revision-ct")
    images = ct_series(folder)
    result = replace(sample_result(), study_uid=str(images[0].StudyInstanceUID),
                     series_uids=(str(images[0].SeriesInstanceUID),), findings=())
    first_sr = render_sr(result, images)
    return result, images, first_sr


def test_a_corrected_sr_names_its_predecessor_and_passes_dciodvfy(objects, tmp_path):
    result, images, first_sr = objects
    corrected = revised(result, ResultStatus.CORRECTED, reason="new images")
    second = render_sr(corrected, images, previous=[first_sr])
    assert second.SOPInstanceUID != first_sr.SOPInstanceUID
    [study] = second.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == result.study_uid
    [item] = study.ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert item.ReferencedSOPInstanceUID == first_sr.SOPInstanceUID
    assert dciodvfy_errors(save(second, tmp_path / "second.dcm")) == []


@pytest.mark.parametrize(("status", "title"), [(ResultStatus.WITHDRAWN, "113037"),
                                               (ResultStatus.CORRECTED, "113001")])
def test_the_rejection_note_lists_the_objects_and_passes_dciodvfy(objects, tmp_path, status,
                                                                  title):
    result, _images, first_sr = objects
    note = render_rejection(revised(result, status), [first_sr])
    assert note.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"  # Key Object Selection
    assert note.ConceptNameCodeSequence[0].CodeValue == title
    [study] = note.CurrentRequestedProcedureEvidenceSequence
    [item] = study.ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert item.ReferencedSOPInstanceUID == first_sr.SOPInstanceUID
    assert note.StudyInstanceUID == result.study_uid
    assert dciodvfy_errors(save(note, tmp_path / "note.dcm")) == []
    again = render_rejection(revised(result, status), [first_sr])
    assert again.SOPInstanceUID == note.SOPInstanceUID  # a resend is the same object


def test_a_rejection_note_refuses_nothing_and_another_study(objects):
    result, _images, first_sr = objects
    withdrawn = revised(result, ResultStatus.WITHDRAWN)
    with pytest.raises(SrRenderError, match="no objects"):
        render_rejection(withdrawn, [])
    with pytest.raises(SrRenderError, match="not of study"):
        render_rejection(replace(withdrawn, study_uid="1.2.3.4"), [first_sr])


def test_orthanc_stores_the_rejection_note_over_c_store(orthanc, objects, tmp_path):
    from radbridge.interfaces.dimse.store_destination import StoreClient
    from tests.dimse_support import client_for

    result, images, first_sr = objects
    orthanc.clear()
    client = StoreClient(client_for(orthanc))
    for index, image in enumerate(images):
        assert client.store(save(image, tmp_path / f"ct{index}.dcm")).status == 0
    assert client.store(save(first_sr, tmp_path / "sr.dcm")).status == 0
    note = render_rejection(revised(result, ResultStatus.WITHDRAWN), [first_sr])
    assert client.store(save(note, tmp_path / "note.dcm")).status == 0
    tags = orthanc.instance_tags(orthanc.find_instance(note.SOPInstanceUID))
    assert tags["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.88.59"
    assert tags["StudyInstanceUID"] == result.study_uid
