"""Worklist priority update: tell the RIS to read an order STAT after an emergent AI finding.

An order-change message (ORC-1 XO) for the existing order. ORC-5 is left empty, which
in an update means "unchanged": the order keeps its status, only its priority moves.
Which message a site's RIS takes is the `style` option:

- ``ORM_O01``: ORC-7 quantity/timing with priority S (TQ component 6), and in the
  OBR, OBR-5 S and OBR-27 likewise; the reason follows the OBR as NTEs.
- ``OMI_O23``: TQ1-9 S^Stat^HL70485 (HL7 table 0485), OBR, NTEs, and the IPC the
  message requires: accession (IPC-1), requested procedure id (IPC-2), study
  instance UID (IPC-3), scheduled procedure step id (IPC-4); unknown ids fall back to
  the accession, the identifier most RIS assign both from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from radbridge.mappings.hl7.encoding import (
    Encoded,
    Endpoint,
    components,
    derived_control_id,
    formatted_text,
    message,
    msh,
    nm,
    segment,
    string,
    text_lines,
)
from radbridge.mappings.hl7.oru import (
    ACCESSION_FIELDS,
    DEFAULT_SENDING,
    NO_RECEIVER,
    AccessionField,
    accession_ei,
    choose,
    coded,
    order_numbers,
    pid_segment,
    provider_xcn,
)
from radbridge.mappings.results import (
    DEMONSTRATION_WARNING,
    PRELIMINARY_NOTICE,
    AiResult,
    OrderRef,
    PatientRef,
)

PriorityStyle = Literal["ORM_O01", "OMI_O23"]
STYLES: tuple[PriorityStyle, ...] = ("ORM_O01", "OMI_O23")
STAT = "S"  # tables 0027 (OBR-5, TQ-6) and 0485 (TQ1-9) agree on the code


def build_priority_update(
    source: AiResult | OrderRef,
    *,
    style: PriorityStyle = "ORM_O01",
    sending: Endpoint = DEFAULT_SENDING,
    receiving: Endpoint = NO_RECEIVER,
    control_id: str | None = None,
    message_time: datetime | None = None,
    patient: PatientRef | None = None,
    study_uid: str | None = None,
    reason: str | None = None,
    accession_field: AccessionField = "OBR-18",
    processing_id: str = "P",
) -> str:
    """An XO raising `source`'s order to STAT, with the reason in NTEs.

    From an AiResult, patient, study, time and reason come from the result (which must
    have a positive emergent finding unless `reason` is given). From a bare OrderRef,
    `message_time` and `reason` are required, and `study_uid` too for OMI^O23.
    """
    choose("style", style, STYLES)
    choose("accession_field", accession_field, ACCESSION_FIELDS)
    key: tuple[str, ...]
    if isinstance(source, AiResult):
        order, notes = source.order, reason_lines(source) if reason is None else [reason]
        patient = patient or source.patient
        study_uid = study_uid or source.study_uid
        message_time = message_time or source.created_at
        key = _result_key(source, style)
    else:
        order, notes = source, [] if reason is None else [reason]
        key = ("priority", style, order.accession, order.placer_number or "",
               order.filler_number or "")
    if not notes:
        raise ValueError("no positive emergent finding and no reason: nothing justifies STAT")
    if message_time is None:
        raise ValueError("message_time is required when building from an OrderRef")
    if style == "OMI_O23" and study_uid is None:
        raise ValueError("OMI^O23 needs the study instance UID (IPC-3)")
    header = msh(sending=sending, receiving=receiving, time=message_time,
                 message_type=_message_type(style),
                 control_id=control_id or derived_control_id(*key),
                 processing_id=processing_id)
    order_group = (_orm_order(order, accession_field, notes) if style == "ORM_O01"
                   else _omi_order(order, accession_field, study_uid or "", notes))
    patient_group = [] if patient is None else [pid_segment(patient)]
    return message([header, *patient_group, *order_group])


def priority_control_id(result: AiResult, style: PriorityStyle) -> str:
    """The MSH-10 `build_priority_update` gives an update for `result` in `style`."""
    return derived_control_id(*_result_key(result, style))


def _result_key(result: AiResult, style: PriorityStyle) -> tuple[str, ...]:
    return ("priority", style, result.revision_key)


def reason_lines(result: AiResult) -> list[str]:
    """Why the priority is raised: each emergent finding, the model, the caveats."""
    lines = [
        f"AI triage: emergent finding {finding.display or finding.code} "
        f"({finding.system} {finding.code}) positive"
        + ("" if finding.score is None else f", score {nm(finding.score, 'NTE-3')}")
        for finding in result.emergent_findings
    ]
    if not lines:
        return []
    lines += [f"Model: {result.model.label}", PRELIMINARY_NOTICE]
    if result.model.demonstration:
        lines.append(DEMONSTRATION_WARNING)
    return lines


def _message_type(style: PriorityStyle) -> tuple[str, str, str]:
    return ("ORM", "O01", "ORM_O01") if style == "ORM_O01" else ("OMI", "O23", "OMI_O23")


def _stat_tq() -> Encoded:
    return components(None, None, None, None, None, STAT)  # TQ-6 is the priority


def _orm_order(order: OrderRef, accession_field: AccessionField, notes: list[str]) -> list[str]:
    placer, filler, accession = order_numbers(order, accession_field)
    provider = provider_xcn(order.ordering_provider)
    return [
        segment("ORC", {1: "XO", 2: placer, 3: filler, 7: _stat_tq(), 12: provider}),
        segment("OBR", {1: "1", 2: placer, 3: filler, 4: coded(order.procedure, "OBR-4"),
                        5: STAT, 16: provider, 18: accession, 27: _stat_tq()}),
        *_notes(notes),
    ]


def _omi_order(
    order: OrderRef, accession_field: AccessionField, study_uid: str, notes: list[str],
) -> list[str]:
    placer, filler, accession = order_numbers(order, accession_field)
    provider = provider_xcn(order.ordering_provider)
    fallback = order.accession
    return [
        segment("ORC", {1: "XO", 2: placer, 3: filler, 12: provider}),
        segment("TQ1", {1: "1", 9: components(STAT, "Stat", "HL70485")}),
        segment("OBR", {1: "1", 2: placer, 3: filler, 4: coded(order.procedure, "OBR-4"),
                        16: provider, 18: accession}),
        *_notes(notes),
        segment("IPC", {
            1: accession_ei(order, "IPC-1"),
            2: components(string(order.requested_procedure_id or fallback, "IPC-2")),
            3: components(string(study_uid, "IPC-3", 64)),
            4: components(string(order.scheduled_step_id or fallback, "IPC-4")),
        }),
    ]


def _notes(lines: list[str]) -> list[str]:
    return [segment("NTE", {1: str(n), 2: "O", 3: formatted_text(text_lines(line), "NTE-3")})
            for n, line in enumerate(lines, 1)]
