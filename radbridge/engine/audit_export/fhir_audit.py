"""One ledger event as a FHIR R4 AuditEvent, after IHE Basic Audit Log Patterns (BALP).

The codes are the DICOM audit message's (one table, event_map): `type` is the DICOM
Event ID, `subtype` the event type code and our action, `action` C/R/U/D/E, `outcome`
0/4/8/12. `agent`: the actor outside this node (a person reading is an information
recipient, BALP's "user"), this node (`110150 Application`, or source/destination of a
transfer) and a send's destination. `source.observer` is this node. `entity`: the
patient (by identifier, role Patient), the study (by its UID as `urn:oid:`, role
Report, with its accession), the query's filters, the stored message, and the ledger
entry itself (seq, chain, hash, detail) so a receiver can drop repeats.
"""

from __future__ import annotations

import base64
from datetime import UTC
from typing import Any

from radbridge.engine.audit_export import codes, event_map
from radbridge.engine.audit_export.codes import Code
from radbridge.engine.audit_export.event_map import AuditSource, EventKind, Participant
from radbridge.engine.audit_export.events import LedgerEvent

ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACCESSION_EXTENSION = "http://hl7.org/fhir/StructureDefinition/auditevent-Accession"
DICOM_UID = "urn:dicom:uid"

_PERSON = {"system": ENTITY_TYPE, "code": "1", "display": "Person"}
_SYSTEM_OBJECT = {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}
_ROLES = {"patient": ("1", "Patient"), "report": ("3", "Report"),
          "resource": ("4", "Resource"), "security": ("13", "Security Resource"),
          "query": ("24", "Query")}


def audit_event(event: LedgerEvent, source: AuditSource) -> dict[str, Any]:
    """The AuditEvent resource (JSON) for `event`."""
    kind = event_map.kind_of(event)
    subtypes = [kind.type_code] if kind.type_code is not None else []
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"audit-{event.seq}",
        "type": coding(kind.event_id),
        "subtype": [coding(code) for code in (*subtypes, Code.action(event.action))],
        "action": kind.action,
        "recorded": event.at.astimezone(UTC).isoformat(),
        "outcome": codes.outcome_indicator(event.outcome),
        "agent": [_agent(p, kind) for p in event_map.participants(event, kind,
                                                                   source.source_id)],
        "source": _source(source),
        "entity": _entities(event, kind),
    }
    if event.outcome != "success":
        resource["outcomeDesc"] = event.outcome
    return resource


def coding(code: Code) -> dict[str, str]:
    return {"system": code.system, "code": code.code, "display": code.meaning}


def _agent(participant: Participant, kind: EventKind) -> dict[str, Any]:
    agent: dict[str, Any] = {
        "who": {"identifier": {"value": participant.user_id}, "display": participant.user_id},
        "requestor": participant.requestor,
    }
    if participant.role is not None:
        agent["type"] = {"coding": [coding(participant.role)]}
    elif participant.person and kind.action == "R":
        agent["type"] = {"coding": [{"system": PARTICIPATION, "code": "IRCP",
                                     "display": "information recipient"}]}
    if participant.network is not None:
        agent["network"] = {"address": participant.network, "type": participant.network_type}
    return agent


def _source(source: AuditSource) -> dict[str, Any]:
    body: dict[str, Any] = {
        "observer": {"identifier": {"value": source.source_id}, "display": source.source_id},
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    if source.site:
        body["site"] = source.site
    return body


def _entities(event: LedgerEvent, kind: EventKind) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if event.patient_id:
        found.append(_entity({"identifier": {"value": event.patient_id}, "type": "Patient"},
                             _PERSON, "patient"))
    if event.study_uid:
        study = _entity({"identifier": {"system": DICOM_UID,
                                        "value": f"urn:oid:{event.study_uid}"},
                         "type": "ImagingStudy"}, _SYSTEM_OBJECT, "report")
        if event.accession:
            study["extension"] = [{"url": ACCESSION_EXTENSION,
                                   "valueIdentifier": {"value": event.accession}}]
        found.append(study)
    if kind.event_id == codes.AUDIT_LOG_USED:
        log = _entity({"display": "Security Audit Log"}, _SYSTEM_OBJECT, "security")
        found.append(log)
    query = event_map.query_of(event)
    if query is not None:
        asked = _entity({"display": event.action}, _SYSTEM_OBJECT, "query")
        asked["query"] = _b64(query)
        found.append(asked)
    if event.message_id is not None:
        found.append(_entity({"identifier": {"system": codes.MESSAGE_ID.system,
                                             "value": str(event.message_id)}},
                             _SYSTEM_OBJECT, "resource"))
    entry = _entity({"identifier": {"system": codes.LEDGER_EVENT.system,
                                    "value": str(event.seq)}}, _SYSTEM_OBJECT, "resource")
    entry["detail"] = [*({"type": name, "valueString": value}
                         for name, value in (("chain", event.chain), ("hash", event.hash))
                         if value),
                       {"type": "detail",
                        "valueBase64Binary": _b64(event_map.detail_bytes(event))}]
    found.append(entry)
    return found


def _entity(what: dict[str, Any], entity_type: dict[str, str], role: str) -> dict[str, Any]:
    code, display = _ROLES[role]
    return {"what": what, "type": entity_type,
            "role": {"system": OBJECT_ROLE, "code": code, "display": display}}


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")
