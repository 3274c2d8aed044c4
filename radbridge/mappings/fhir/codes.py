"""Code systems and identifier namespaces: from the names results use to FHIR URIs.

Results name coding systems as HL7 v2 table 0396 does ("SCT", "LN", "DCM", "99RDB");
FHIR wants URIs. Known names map to their canonical URI; any other name (a local 99xxx
system included) becomes `urn:radbridge:codesystem:<name>`, so the EHR sees one URI per
name on every result. A name that already is an http(s) URL or a URN passes unchanged.
Assigning authorities (patient issuer, accession issuer) follow the same rule, with an
OID written `urn:oid:<oid>` as FHIR asks.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

from radbridge.mappings.results import Coding

JsonObject = dict[str, Any]

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ENDPOINT_CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
RFC3986 = "urn:ietf:rfc:3986"
"""The system of a Coding whose code is a URI (DICOM SOP Class as urn:oid:...)."""

SYSTEMS: dict[str, str] = {
    "SCT": SNOMED,
    "SNOMED": SNOMED,
    "LN": LOINC,
    "LOINC": LOINC,
    "DCM": DCM,
    "RADLEX": "http://radlex.org",
    "UCUM": UCUM,
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
}

DICOM_UID = "urn:dicom:uid"
"""Identifier system for DICOM UIDs; the value is `urn:oid:<uid>`."""
RESULT_IDS = "urn:radbridge:result"
"""Identifier system for what Radbridge derives from a result id (report, observations)."""
DEVICE_IDS = "urn:radbridge:ai-device"
DEVICE_VERSION_IDS = "urn:radbridge:ai-device-version"
"""A device identifier with its version ('id/version'): one Device per model version."""
ENDPOINT_IDS = "urn:radbridge:endpoint"
ACCESSION_IDS = "urn:radbridge:accession"
"""Accession numbers whose issuer the order did not name."""
PLACER_IDS = "urn:radbridge:placer-order"
FILLER_IDS = "urn:radbridge:filler-order"
TAGS = "urn:radbridge:tag"
"""meta.tag system: `demonstration` marks resources a demonstration model produced."""

LOCAL = "99RDB"
SCORE = Coding("AI-SCORE", LOCAL, "AI model score")
IMAGE_POINT = Coding("AI-IMAGE-POINT", LOCAL, "AI finding location in image")
PATIENT_POINT = Coding("AI-PATIENT-POINT", LOCAL, "AI finding location in patient (mm, LPS)")
POSITIVE = Coding("10828004", "SCT", "Positive")
NEGATIVE = Coding("260385009", "SCT", "Negative")
REPORT_CODE = Coding("18748-4", "LN", "Diagnostic imaging study")

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_URI = re.compile(r"(https?://|urn:)\S+", re.IGNORECASE)


def system_uri(name: str) -> str:
    """The FHIR URI of a coding system named as in HL7 v2 (or already a URI)."""
    if _URI.fullmatch(name):
        return name
    known = SYSTEMS.get(name.upper())
    if known is not None:
        return known
    if _OID.fullmatch(name):
        return f"urn:oid:{name}"
    return f"urn:radbridge:codesystem:{quote(name, safe='')}"


def issuer_system(issuer: str) -> str:
    """Identifier.system for an assigning authority: an OID, a URI, or a local name."""
    if _OID.fullmatch(issuer):
        return f"urn:oid:{issuer}"
    if _URI.fullmatch(issuer):
        return issuer
    return f"urn:radbridge:issuer:{quote(issuer, safe='')}"


def coding(code: Coding) -> JsonObject:
    """A FHIR Coding (display left out when empty)."""
    found: JsonObject = {"system": system_uri(code.system), "code": code.code}
    if code.display:
        found["display"] = code.display
    return found


def concept(code: Coding, *more: Coding) -> JsonObject:
    """A CodeableConcept of one or more codings; text is the first display."""
    found: JsonObject = {"coding": [coding(c) for c in (code, *more)]}
    if code.display:
        found["text"] = code.display
    return found


def typed_identifier(system: str, value: str, type_code: str, display: str) -> JsonObject:
    """An Identifier with a v2-0203 type (MR, ACSN, PLAC, FILL)."""
    return {"type": {"coding": [{"system": V2_0203, "code": type_code, "display": display}]},
            "system": system, "value": value}


def dicom_uid(uid: str) -> str:
    """A DICOM UID the way FHIR identifiers and ids carry it."""
    return f"urn:oid:{uid}"


def instant(moment: datetime) -> str:
    """An aware datetime as FHIR writes it: ISO 8601, UTC as `Z`."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
