"""The FHIR R4 transaction Bundle of an AI result (radbridge.mappings.fhir), offline.

Structure and references, byte-identical re-renders, conditional creates on business
identifiers, the demonstration warning, and a round trip through fhir.resources.R4B
(every resource parses into its R4B model and dumps back to the same JSON). The real
server and the npm validator see these Bundles in test_fhir_destination.py.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from fhir.resources.R4B.bundle import Bundle

from radbridge.mappings.fhir.bundle import bundle_bytes, full_url, render_bundle
from radbridge.mappings.fhir.codes import issuer_system, system_uri
from radbridge.mappings.payload import Payload
from radbridge.mappings.registry import get_mapping
from radbridge.mappings.results import (
    DEMONSTRATION_WARNING,
    PRELIMINARY_NOTICE,
    AiResult,
    FindingLocation,
    InstanceRef,
    PatientRef,
    ResultFormatError,
    SeriesRecord,
    StudyRecord,
    result_from_json,
    result_to_json,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "results"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def sample(name: str) -> AiResult:
    return result_from_json(json.loads((SAMPLES / f"{name}.json").read_text("utf-8")))


def rich_result() -> AiResult:
    """The demo ICH result with what the DICOM index adds: two series, their instances,
    the PACS endpoint, and where the model placed the hemorrhage."""
    base = sample("ich-positive-demo")
    series = (
        SeriesRecord("1.2.826.0.1.3680043.8.498.2001", "CT", number=2,
                     description="Head 5mm", body_part="HEAD",
                     instances=tuple(InstanceRef(CT_IMAGE, f"1.2.826.0.1.3680043.8.498.3001.{n}",
                                                 number=n) for n in range(1, 4))),
        SeriesRecord("1.2.826.0.1.3680043.8.498.2002", "SR", number=900),
    )
    study = StudyRecord(started=datetime(2024, 5, 1, 8, 1, 2, tzinfo=UTC),
                        description="CT HEAD WO", series=series,
                        endpoint="http://pacs.example.org/dicom-web")
    located = replace(base.findings[0], location=FindingLocation(
        "1.2.826.0.1.3680043.8.498.3001.2", frame=1, row=120.5, column=88.0,
        patient_mm=(12.5, -30.0, 45.25)))
    return replace(base, study=study, findings=(located, *base.findings[1:]),
                   series_uids=("1.2.826.0.1.3680043.8.498.2001",))


RESULTS = {"demo": lambda: sample("ich-positive-demo"),
           "negative": lambda: sample("ich-negative"), "rich": rich_result}


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def one(bundle: dict[str, Any], kind: str) -> dict[str, Any]:
    found = resources(bundle, kind)
    assert len(found) == 1, kind
    return found[0]


def url_of(bundle: dict[str, Any], kind: str) -> str:
    urls = [e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]
    assert len(urls) == 1, kind
    return urls[0]


def references(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [ref for value in node.values() for ref in references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in references(value)]
    return []


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_round_trip_through_fhir_resources_r4b(name: str) -> None:
    bundle = render_bundle(RESULTS[name]())
    model = Bundle.model_validate(bundle)
    assert [type(entry.resource).__name__ for entry in model.entry] == [
        entry["resource"]["resourceType"] for entry in bundle["entry"]]
    assert json.loads(model.model_dump_json(exclude_none=True)) == bundle


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_every_reference_points_into_the_bundle(name: str) -> None:
    bundle = render_bundle(RESULTS[name]())
    urls = [entry["fullUrl"] for entry in bundle["entry"]]
    assert len(set(urls)) == len(urls)
    assert all(url.startswith("urn:uuid:") for url in urls)
    cited = {ref for entry in bundle["entry"] for ref in references(entry["resource"])}
    assert cited <= set(urls)
    assert bundle["type"] == "transaction"


def test_rendering_is_byte_identical_and_tied_to_the_result_id() -> None:
    result = rich_result()
    first = bundle_bytes(render_bundle(result))
    again = bundle_bytes(render_bundle(result_from_json(result_to_json(result))))
    assert first == again
    other = bundle_bytes(render_bundle(replace(result, result_id="res-other")))
    assert other != first
    assert full_url(result, "patient") not in other.decode()


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_every_entry_is_a_conditional_create_on_its_own_identifier(name: str) -> None:
    bundle = render_bundle(RESULTS[name]())
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        assert request["method"] == "POST"
        assert request["url"] == resource["resourceType"]
        query = parse_qs(request["ifNoneExist"])
        assert list(query) == ["identifier"]
        system, value = query["identifier"][0].split("|")
        assert {"system": system, "value": value} in [
            {"system": i["system"], "value": i["value"]} for i in resource["identifier"]]


def test_business_identifiers() -> None:
    bundle = render_bundle(rich_result())
    patient = one(bundle, "Patient")
    assert patient["identifier"][0]["system"] == "urn:radbridge:issuer:STMARY"
    assert patient["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    assert (patient["gender"], patient["birthDate"]) == ("female", "1948-03-09")
    negative = render_bundle(sample("ich-negative"))
    assert one(negative, "Patient")["identifier"][0]["system"] == "urn:oid:2.16.840.1.113883.19.5"
    order = one(bundle, "ServiceRequest")
    assert [(i["type"]["coding"][0]["code"], i["value"]) for i in order["identifier"]] == [
        ("ACSN", "ACC24050100017"), ("PLAC", "PL-998877"), ("FILL", "FI-554433")]
    assert (order["status"], order["intent"], order["priority"]) == ("active", "order",
                                                                     "routine")
    study = one(bundle, "ImagingStudy")
    assert study["identifier"][0] == {
        "system": "urn:dicom:uid",
        "value": "urn:oid:1.2.826.0.1.3680043.8.498.10231234567890123456789"}
    device = one(bundle, "Device")
    assert device["identifier"][1]["value"] == "radbridge-ich-demo/0.3.1"
    assert device["version"] == [{"value": "0.3.1"}]
    assert device["deviceName"][0]["name"] == "Radbridge ICH triage (demo)"
    report = one(bundle, "DiagnosticReport")
    assert report["identifier"] == [{"system": "urn:radbridge:result",
                                     "value": "res-2024-05-01-0001"}]


def test_identifier_search_escapes_token_characters() -> None:
    result = sample("ich-negative")
    odd = replace(result, patient=PatientRef("A,B$C\\D&E F", "HOSP A"))
    request = render_bundle(odd)["entry"][0]["request"]
    assert request["ifNoneExist"] == (
        "identifier=urn:radbridge:issuer:HOSP%2520A|A%5C%2CB%5C%24C%5C%5CD%26E%20F")
    assert parse_qs(request["ifNoneExist"])["identifier"] == [
        "urn:radbridge:issuer:HOSP%20A|A\\,B\\$C\\\\D&E F"]


def test_observations_of_findings_and_measurements() -> None:
    bundle = render_bundle(rich_result())
    study, device = url_of(bundle, "ImagingStudy"), url_of(bundle, "Device")
    hemorrhage, shift, volume = resources(bundle, "Observation")
    for observation in (hemorrhage, shift, volume):
        assert observation["status"] == "preliminary"
        assert observation["derivedFrom"] == [{"reference": study}]
        assert observation["device"] == {"reference": device}
        assert observation["effectiveDateTime"] == "2024-05-01T08:01:02Z"
        assert observation["issued"] == "2024-05-01T10:15:32+02:00"
    assert hemorrhage["code"]["coding"] == [{"system": "http://snomed.info/sct",
                                             "code": "1386000",
                                             "display": "Intracranial hemorrhage"}]
    assert hemorrhage["valueCodeableConcept"]["coding"][0]["code"] == "10828004"
    assert hemorrhage["interpretation"][0]["coding"][0]["code"] == "AA"
    assert hemorrhage["bodySite"]["coding"][0]["code"] == "12738006"
    score, image, patient = hemorrhage["component"]
    assert score["valueQuantity"] == {"value": 0.973, "unit": "1",
                                      "system": "http://unitsofmeasure.org", "code": "1"}
    assert image["valueString"] == (
        "urn:oid:1.2.826.0.1.3680043.8.498.3001.2 frame 1 row 120.5 column 88")
    assert patient["valueString"] == "12.5 -30 45.25"
    assert shift["code"]["coding"][0]["system"] == "http://radlex.org"
    assert shift["valueCodeableConcept"]["coding"][0]["code"] == "260385009"
    assert shift["interpretation"][0]["coding"][0]["code"] == "N"
    assert "bodySite" not in shift
    assert volume["valueQuantity"] == {"value": 12.4, "unit": "mL",
                                       "system": "http://unitsofmeasure.org", "code": "mL"}
    assert volume["code"]["coding"][0]["system"] == "urn:radbridge:codesystem:99RDB"


def test_diagnostic_report() -> None:
    bundle = render_bundle(rich_result())
    report = one(bundle, "DiagnosticReport")
    assert report["status"] == "preliminary"
    assert [c["code"] for c in report["category"][0]["coding"]] == ["LP29684-5", "RAD"]
    assert report["code"]["coding"][0] == {"system": "http://loinc.org", "code": "18748-4",
                                           "display": "Diagnostic imaging study"}
    assert report["basedOn"] == [{"reference": url_of(bundle, "ServiceRequest")}]
    assert report["imagingStudy"] == [{"reference": url_of(bundle, "ImagingStudy")}]
    observations = [e["fullUrl"] for e in bundle["entry"]
                    if e["resource"]["resourceType"] == "Observation"]
    assert report["result"] == [{"reference": url} for url in observations]
    assert report["subject"] == {"reference": url_of(bundle, "Patient")}
    assert [c["coding"][0]["code"] for c in report["conclusionCode"]] == ["1386000"]
    assert "Intracranial hemorrhage: present (emergent)." in report["conclusion"]
    assert "midline shift: absent." in report["conclusion"]
    form = report["presentedForm"][0]
    assert form["contentType"] == "text/plain; charset=utf-8"
    text = base64.b64decode(form["data"]).decode("utf-8")
    assert text.startswith(PRELIMINARY_NOTICE + "\n")
    assert "Model: Radbridge ICH triage (demo) 0.3.1 (radbridge-ich-demo)" in text
    assert text.endswith(rich_result().report_text)
    assert "conclusionCode" not in one(render_bundle(sample("ich-negative")),
                                       "DiagnosticReport")


def test_demonstration_warning_where_it_applies() -> None:
    bundle = render_bundle(sample("ich-positive-demo"))
    tagged = [e["resource"] for e in bundle["entry"]
              if e["resource"]["resourceType"] in ("Device", "Observation", "DiagnosticReport")]
    for resource in tagged:
        assert resource["meta"]["tag"][0]["code"] == "demonstration"
    for observation in resources(bundle, "Observation"):
        assert observation["note"] == [{"text": DEMONSTRATION_WARNING}]
    report = one(bundle, "DiagnosticReport")
    assert report["conclusion"].splitlines()[:2] == [PRELIMINARY_NOTICE, DEMONSTRATION_WARNING]
    text = base64.b64decode(report["presentedForm"][0]["data"]).decode("utf-8")
    assert text.splitlines()[1] == DEMONSTRATION_WARNING
    assert {"text": DEMONSTRATION_WARNING} in one(bundle, "Device")["note"]
    clinical = bundle_bytes(render_bundle(sample("ich-negative"))).decode()
    assert DEMONSTRATION_WARNING not in clinical
    assert "demonstration" not in clinical


def test_imaging_study_series_instances_and_endpoint() -> None:
    bundle = render_bundle(rich_result())
    study = one(bundle, "ImagingStudy")
    assert study["modality"] == [
        {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": code}
        for code in ("CT", "SR")]
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (2, 3)
    assert study["started"] == "2024-05-01T08:01:02Z"
    assert study["basedOn"] == [{"reference": url_of(bundle, "ServiceRequest")}]
    ct, sr = study["series"]
    assert (ct["uid"], ct["number"], ct["modality"]["code"]) == (
        "1.2.826.0.1.3680043.8.498.2001", 2, "CT")
    assert [i["uid"] for i in ct["instance"]] == [
        f"1.2.826.0.1.3680043.8.498.3001.{n}" for n in range(1, 4)]
    assert ct["instance"][0]["sopClass"] == {"system": "urn:ietf:rfc:3986",
                                             "code": f"urn:oid:{CT_IMAGE}"}
    assert sr["numberOfInstances"] == 0 and "instance" not in sr
    endpoint = one(bundle, "Endpoint")
    assert study["endpoint"] == [{"reference": url_of(bundle, "Endpoint")}]
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert endpoint["address"] == "http://pacs.example.org/dicom-web"
    other = render_bundle(rich_result(), pacs_endpoint="https://viewer.example.org/wado")
    assert one(other, "Endpoint")["address"] == "https://viewer.example.org/wado"
    bare = render_bundle(sample("ich-negative"))
    assert resources(bare, "Endpoint") == []
    assert "series" not in one(bare, "ImagingStudy")
    with pytest.raises(ResultFormatError, match="pacs_endpoint"):
        render_bundle(rich_result(), pacs_endpoint=" ")


def test_code_system_and_issuer_uris() -> None:
    assert system_uri("SCT") == "http://snomed.info/sct"
    assert system_uri("LN") == "http://loinc.org"
    assert system_uri("DCM") == "http://dicom.nema.org/resources/ontology/DCM"
    assert system_uri("RADLEX") == "http://radlex.org"
    assert system_uri("99RDB") == "urn:radbridge:codesystem:99RDB"
    assert system_uri("http://example.org/cs") == "http://example.org/cs"
    assert system_uri("1.2.3.4") == "urn:oid:1.2.3.4"
    assert issuer_system("2.16.840.1.113883.19.5") == "urn:oid:2.16.840.1.113883.19.5"
    assert issuer_system("urn:oid:1.2.3") == "urn:oid:1.2.3"
    assert issuer_system("ST MARY") == "urn:radbridge:issuer:ST%20MARY"


def test_transformer_renders_the_payload() -> None:
    transform = get_mapping("fhir.bundle")
    content = (SAMPLES / "ich-positive-demo.json").read_bytes()
    out = transform(Payload(content, "application/json", source="channel:results"),
                    pacs_endpoint="http://pacs.example.org/dicom-web")
    result = sample("ich-positive-demo")
    assert out.content_type == "application/fhir+json"
    assert out.content == bundle_bytes(render_bundle(
        result, pacs_endpoint="http://pacs.example.org/dicom-web"))
    assert (out.patient_id, out.accession, out.study_uid) == (
        "MRN004711", "ACC24050100017", result.study_uid)
    assert dict(out.metadata) == {"result_id": "res-2024-05-01-0001", "emergent": "true",
                                  "demonstration": "true", "fhir_entries": "9"}
    with pytest.raises(ValueError, match="pacs_endpoint"):
        transform(Payload(content), pacs_endpoint=5)
    with pytest.raises(ResultFormatError):
        transform(Payload(b"not json"))
