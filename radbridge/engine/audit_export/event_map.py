"""What each of our audit actions is in the standards' terms: the DICOM Event ID, the
action code (C create, R read, U update, D delete, E execute), an event type code, and
which way data moved. One table for the DICOM audit message and the FHIR AuditEvent.

    action                                    Event ID                        code
    message.received / .rejected, DICOM       110104 DICOM Instances Transferred  C
    message.received / .rejected, other       110107 Import                   C
    delivery.sent / .failed                   110106 Export                   R
    message.viewed with a study UID, study.viewed  110103 DICOM Instances Accessed R
    message.viewed (an HL7 or other message)  110110 Patient Record           R
    inference.viewed                          110111 Procedure Record         R
    *.viewed / *.read                         110110 Patient Record           R
    message.listed, *.listed, *.searched      110112 Query                    E
    audit.*                                   110101 Audit Log Used           R
    registry.patient.created / encounter.created  110110 Patient Record       C
    registry.patient.* / registry.encounter.* 110110 Patient Record           U
    registry.order.created                    110109 Order Record             C
    registry.order.*                          110109 Order Record             U
    correlation.linked / .resolved / .rejected  110109 Order Record           U
    dicom.instance-versioned, dicom.study-reopened  110103 Instances Accessed U
    inference.run                             110103 DICOM Instances Accessed R
    result.preliminary / .corrected / .withdrawn  110111 Procedure Record     C / U / D
    qa.report                                 110111 Procedure Record         R
    dicom.association-rejected                110113 Security Alert (110126 Node Authentication) E
    token.*                                   110113 Security Alert (110137 User Security
                                              Attributes Changed)             E
    config.loaded                             110100 Application Activity (110120 Application
                                              Start)                          E
    config.* (reloaded), channel.* (deployed, paused, ...), runtime.*
                                              110113 Security Alert (110131 Software
                                              Configuration)                  E
    auth.*                                    110114 User Authentication (110122 Login) E
    anything else                             110100 Application Activity     E

The first matching row wins (exact names before prefixes before suffixes). Every message
also carries the action itself as an event type code of our private scheme, so nothing
is lost by the mapping: a collector can always tell message.transformed from
retention.pruned although both are Application Activity.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Literal

from radbridge.engine.audit_export import codes
from radbridge.engine.audit_export.codes import Code
from radbridge.engine.audit_export.events import LedgerEvent

Direction = Literal["in", "out"] | None
ActionCode = Literal["C", "R", "U", "D", "E"]


@dataclass(frozen=True)
class EventKind:
    """An action in the standards' terms."""

    event_id: Code
    action: ActionCode
    type_code: Code | None = None
    direction: Direction = None
    """"in": data came into this node (a receive); "out": it left (a send)."""


_DICOM_IN = EventKind(codes.INSTANCES_TRANSFERRED, "C", direction="in")
_IMPORT = EventKind(codes.IMPORT, "C", direction="in")
_PATIENT_CREATED = EventKind(codes.PATIENT_RECORD, "C")
_PATIENT_UPDATED = EventKind(codes.PATIENT_RECORD, "U")
_PATIENT_READ = EventKind(codes.PATIENT_RECORD, "R")
_ORDER_UPDATED = EventKind(codes.ORDER_RECORD, "U")
_INSTANCES_UPDATED = EventKind(codes.INSTANCES_ACCESSED, "U")
_QUERY = EventKind(codes.QUERY, "E")
_ACTIVITY = EventKind(codes.APPLICATION_ACTIVITY, "E")
_CONFIGURATION = EventKind(codes.SECURITY_ALERT, "E", codes.SOFTWARE_CONFIGURATION)

EXACT: dict[str, EventKind] = {
    "message.received#dicom": _DICOM_IN,
    "message.rejected#dicom": _DICOM_IN,
    "message.received": _IMPORT,
    "message.rejected": _IMPORT,
    "delivery.sent": EventKind(codes.EXPORT, "R", direction="out"),
    "delivery.failed": EventKind(codes.EXPORT, "R", direction="out"),
    "message.viewed#study": EventKind(codes.INSTANCES_ACCESSED, "R"),
    "study.viewed": EventKind(codes.INSTANCES_ACCESSED, "R"),
    "inference.viewed": EventKind(codes.PROCEDURE_RECORD, "R"),
    "message.listed": _QUERY,
    "registry.patient.created": _PATIENT_CREATED,
    "registry.encounter.created": _PATIENT_CREATED,
    "registry.order.created": EventKind(codes.ORDER_RECORD, "C"),
    "correlation.linked": _ORDER_UPDATED,
    "correlation.resolved": _ORDER_UPDATED,
    "correlation.rejected": _ORDER_UPDATED,
    "dicom.instance-versioned": _INSTANCES_UPDATED,
    "dicom.study-reopened": _INSTANCES_UPDATED,
    "inference.run": EventKind(codes.INSTANCES_ACCESSED, "R"),
    "result.preliminary": EventKind(codes.PROCEDURE_RECORD, "C"),
    "result.corrected": EventKind(codes.PROCEDURE_RECORD, "U"),
    "result.withdrawn": EventKind(codes.PROCEDURE_RECORD, "D"),
    "qa.report": EventKind(codes.PROCEDURE_RECORD, "R"),
    "dicom.association-rejected": EventKind(codes.SECURITY_ALERT, "E",
                                            codes.NODE_AUTHENTICATION),
    "config.loaded": EventKind(codes.APPLICATION_ACTIVITY, "E", codes.APPLICATION_START),
}
PREFIXES: tuple[tuple[str, EventKind], ...] = (
    ("audit.", EventKind(codes.AUDIT_LOG_USED, "R")),
    ("registry.patient.", _PATIENT_UPDATED),
    ("registry.encounter.", _PATIENT_UPDATED),
    ("registry.order.", _ORDER_UPDATED),
    ("token.", EventKind(codes.SECURITY_ALERT, "E", codes.USER_SECURITY_ATTRIBUTES_CHANGED)),
    ("auth.", EventKind(codes.USER_AUTHENTICATION, "E", codes.LOGIN)),
    ("config.", _CONFIGURATION),
    ("channel.", _CONFIGURATION),
    ("runtime.", _CONFIGURATION),
)
SUFFIXES: tuple[tuple[str, EventKind], ...] = (
    (".viewed", _PATIENT_READ),
    (".read", _PATIENT_READ),
    (".listed", _QUERY),
    (".searched", _QUERY),
)
DICOM_CONTENT = "application/dicom"


def kind_of(event: LedgerEvent) -> EventKind:
    """The standard terms for `event` (see the table in the module docstring)."""
    for key in _keys(event):
        if key in EXACT:
            return EXACT[key]
    for prefix, kind in PREFIXES:
        if event.action.startswith(prefix):
            return kind
    for suffix, kind in SUFFIXES:
        if event.action.endswith(suffix):
            return kind
    return _ACTIVITY


def _keys(event: LedgerEvent) -> tuple[str, ...]:
    """The table keys to try, most specific first."""
    content_type = str(event.detail.get("content_type", ""))
    if content_type.split(";")[0].strip().lower() == DICOM_CONTENT:
        return (f"{event.action}#dicom", event.action)
    if event.study_uid:
        return (f"{event.action}#study", event.action)
    return (event.action,)


# --- who took part ------------------------------------------------------------------------

EXTERNAL_PREFIXES = ("api:", "token:", "oidc:", "cli:", "user:", "dimse:", "mllp:", "http:",
                     "file:")
"""Actors outside this node: people (API callers, CLI users) and peers (senders)."""


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant (DICOM) or agent (FHIR)."""

    user_id: str
    requestor: bool
    role: Code | None = None
    network: str | None = None
    network_type: str | None = None
    """"1" a machine name, "2" an IP address (RFC 3881's NetworkAccessPointTypeCode)."""
    person: bool = False
    """A person (an API caller, a CLI user) rather than a system."""


def participants(event: LedgerEvent, kind: EventKind, node: str) -> list[Participant]:
    """Who took part: the actor (when outside this node), this node (the application),
    and for a send the destination. Exactly one of them is the requestor."""
    actor = event.actor.removeprefix("source:")
    external = actor.startswith(EXTERNAL_PREFIXES)
    this_node = event.node or node
    node_role = {"in": codes.ROLE_DESTINATION, "out": codes.ROLE_SOURCE}.get(
        kind.direction or "", codes.ROLE_APPLICATION)
    found: list[Participant] = []
    if external:
        found.append(_external(actor, kind))
    found.append(Participant(this_node if external else f"{this_node}/{event.actor}",
                             requestor=not external, role=node_role))
    destination = event.detail.get("destination")
    if kind.direction == "out" and isinstance(destination, str):
        found.append(Participant(f"{event.channel or '-'}/{destination}", requestor=False,
                                 role=codes.ROLE_DESTINATION))
    return found


def _external(actor: str, kind: EventKind) -> Participant:
    role = codes.ROLE_SOURCE if kind.direction == "in" else None
    person = actor.startswith(("api:", "token:", "oidc:", "cli:", "user:"))
    if actor.startswith("dimse:"):  # dimse:CALLING_AE@ip
        title, _, host = actor.removeprefix("dimse:").rpartition("@")
        return Participant(title or actor, True, role, *_network(host))
    scheme, _, rest = actor.partition(":")
    host = rest if scheme == "api" else _host_of(rest) if scheme in ("mllp", "http") else ""
    return Participant(actor, True, role, *_network(host), person=person)


def _host_of(peer: str) -> str:
    """The host of "host:port", "[v6]:port" or a bare host."""
    if peer.startswith("["):
        return peer[1:].partition("]")[0]
    host, colon, port = peer.rpartition(":")
    if not (colon and port.isdigit()):
        return peer
    return host if ":" not in host or _is_ip(host) else peer


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _network(host: str) -> tuple[str | None, str | None]:
    if not host or host == "unknown":
        return None, None
    return host, "2" if _is_ip(host) else "1"


@dataclass(frozen=True)
class AuditSource:
    """Who reports the events: AuditSourceIdentification (DICOM), AuditEvent.source (FHIR)."""

    source_id: str
    """This node's id (AuditSourceID; the FHIR source observer)."""
    site: str | None = None
    """AuditEnterpriseSiteID / source.site: the hospital or site, when configured."""


DETAIL_LIMIT = 8 * 1024
"""Bytes of an event's JSON detail that a message carries (a UDP datagram must hold it)."""


def detail_bytes(event: LedgerEvent) -> bytes:
    """The event's detail as compact JSON, cut at DETAIL_LIMIT (then marked as cut)."""
    body = json.dumps(dict(event.detail), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str).encode()
    if len(body) <= DETAIL_LIMIT:
        return body
    return body[:DETAIL_LIMIT - 14] + b"...[truncated]"


def query_of(event: LedgerEvent) -> bytes | None:
    """The filters of a query or search event, as JSON (None for other events)."""
    filters = event.detail.get("filters")
    if not isinstance(filters, dict):
        return None
    return json.dumps(filters, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()
