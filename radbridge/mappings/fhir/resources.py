"""The context resources of a result: Patient, ServiceRequest, ImagingStudy, Endpoint, Device.

Each builder returns a JSON-ready resource without `id`: the Bundle gives every entry a
`urn:uuid` fullUrl and the references below point at those (`Refs`); the server swaps
them for its own ids. The EHR usually knows the patient, the order and the study already,
so these go in as conditional creates: they are written only when their business
identifier is new, and never overwrite what the EHR holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from radbridge.mappings.fhir.codes import (
    ACCESSION_IDS,
    DCM,
    DEVICE_IDS,
    DEVICE_VERSION_IDS,
    DICOM_UID,
    ENDPOINT_CONNECTION,
    ENDPOINT_IDS,
    FILLER_IDS,
    PLACER_IDS,
    RFC3986,
    JsonObject,
    concept,
    dicom_uid,
    instant,
    issuer_system,
    typed_identifier,
)
from radbridge.mappings.results import (
    DEMONSTRATION_WARNING,
    AiResult,
    ModelIdentity,
    OrderRef,
    PatientRef,
    Priority,
    Provider,
    SeriesRecord,
    Sex,
)

GENDERS = {Sex.FEMALE: "female", Sex.MALE: "male", Sex.OTHER: "other",
           Sex.AMBIGUOUS: "other", Sex.UNKNOWN: "unknown", Sex.NOT_APPLICABLE: "unknown"}
"""HL7 table 0001 to FHIR administrative-gender (A and N have no code of their own)."""
PRIORITIES = {Priority.STAT: "stat", Priority.ASAP: "asap", Priority.ROUTINE: "routine",
              Priority.TIMING_CRITICAL: "urgent"}
"""HL7 table 0027 to FHIR request-priority; preop and callback have no match and are left out."""


@dataclass(frozen=True)
class Refs:
    """The fullUrl of each resource a result's Bundle carries (endpoint only if known)."""

    patient: str
    order: str
    study: str
    device: str
    endpoint: str | None = None


def ref(full_url: str) -> JsonObject:
    return {"reference": full_url}


def patient_identifier(patient: PatientRef) -> JsonObject:
    return typed_identifier(issuer_system(patient.issuer), patient.identifier, "MR",
                            "Medical record number")


def accession_identifier(order: OrderRef) -> JsonObject:
    system = ACCESSION_IDS if order.accession_issuer is None else issuer_system(
        order.accession_issuer)
    return typed_identifier(system, order.accession, "ACSN", "Accession ID")


def study_identifier(study_uid: str) -> JsonObject:
    return {"system": DICOM_UID, "value": dicom_uid(study_uid)}


def device_identifiers(model: ModelIdentity) -> list[JsonObject]:
    """The device id, then the id with its version (the one a Device is found by)."""
    return [{"system": DEVICE_IDS, "value": model.device_identifier},
            {"system": DEVICE_VERSION_IDS, "value": device_version_id(model)}]


def device_version_id(model: ModelIdentity) -> str:
    return f"{model.device_identifier}/{model.version}"


def patient(result: AiResult) -> JsonObject:
    person = result.patient
    found: JsonObject = {"resourceType": "Patient", "identifier": [patient_identifier(person)]}
    if person.family or person.given:
        name: JsonObject = {}
        if person.family:
            name["family"] = person.family
        if person.given:
            name["given"] = [person.given]
        found["name"] = [name]
    if person.sex is not None:
        found["gender"] = GENDERS[person.sex]
    if person.birth_date is not None:
        found["birthDate"] = person.birth_date.isoformat()
    return found


def service_request(result: AiResult, refs: Refs) -> JsonObject:
    order = result.order
    identifiers = [accession_identifier(order)]
    if order.placer_number:
        identifiers.append(typed_identifier(PLACER_IDS, order.placer_number, "PLAC",
                                            "Placer Identifier"))
    if order.filler_number:
        identifiers.append(typed_identifier(FILLER_IDS, order.filler_number, "FILL",
                                            "Filler Identifier"))
    found: JsonObject = {
        "resourceType": "ServiceRequest", "identifier": identifiers, "status": "active",
        "intent": "order", "code": concept(order.procedure), "subject": ref(refs.patient),
    }
    if order.priority in PRIORITIES:
        found["priority"] = PRIORITIES[order.priority]
    if order.ordering_provider is not None:
        found["requester"] = _provider(order.ordering_provider)
    return found


def _provider(provider: Provider) -> JsonObject:
    """A logical reference: the order names the clinician but no Practitioner resource."""
    found: JsonObject = {"type": "Practitioner"}
    if provider.identifier:
        found["identifier"] = {"value": provider.identifier}
    name = ", ".join(part for part in (provider.family, provider.given) if part)
    if name:
        found["display"] = name
    return found


def imaging_study(result: AiResult, refs: Refs) -> JsonObject:
    """The study with its series and instances as far as the DICOM index knows them."""
    found: JsonObject = {
        "resourceType": "ImagingStudy",
        "identifier": [study_identifier(result.study_uid),
                       accession_identifier(result.order)],
        "status": "available", "subject": ref(refs.patient), "basedOn": [ref(refs.order)],
    }
    record = result.study
    series = () if record is None else record.series
    modalities = sorted({s.modality for s in series})
    if modalities:
        found["modality"] = [_modality(m) for m in modalities]
    if record is not None and record.started is not None:
        found["started"] = instant(record.started)
    if refs.endpoint is not None:
        found["endpoint"] = [ref(refs.endpoint)]
    if series:
        found["numberOfSeries"] = len(series)
        found["numberOfInstances"] = sum(len(s.instances) for s in series)
    found["procedureCode"] = [concept(result.order.procedure)]
    if record is not None and record.description:
        found["description"] = record.description
    if series:
        found["series"] = [_series(s) for s in series]
    return found


def _modality(code: str) -> JsonObject:
    return {"system": DCM, "code": code}


def _series(series: SeriesRecord) -> JsonObject:
    found: JsonObject = {"uid": series.series_uid}
    if series.number is not None:
        found["number"] = series.number
    found["modality"] = _modality(series.modality)
    if series.description:
        found["description"] = series.description
    found["numberOfInstances"] = len(series.instances)
    if series.body_part:
        found["bodySite"] = {"display": series.body_part}
    if series.instances:
        found["instance"] = [_instance(i.sop_instance_uid, i.sop_class_uid, i.number)
                             for i in series.instances]
    return found


def _instance(uid: str, sop_class: str, number: int | None) -> JsonObject:
    found: JsonObject = {"uid": uid, "sopClass": {"system": RFC3986, "code": dicom_uid(sop_class)}}
    if number is not None:
        found["number"] = number
    return found


def endpoint(address: str) -> JsonObject:
    """The PACS's DICOMweb service, where a viewer fetches the study (WADO-RS)."""
    return {
        "resourceType": "Endpoint",
        "identifier": [{"system": ENDPOINT_IDS, "value": address}],
        "status": "active",
        "connectionType": {"system": ENDPOINT_CONNECTION, "code": "dicom-wado-rs",
                           "display": "DICOM WADO-RS"},
        "name": "PACS DICOMweb",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def device(model: ModelIdentity) -> JsonObject:
    """The model as a software device: name, version, intended use, and whether it is a
    demonstration (SaMD traceability: every finding points here)."""
    notes = []
    if model.intended_use:
        notes.append({"text": f"Intended use: {model.intended_use}"})
    if model.demonstration:
        notes.append({"text": DEMONSTRATION_WARNING})
    found: JsonObject = {
        "resourceType": "Device", "identifier": device_identifiers(model), "status": "active",
        "deviceName": [{"name": model.name, "type": "model-name"}],
        "type": {"text": "AI image analysis software"},
        "version": [{"value": model.version}],
    }
    if notes:
        found["note"] = notes
    return found
