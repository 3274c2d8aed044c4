"""The coded values of audit messages: DICOM's (PS3.16 "DCM", PS3.15 A.5.3), RFC 3881's,
and this product's own actions as a private coding scheme.

DICOM writes a coded value as (code, coding scheme designator, meaning); FHIR as a
Coding with a system URI. `Code` carries both, so the DICOM and the FHIR exports use
one table of codes and cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

DCM_URI = "http://dicom.nema.org/resources/ontology/DCM"
RFC3881 = "RFC-3881"
PRIVATE_SCHEME = "99RADBRIDGE"
"""DICOM's convention for a private coding scheme designator: "99" and a name."""
ACTION_URI = "urn:radbridge:audit-action"
"""Where FHIR finds our action names (a local code system, named here)."""


@dataclass(frozen=True)
class Code:
    """One coded value: `scheme` as DICOM names it, `system` as FHIR names it."""

    code: str
    scheme: str
    meaning: str
    system: str

    @classmethod
    def dcm(cls, code: str, meaning: str) -> Code:
        return cls(code, "DCM", meaning, DCM_URI)

    @classmethod
    def action(cls, action: str) -> Code:
        """Our own action name, carried beside the standard code in every message."""
        return cls(action, PRIVATE_SCHEME, action, ACTION_URI)


# --- Event IDs (PS3.15 A.5.3) -----------------------------------------------------------
APPLICATION_ACTIVITY = Code.dcm("110100", "Application Activity")
AUDIT_LOG_USED = Code.dcm("110101", "Audit Log Used")
INSTANCES_ACCESSED = Code.dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = Code.dcm("110104", "DICOM Instances Transferred")
EXPORT = Code.dcm("110106", "Export")
IMPORT = Code.dcm("110107", "Import")
ORDER_RECORD = Code.dcm("110109", "Order Record")
PATIENT_RECORD = Code.dcm("110110", "Patient Record")
PROCEDURE_RECORD = Code.dcm("110111", "Procedure Record")
QUERY = Code.dcm("110112", "Query")
SECURITY_ALERT = Code.dcm("110113", "Security Alert")
USER_AUTHENTICATION = Code.dcm("110114", "User Authentication")

# --- Event type codes -------------------------------------------------------------------
APPLICATION_START = Code.dcm("110120", "Application Start")
LOGIN = Code.dcm("110122", "Login")
NODE_AUTHENTICATION = Code.dcm("110126", "Node Authentication")
SOFTWARE_CONFIGURATION = Code.dcm("110131", "Software Configuration")
USER_SECURITY_ATTRIBUTES_CHANGED = Code.dcm("110137", "User Security Attributes Changed")

# --- Active participant roles -----------------------------------------------------------
ROLE_APPLICATION = Code.dcm("110150", "Application")
ROLE_DESTINATION = Code.dcm("110152", "Destination Role ID")
ROLE_SOURCE = Code.dcm("110153", "Source Role ID")

# --- Participant object ID types --------------------------------------------------------
PATIENT_NUMBER = Code("2", RFC3881, "Patient Number", "urn:ietf:rfc:3881")
STUDY_INSTANCE_UID = Code.dcm("110180", "Study Instance UID")
MESSAGE_ID = Code("message", PRIVATE_SCHEME, "Radbridge message id", "urn:radbridge:message")
LEDGER_EVENT = Code("audit-event", PRIVATE_SCHEME, "Radbridge audit ledger sequence number",
                    "urn:radbridge:audit-event")
QUERY_PARAMETERS = Code("query", PRIVATE_SCHEME, "Radbridge query parameters",
                        "urn:radbridge:query")

# --- Outcomes ---------------------------------------------------------------------------
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = "0", "4", "8", "12"
OUTCOMES = {"success": SUCCESS, "retry": MINOR_FAILURE, "failure": SERIOUS_FAILURE,
            "dead": SERIOUS_FAILURE, "denied": SERIOUS_FAILURE}
"""Our outcome words -> EventOutcomeIndicator; any other word is a major failure."""


def outcome_indicator(outcome: str) -> str:
    return OUTCOMES.get(outcome, MAJOR_FAILURE)
