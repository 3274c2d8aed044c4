"""One ledger event as a DICOM audit message (PS3.15 A.5.1, the XML that IHE ATNA
collectors receive over syslog).

    AuditMessage
      EventIdentification   EventActionCode, EventDateTime, EventOutcomeIndicator
        EventID             the standard code for the action (event_map)
        EventTypeCode       the standard subtype, if any, then our action (99RADBRIDGE)
      ActiveParticipant*    the actor outside this node, this node, a send's destination
      AuditSourceIdentification  this node (type 4: application server process)
      ParticipantObjectIdentification*
        patient             type 1 (person), role 1 (patient), ID type RFC-3881 2
        study               type 2 (system object), role 3 (report), ID type 110180,
                            with its Accession
        audit log           for audit.* events: role 13, ID type RFC-3881 12 (URI)
        query               for queries: role 24, the filters in ParticipantObjectQuery
        message             the stored message the event is about (private ID type)
        ledger entry        the event's seq, with its chain, hash and detail as
                            ParticipantObjectDetail (so a collector can drop a repeat
                            of an event it already holds, and check it against the ledger)
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from radbridge.engine.audit_export import codes, event_map
from radbridge.engine.audit_export.codes import Code
from radbridge.engine.audit_export.event_map import AuditSource, EventKind, Participant
from radbridge.engine.audit_export.events import LedgerEvent

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
AUDIT_LOG_URI = "urn:radbridge:audit-ledger"
AUDIT_LOG_NAME = "Security Audit Log"
SOURCE_TYPE = Code("4", "DCM", "Application Server Process or Thread", codes.DCM_URI)
URI = Code("12", codes.RFC3881, "URI", "urn:ietf:rfc:3881")

# ParticipantObjectTypeCode and ParticipantObjectTypeCodeRole (RFC 3881 values)
PERSON, SYSTEM_OBJECT = "1", "2"
ROLE_PATIENT, ROLE_REPORT, ROLE_RESOURCE, ROLE_SECURITY_RESOURCE, ROLE_QUERY = (
    "1", "3", "4", "13", "24")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def audit_message(event: LedgerEvent, source: AuditSource) -> bytes:
    """The AuditMessage for `event`, UTF-8 XML on one line with its declaration."""
    kind = event_map.kind_of(event)
    root = ET.Element("AuditMessage")
    _identification(root, event, kind)
    for participant in event_map.participants(event, kind, source.source_id):
        _participant(root, participant)
    audit_source = ET.SubElement(root, "AuditSourceIdentification",
                                 {"AuditSourceID": xml_text(source.source_id)})
    if source.site:
        audit_source.set("AuditEnterpriseSiteID", xml_text(source.site))
    _code(audit_source, "AuditSourceTypeCode", SOURCE_TYPE)
    _objects(root, event, kind)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return XML_DECLARATION + body


def event_time(at: datetime) -> str:
    """xsd:dateTime in UTC with microseconds, e.g. 2026-01-31T08:00:00.123456Z."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _identification(root: ET.Element, event: LedgerEvent, kind: EventKind) -> None:
    identification = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": kind.action, "EventDateTime": event_time(event.at),
        "EventOutcomeIndicator": codes.outcome_indicator(event.outcome)})
    _code(identification, "EventID", kind.event_id)
    if kind.type_code is not None:
        _code(identification, "EventTypeCode", kind.type_code)
    _code(identification, "EventTypeCode", Code.action(event.action))


def _participant(root: ET.Element, participant: Participant) -> None:
    element = ET.SubElement(root, "ActiveParticipant", {
        "UserID": xml_text(participant.user_id),
        "UserIsRequestor": "true" if participant.requestor else "false"})
    if participant.network is not None and participant.network_type is not None:
        element.set("NetworkAccessPointID", xml_text(participant.network))
        element.set("NetworkAccessPointTypeCode", participant.network_type)
    if participant.role is not None:
        _code(element, "RoleIDCode", participant.role)


def _objects(root: ET.Element, event: LedgerEvent, kind: EventKind) -> None:
    if event.patient_id:
        _object(root, event.patient_id, PERSON, ROLE_PATIENT, codes.PATIENT_NUMBER)
    if event.study_uid:
        study = _object(root, event.study_uid, SYSTEM_OBJECT, ROLE_REPORT,
                        codes.STUDY_INSTANCE_UID)
        if event.accession:
            ET.SubElement(study, "Accession", {"Number": xml_text(event.accession)})
    if kind.event_id == codes.AUDIT_LOG_USED:
        log = _object(root, AUDIT_LOG_URI, SYSTEM_OBJECT, ROLE_SECURITY_RESOURCE, URI)
        _insert_name(log, AUDIT_LOG_NAME)
    query = event_map.query_of(event)
    if query is not None:
        asked = _object(root, event.action, SYSTEM_OBJECT, ROLE_QUERY, codes.QUERY_PARAMETERS)
        ET.SubElement(asked, "ParticipantObjectQuery").text = _b64(query)
    if event.message_id is not None:
        _object(root, str(event.message_id), SYSTEM_OBJECT, ROLE_RESOURCE, codes.MESSAGE_ID)
    entry = _object(root, str(event.seq), SYSTEM_OBJECT, ROLE_RESOURCE, codes.LEDGER_EVENT)
    for name, value in (("chain", event.chain.encode()), ("hash", event.hash.encode()),
                        ("detail", event_map.detail_bytes(event))):
        if value:
            ET.SubElement(entry, "ParticipantObjectDetail", {"type": name, "value": _b64(value)})


def _object(root: ET.Element, identifier: str, type_code: str, role: str,
            id_type: Code) -> ET.Element:
    element = ET.SubElement(root, "ParticipantObjectIdentification", {
        "ParticipantObjectID": xml_text(identifier), "ParticipantObjectTypeCode": type_code,
        "ParticipantObjectTypeCodeRole": role})
    _code(element, "ParticipantObjectIDTypeCode", id_type)
    return element


def _insert_name(element: ET.Element, name: str) -> None:
    """ParticipantObjectName comes right after the ID type code."""
    named = ET.Element("ParticipantObjectName")
    named.text = name
    element.insert(1, named)


def _code(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": xml_text(code.code),
                                       "codeSystemName": code.scheme,
                                       "originalText": xml_text(code.meaning)})


def xml_text(value: str) -> str:
    """`value` with the characters XML 1.0 cannot hold (controls) replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", value)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")
