"""One FHIR R4 transaction Bundle per AI result, the same bytes every time it is rendered.

Entries, in this order: Patient, Device, Endpoint (when the PACS's DICOMweb address is
known), ServiceRequest, ImagingStudy, an Observation per finding, one per measurement,
and the DiagnosticReport. Every entry is a conditional create (`POST` with
`ifNoneExist` on its business identifier):

    Patient          identifier = issuer system | MRN
    Device           identifier = urn:radbridge:ai-device-version | device/version
    Endpoint         identifier = urn:radbridge:endpoint | DICOMweb base URL
    ServiceRequest   identifier = accession issuer system | accession
    ImagingStudy     identifier = urn:dicom:uid | urn:oid:<Study Instance UID>
    Observation      identifier = urn:radbridge:result | <result_id>/finding/<n>
                                                   (or /measurement/<n>)
    DiagnosticReport identifier = urn:radbridge:result | <result_id>

so a resend after a crash, or a replay, creates nothing new, and what the EHR already
holds (the patient's demographics, its own order, a report a radiologist has since made
final) is never overwritten. A revision of the result (corrected, withdrawn) replaces
Radbridge's own resources, the Observations and the DiagnosticReport, with conditional
updates (`PUT DiagnosticReport?identifier=...`) on the same identifiers; the rest stays
conditional creates. fullUrls are `urn:uuid:` UUIDs derived from the result id
and the entry's role, and nothing reads a clock, so `bundle_bytes` of the same result is
byte-identical on every render.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

from radbridge.mappings.fhir import report, resources
from radbridge.mappings.fhir.codes import (
    DEVICE_VERSION_IDS,
    ENDPOINT_IDS,
    RESULT_IDS,
    TAGS,
    JsonObject,
    issuer_system,
)
from radbridge.mappings.fhir.resources import Refs
from radbridge.mappings.results import DEMONSTRATION_WARNING, AiResult, ResultFormatError

NAMESPACE = uuid.UUID("5f0c2a52-7d1e-4c55-9a43-2c8e0f1b6d70")
"""uuid5 namespace of Radbridge's fullUrls (fixed: changing it changes every Bundle)."""
DEMONSTRATION_TAG = {"system": TAGS, "code": "demonstration", "display": DEMONSTRATION_WARNING}


def render_bundle(result: AiResult, *, pacs_endpoint: str | None = None) -> JsonObject:
    """The transaction Bundle for `result` as a JSON-ready dict (layout: module docstring).

    `pacs_endpoint` is the DICOMweb base URL for the ImagingStudy's Endpoint; without it
    the study record's own endpoint is used, and with neither there is no Endpoint.
    """
    address = pacs_endpoint if pacs_endpoint is not None else (
        None if result.study is None else result.study.endpoint)
    if address is not None and not (isinstance(address, str) and address.strip()):
        raise ResultFormatError("pacs_endpoint", "expected a non-empty URL")
    refs = Refs(patient=full_url(result, "patient"), order=full_url(result, "order"),
                study=full_url(result, "study"), device=full_url(result, "device"),
                endpoint=None if address is None else full_url(result, "endpoint"))
    order, model = result.order, result.model
    entries = [
        _entry(refs.patient, resources.patient(result),
               _search(issuer_system(result.patient.issuer), result.patient.identifier)),
        _entry(refs.device, _tagged(result, resources.device(model)),
               _search(DEVICE_VERSION_IDS, resources.device_version_id(model))),
    ]
    if address is not None and refs.endpoint is not None:
        entries.append(_entry(refs.endpoint, resources.endpoint(address),
                              _search(ENDPOINT_IDS, address)))
    accession = resources.accession_identifier(order)
    study_id = resources.study_identifier(result.study_uid)
    entries += [
        _entry(refs.order, resources.service_request(result, refs),
               _search(accession["system"], accession["value"])),
        _entry(refs.study, resources.imaging_study(result, refs),
               _search(study_id["system"], study_id["value"])),
    ]
    observations = []
    for index, finding in enumerate(result.findings, 1):
        url = full_url(result, f"finding/{index}")
        observations.append(url)
        entries.append(_own_entry(result, url, _tagged(result, report.finding_observation(
            result, finding, index, refs)), _search(RESULT_IDS, report.finding_id(result, index))))
    for index, measurement in enumerate(result.measurements, 1):
        url = full_url(result, f"measurement/{index}")
        observations.append(url)
        entries.append(_own_entry(result, url, _tagged(result, report.measurement_observation(
            result, measurement, index, refs)),
            _search(RESULT_IDS, report.measurement_id(result, index))))
    entries.append(_own_entry(result, full_url(result, "report"), _tagged(
        result, report.diagnostic_report(result, refs, observations)),
        _search(RESULT_IDS, result.result_id)))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def bundle_bytes(bundle: JsonObject) -> bytes:
    """The Bundle as compact UTF-8 JSON: what goes on the wire."""
    return json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def full_url(result: AiResult, role: str) -> str:
    """The entry's fullUrl: a UUID from the result id and the role ('patient', 'finding/2')."""
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{result.result_id}/{role}')}"


def _entry(url: str, resource: JsonObject, if_none_exist: str) -> JsonObject:
    return {"fullUrl": url, "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"],
                        "ifNoneExist": if_none_exist}}


def _own_entry(result: AiResult, url: str, resource: JsonObject, search: str) -> JsonObject:
    """An entry for a resource that is Radbridge's own: created once, replaced by a
    revision (conditional update on its business identifier)."""
    if result.revision == 0:
        return _entry(url, resource, search)
    return {"fullUrl": url, "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}?{search}"}}


def _search(system: str, value: str) -> str:
    """`identifier=system|value` as a query string: token characters escaped as FHIR
    search asks (backslash before | , $ and itself), then percent-encoded."""
    token = f"{_escape(system)}|{_escape(value)}"
    return f"identifier={quote(token, safe=':/|')}"


def _escape(text: str) -> str:
    for char in ("\\", "|", ",", "$"):
        text = text.replace(char, "\\" + char)
    return text


def _tagged(result: AiResult, resource: JsonObject) -> JsonObject:
    """A demonstration model's resources carry a meta.tag the EHR can filter on."""
    if not result.model.demonstration:
        return resource
    kind = resource.pop("resourceType")
    return {"resourceType": kind, "meta": {"tag": [dict(DEMONSTRATION_TAG)]}, **resource}
