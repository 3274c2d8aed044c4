"""Acknowledgements (ACK) in original and enhanced mode, with an ERR segment on errors.

Original mode answers AA/AE/AR in MSA-1. Enhanced mode (the sender valued MSH-15 or
MSH-16) answers the commit acknowledgement CA/CE/CR, and only when MSH-15 asks for it:
AL always, NE never, ER only on error, SU only on success (HL7 table 0155). The ERR
segment follows the message's version: ERR-2/3/4/8 from v2.5 on, ERR-1 before.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from radbridge.mappings.hl7.encoding import dtm, escape
from radbridge.mappings.hl7.header import ERROR_TEXT, AckCode, Hl7Header, Hl7Rejection

_ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}
_DEFAULT_VERSION = "2.5.1"


def ack_code_for(header: Hl7Header | None, code: AckCode) -> str | None:
    """The MSA-1 to send, or None when the sender asked not to be acknowledged."""
    if header is None or not header.enhanced_mode:
        return code
    wanted = header.accept_ack_type or "AL"
    if wanted == "NE" or (wanted == "ER" and code == "AA") or (wanted == "SU" and code != "AA"):
        return None
    return _ENHANCED[code]


def build_ack(
    header: Hl7Header | None,
    code: AckCode,
    *,
    application: str,
    facility: str,
    at: datetime,
    rejection: Hl7Rejection | None = None,
    control_id: str | None = None,
) -> str | None:
    """The ACK for `header` (None when the message had no readable MSH), or None if unwanted.

    Segments are separated by CR; the caller frames and encodes it.
    """
    msa_code = ack_code_for(header, code)
    if msa_code is None:
        return None
    sep = header.field_separator if header else "|"
    enc = header.encoding_characters if header else "^~\\&"
    delimiters = sep + enc
    component = enc[0]
    version = header.version if header and header.version else _DEFAULT_VERSION
    trigger = header.trigger_event if header else ""
    message_type = component.join(("ACK", trigger, "ACK"))
    msh = [
        "MSH", enc, escape(application, delimiters), escape(facility, delimiters),
        escape(header.sending_application, delimiters) if header else "",
        escape(header.sending_facility, delimiters) if header else "",
        dtm(at), "", message_type, control_id or uuid.uuid4().hex[:20],
        (header.processing_id if header and header.processing_id else "P"), version,
    ]
    if header is not None and header.charset:
        msh += ["", "", "", "", "", header.charset]
    msa = ["MSA", msa_code, escape(header.control_id, delimiters) if header else ""]
    segments = [sep.join(msh), sep.join(msa)]
    if rejection is not None:
        segments.append(_err_segment(rejection, version, delimiters))
    return "\r".join(segments) + "\r"


def _err_segment(rejection: Hl7Rejection, version: str, delimiters: str) -> str:
    sep, component, subcomponent = delimiters[0], delimiters[1], delimiters[4]
    text = escape(rejection.reason[:400], delimiters)
    code = component.join((str(rejection.error_code),
                           ERROR_TEXT.get(rejection.error_code, "Error"), "HL70357"))
    location = _location(rejection.location, component)
    if _at_least_2_5(version):
        severity = "E"
        return sep.join(["ERR", "", location, code, severity, "", "", "", text])
    old_code = subcomponent.join((str(rejection.error_code), text, "HL70357"))
    return sep.join(["ERR", component.join((*location.split(component)[:3], old_code))])


def _location(location: str | None, component: str) -> str:
    """ERL: segment id ^ sequence ^ field position, from 'MSH-12' or 'PID'."""
    if not location or location.startswith("segment "):
        return ""
    segment, _, field = location.partition("-")
    return component.join((segment, "1", field)) if field else component.join((segment, "1"))


def _at_least_2_5(version: str) -> bool:
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) >= (2, 5)
    except ValueError:
        return True
