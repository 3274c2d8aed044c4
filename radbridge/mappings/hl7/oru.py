"""ORU^R01 (v2.5.1) carrying an AI result as a preliminary report, plus the segments
every outbound order message shares (PID, order numbers, coded values).

One ORDER_OBSERVATION, in this order:

- MSH: ORU^R01^ORU_R01; MSH-10 derived from the result id, so a resend after a crash
  carries the same control id; MSH-7 is the result's time (the builder reads no clock).
- PID: PID-3 identifier^^^issuer^MR (an OID issuer goes to HD-2 with HD-3 ISO).
- ORC: RE, placer (ORC-2), filler (ORC-3), ordering provider (ORC-12).
- OBR: the same numbers, OBR-4 procedure, OBR-7/OBR-22 result time, OBR-24 RAD,
  OBR-25 P. The accession goes to OBR-18 (Placer Field 1, where IHE Radiology puts
  it); a site whose RIS reads it as the filler order number sets
  `accession_field="OBR-3"`, and then ORC-3/OBR-3 carry accession^issuer instead.
- OBX report: LOINC 18782-3, as TX lines (one OBX each) or one FT joined by \\.br\\,
  opened by the preliminary notice and, for a demonstration model, its warning.
- OBX per finding n (OBX-4 sub-id n): CWE, OBX-3 the finding, OBX-5 SNOMED 10828004
  Positive / 260385009 Negative, OBX-8 AA (emergent) / A / N; under the same sub-id
  its score (NM, unit 1) and finding site (SNOMED 363698007).
- OBX per measurement: NM with the UCUM unit in OBX-6.
- OBX study instance UID (DCM 110180), algorithm name and version (DCM 111001 /
  111003), device identifier, intended use, demonstration warning (local 99RDB codes).

Every OBX has OBX-11 P, OBX-14/19 the result time and OBX-18 the device identifier.

A revision of a result keeps the order's numbers (receivers match on them) and says what
it is in the result statuses (HL7 tables 0123 and 0085): a correction is OBR-25 C with
OBX-11 C on every observation, a withdrawal (the order was cancelled after the result
went out) is OBR-25 X ("no results available; order canceled") with OBX-11 D (delete).
The report opens with a line saying which, and why. MSH-10 derives from the revision.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from radbridge.mappings.hl7.encoding import (
    Encoded,
    Endpoint,
    Hl7EncodingError,
    components,
    derived_control_id,
    display,
    dt,
    dtm,
    formatted_text,
    message,
    msh,
    namespace,
    nm,
    segment,
    string,
    subcomponents,
    text,
    text_lines,
)
from radbridge.mappings.results import (
    DEMONSTRATION_WARNING,
    PRELIMINARY_NOTICE,
    AiResult,
    Coding,
    Finding,
    OrderRef,
    PatientRef,
    Provider,
    ResultStatus,
    revision_notice,
)

AccessionField = Literal["OBR-18", "OBR-3"]
ReportFormat = Literal["TX", "FT"]
ACCESSION_FIELDS: tuple[AccessionField, ...] = ("OBR-18", "OBR-3")
REPORT_FORMATS: tuple[ReportFormat, ...] = ("TX", "FT")
DEFAULT_SENDING = Endpoint("RADBRIDGE")
NO_RECEIVER = Endpoint()
ORU_R01 = ("ORU", "R01", "ORU_R01")

LOCAL = "99RDB"  # HL7 table 0396: 99zzz is a locally defined coding system
POSITIVE = Coding("10828004", "SCT", "Positive")
NEGATIVE = Coding("260385009", "SCT", "Negative")
REPORT = Coding("18782-3", "LN", "Radiology Study observation (narrative)")
FINDING_SITE = Coding("363698007", "SCT", "Finding site")
STUDY_UID = Coding("110180", "DCM", "Study Instance UID")
ALGORITHM_NAME = Coding("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = Coding("111003", "DCM", "Algorithm Version")
SCORE = Coding("AI-SCORE", LOCAL, "AI model score")
DEVICE = Coding("AI-DEVICE", LOCAL, "AI device identifier")
INTENDED_USE = Coding("AI-USE", LOCAL, "AI intended use")
WARNING = Coding("AI-WARNING", LOCAL, "AI usage warning")

ORDER_STATUS = {ResultStatus.PRELIMINARY: "P", ResultStatus.CORRECTED: "C",
                ResultStatus.WITHDRAWN: "X"}
"""OBR-25 per result status (HL7 table 0123)."""
OBSERVATION_STATUS = {ResultStatus.PRELIMINARY: "P", ResultStatus.CORRECTED: "C",
                      ResultStatus.WITHDRAWN: "D"}
"""OBX-11 per result status (HL7 table 0085)."""

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_MAX_SET_ID = 9999  # SI: four digits


@dataclass(frozen=True)
class Observation:
    """One OBX before numbering: value type, code, wire value and the optional extras."""

    value_type: str
    code: Coding
    value: Encoded
    sub_id: str = ""
    units: Encoded | None = None
    abnormal: str = ""


def build_oru_r01(
    result: AiResult,
    *,
    sending: Endpoint = DEFAULT_SENDING,
    receiving: Endpoint = NO_RECEIVER,
    control_id: str | None = None,
    message_time: datetime | None = None,
    accession_field: AccessionField = "OBR-18",
    report_format: ReportFormat = "TX",
    processing_id: str = "P",
) -> str:
    """The ORU^R01 for `result`, segments joined by CR (layout in the module docstring)."""
    choose("accession_field", accession_field, ACCESSION_FIELDS)
    choose("report_format", report_format, REPORT_FORMATS)
    segments = [
        msh(sending=sending, receiving=receiving, time=message_time or result.created_at,
            message_type=ORU_R01, control_id=control_id or oru_control_id(result),
            processing_id=processing_id),
        pid_segment(result.patient),
        *order_segments(result, accession_field),
        *obx_segments(result, observations(result, report_format)),
    ]
    return message(segments)


def oru_control_id(result: AiResult) -> str:
    """The MSH-10 `build_oru_r01` gives `result` unless told otherwise."""
    return derived_control_id("ORU^R01", result.revision_key)


def order_segments(result: AiResult, accession_field: AccessionField) -> list[str]:
    """ORC (RE) and OBR for a result of `result.order`, OBR-25 by its status."""
    order, time = result.order, dtm(result.created_at)
    placer, filler, accession = order_numbers(order, accession_field)
    provider = provider_xcn(order.ordering_provider)
    orc = segment("ORC", {1: "RE", 2: placer, 3: filler, 12: provider})
    obr = segment("OBR", {
        1: "1", 2: placer, 3: filler, 4: coded(order.procedure, "OBR-4"), 7: time,
        16: provider, 18: accession, 22: time, 24: "RAD", 25: ORDER_STATUS[result.status],
    })
    return [orc, obr]


def observations(result: AiResult, report_format: ReportFormat) -> list[Observation]:
    """Every OBX of the result, in message order."""
    return [
        *report_observations(result, report_format),
        *(obs for n, finding in enumerate(result.findings, 1)
          for obs in finding_observations(finding, str(n))),
        *(Observation("NM", m.coding, nm(m.value, "OBX-5"),
                      units=components(string(m.unit, "OBX-6.1"), display(m.unit), "UCUM"))
          for m in result.measurements),
        Observation("ST", STUDY_UID, string(result.study_uid, "OBX-5")),
        *model_observations(result),
    ]


def report_observations(result: AiResult, report_format: ReportFormat) -> list[Observation]:
    """The draft report, opened by the notices that it is preliminary (and a demo), and
    for a revision by what it revises."""
    lines = [*revision_notice(result), PRELIMINARY_NOTICE]
    if result.model.demonstration:
        lines.append(DEMONSTRATION_WARNING)
    body = text_lines(result.report_text)
    if body:
        lines += ["", *body]
    if report_format == "FT":
        return [Observation("FT", REPORT, formatted_text(lines, "OBX-5"))]
    return [Observation("TX", REPORT, text(line, "OBX-5")) for line in lines]


def finding_observations(finding: Finding, sub_id: str) -> list[Observation]:
    """The coded finding, then its score and site under the same sub-id."""
    value = POSITIVE if finding.positive else NEGATIVE
    flag = "AA" if finding.is_emergent else "A" if finding.positive else "N"
    found = [Observation("CWE", finding.coding, coded(value, "OBX-5"), sub_id, abnormal=flag)]
    if finding.score is not None:
        found.append(Observation("NM", SCORE, nm(finding.score, "OBX-5"), sub_id,
                                 units=components("1", None, "UCUM")))
    if finding.body_site is not None:
        found.append(Observation("CWE", FINDING_SITE, coded(finding.body_site, "OBX-5"),
                                 sub_id))
    return found


def model_observations(result: AiResult) -> list[Observation]:
    """Which model produced the result, and the warning a demonstration model carries."""
    model = result.model
    found = [
        Observation("ST", ALGORITHM_NAME, string(model.name, "OBX-5")),
        Observation("ST", ALGORITHM_VERSION, string(model.version, "OBX-5")),
        Observation("ST", DEVICE, string(model.device_identifier, "OBX-5")),
    ]
    if model.intended_use:
        found.append(Observation("TX", INTENDED_USE, text(" ".join(
            text_lines(model.intended_use)), "OBX-5")))
    if model.demonstration:
        found.append(Observation("TX", WARNING, text(DEMONSTRATION_WARNING, "OBX-5")))
    return found


def obx_segments(result: AiResult, found: Iterable[Observation]) -> list[str]:
    """Numbered OBX segments, each with the result's status (OBX-11), the time and the
    device (OBX-18)."""
    time = dtm(result.created_at)
    status = OBSERVATION_STATUS[result.status]
    device = components(string(result.model.device_identifier, "OBX-18"))
    segments = []
    for set_id, obs in enumerate(found, 1):
        if set_id > _MAX_SET_ID:
            raise Hl7EncodingError("OBX-1", f"more than {_MAX_SET_ID} observations")
        segments.append(segment("OBX", {
            1: str(set_id), 2: obs.value_type, 3: coded(obs.code, "OBX-3"), 4: obs.sub_id,
            5: obs.value, 6: obs.units, 8: obs.abnormal, 11: status, 14: time, 18: device,
            19: time,
        }))
    return segments


# --- segments and types shared with the order messages (priority.py) ------------------


def pid_segment(patient: PatientRef) -> str:
    """PID with the identifier under its assigning authority, name, birth date, sex."""
    identifier = components(string(patient.identifier, "PID-3.1"), None, None,
                            authority(patient.issuer, "PID-3.4"), "MR")
    if patient.family or patient.given:
        name = components(string(patient.family or "", "PID-5.1"),
                          string(patient.given or "", "PID-5.2"))
    else:
        name = components(*[None] * 6, "U")  # PID-5 is required: name type "unspecified"
    return segment("PID", {
        1: "1", 3: identifier, 5: name,
        7: None if patient.birth_date is None else dt(patient.birth_date),
        8: None if patient.sex is None else patient.sex.value,
    })


def order_numbers(
    order: OrderRef, accession_field: AccessionField,
) -> tuple[Encoded | None, Encoded | None, Encoded | None]:
    """(placer EI, filler EI, OBR-18) with the accession where the site wants it."""
    placer = _ei(order.placer_number, "ORC-2")
    if accession_field == "OBR-3":
        return placer, accession_ei(order, "OBR-3"), None
    return placer, _ei(order.filler_number, "ORC-3"), string(order.accession, "OBR-18")


def accession_ei(order: OrderRef, field: str) -> Encoded:
    """The accession as an EI, with its issuer as namespace or OID when known."""
    issuer = order.accession_issuer
    parts = () if issuer is None else _hd_parts(issuer, f"{field}.2")
    return components(string(order.accession, f"{field}.1"), *parts)


def authority(issuer: str, field: str) -> Encoded:
    """An assigning authority (HD) inside a component: namespace, or OID&ISO."""
    return subcomponents(*_hd_parts(issuer, field))


def _hd_parts(issuer: str, field: str) -> tuple[Encoded | None, ...]:
    if _OID.fullmatch(issuer):
        return None, string(issuer, field), Encoded("ISO")
    return (namespace(issuer, field),)


def _ei(number: str | None, field: str) -> Encoded | None:
    return None if number is None else components(string(number, field))


def provider_xcn(provider: Provider | None) -> Encoded | None:
    """The ordering provider as an XCN: id^family^given."""
    if provider is None:
        return None
    return components(*(None if part is None else string(part, f"ORC-12.{n}")
                        for n, part in enumerate(
                            (provider.identifier, provider.family, provider.given), 1)))


def coded(coding: Coding, field: str) -> Encoded:
    """A CE/CWE: code^display^system (the display cut to fit, the rest must fit)."""
    return components(string(coding.code, f"{field}.1"), display(coding.display),
                      string(coding.system, f"{field}.3", 20))


def choose(option: str, value: str, allowed: tuple[str, ...]) -> None:
    """Reject an option value that is not one of `allowed`, naming both."""
    if value not in allowed:
        raise ValueError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
