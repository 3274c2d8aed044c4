"""Channel transformers that render an AI result payload as HL7 v2.5.1.

Both take a payload whose content is the result JSON (`results.result_to_json`) and
return `application/hl7-v2` content (UTF-8, segments separated by CR), with the
payload's patient_id, accession and study_uid set for the audit ledger and metadata:
`result_id`, `emergent` ("true"/"false"), `demonstration` ("true"/"false") and, when a
message was built, `hl7_message_type` and `hl7_control_id`.

`hl7.worklist_priority` builds a message only for a result with a positive emergent
finding. For any other it returns the payload unchanged (still the JSON) with
`metadata.emergent` "false", so the RIS destination must filter on it; filters on
metadata run after the transformers only as destination filters:

    transformers:
      - name: hl7.worklist_priority
        options: {style: OMI_O23, receiving_application: RIS}
    destinations:
      - name: ris
        filter: {rules: [{field: metadata.emergent, equals: "true"}]}
"""

from __future__ import annotations

import json

from radbridge.mappings.hl7.encoding import Endpoint
from radbridge.mappings.hl7.oru import AccessionField, ReportFormat, build_oru_r01, oru_control_id
from radbridge.mappings.hl7.priority import (
    PriorityStyle,
    build_priority_update,
    priority_control_id,
)
from radbridge.mappings.payload import Payload
from radbridge.mappings.registry import mapping
from radbridge.mappings.results import AiResult, ResultFormatError, result_from_json

CONTENT_TYPE = "application/hl7-v2"


@mapping("hl7.oru_r01")
def oru_r01(
    payload: Payload,
    *,
    sending_application: str = "RADBRIDGE",
    sending_facility: str = "",
    receiving_application: str = "",
    receiving_facility: str = "",
    accession_field: AccessionField = "OBR-18",
    report_format: ReportFormat = "TX",
    processing_id: str = "P",
) -> Payload:
    """The result as a preliminary ORU^R01 (see `oru.build_oru_r01` for the layout)."""
    result = read_result(payload)
    text = build_oru_r01(
        result,
        sending=_endpoint("sending", sending_application, sending_facility),
        receiving=_endpoint("receiving", receiving_application, receiving_facility),
        accession_field=accession_field, report_format=report_format,
        processing_id=processing_id,
    )
    return _rendered(payload, result, text, "ORU^R01", oru_control_id(result))


@mapping("hl7.worklist_priority")
def worklist_priority(
    payload: Payload,
    *,
    style: PriorityStyle = "ORM_O01",
    sending_application: str = "RADBRIDGE",
    sending_facility: str = "",
    receiving_application: str = "",
    receiving_facility: str = "",
    accession_field: AccessionField = "OBR-18",
    processing_id: str = "P",
) -> Payload:
    """A STAT order update for an emergent result; others pass marked emergent=false."""
    result = read_result(payload)
    if not result.emergent_findings:
        return _marked(payload, result)
    text = build_priority_update(
        result, style=style,
        sending=_endpoint("sending", sending_application, sending_facility),
        receiving=_endpoint("receiving", receiving_application, receiving_facility),
        accession_field=accession_field, processing_id=processing_id,
    )
    message_type = "ORM^O01" if style == "ORM_O01" else "OMI^O23"
    return _rendered(payload, result, text, message_type, priority_control_id(result, style))


def read_result(payload: Payload) -> AiResult:
    """The AI result a payload carries; ResultFormatError when it is not one."""
    try:
        document = json.loads(payload.content)
    except ValueError as exc:
        raise ResultFormatError("$", f"content is not JSON: {exc}") from exc
    return result_from_json(document)


def _marked(payload: Payload, result: AiResult) -> Payload:
    return payload.evolve(
        patient_id=result.patient.identifier, accession=result.order.accession,
        study_uid=result.study_uid,
        metadata={
            "result_id": result.result_id,
            "emergent": _flag(bool(result.emergent_findings)),
            "demonstration": _flag(result.model.demonstration),
        },
    )


def _rendered(
    payload: Payload, result: AiResult, text: str, message_type: str, control_id: str,
) -> Payload:
    marked = _marked(payload, result)
    return marked.evolve(
        content=text.encode("utf-8"), content_type=CONTENT_TYPE,
        metadata={"hl7_message_type": message_type, "hl7_control_id": control_id},
    )


def _endpoint(option: str, application: object, facility: object) -> Endpoint:
    for name, value in ((f"{option}_application", application),
                        (f"{option}_facility", facility)):
        if not isinstance(value, str):
            raise ValueError(f"option {name} must be a string, got {type(value).__name__}")
    return Endpoint(str(application), str(facility))


def _flag(value: bool) -> str:
    return "true" if value else "false"
