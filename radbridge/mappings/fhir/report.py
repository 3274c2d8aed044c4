"""What the model concluded: one Observation per finding and measurement, and the
DiagnosticReport that gathers them with the draft text.

All are `preliminary`: nobody has reviewed an AI result yet. A correction stays
preliminary (FHIR's `corrected` and `amended` are for reports changed after `final`) and
replaces the earlier resources in place, its text opened by what it corrects; a withdrawn
result's resources become `entered-in-error`. A finding's Observation says
present or absent with the same SNOMED codes the ORU uses (Positive / Negative), flags it
AA / A / N as OBX-8 does, and points at the ImagingStudy it was derived from and at the
Device (model and version) that produced it. A demonstration model's warning goes into a
note of every Observation and at the head of the conclusion and the presented text.
"""

from __future__ import annotations

import base64

from radbridge.mappings.fhir.codes import (
    IMAGE_POINT,
    INTERPRETATION,
    LOINC,
    NEGATIVE,
    OBSERVATION_CATEGORY,
    PATIENT_POINT,
    POSITIVE,
    REPORT_CODE,
    RESULT_IDS,
    SCORE,
    UCUM,
    V2_0074,
    JsonObject,
    concept,
    instant,
)
from radbridge.mappings.fhir.resources import Refs, ref
from radbridge.mappings.results import (
    DEMONSTRATION_WARNING,
    PRELIMINARY_NOTICE,
    AiResult,
    Finding,
    FindingLocation,
    Measurement,
    ResultStatus,
    revision_notice,
)

IMAGING = {"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging",
                       "display": "Imaging"}]}
RADIOLOGY = {"coding": [{"system": LOINC, "code": "LP29684-5", "display": "Radiology"},
                        {"system": V2_0074, "code": "RAD", "display": "Radiology"}]}
FLAGS = {"AA": "Critical abnormal", "A": "Abnormal", "N": "Normal"}


def finding_id(result: AiResult, index: int) -> str:
    """The business identifier of the index-th finding's Observation (from 1)."""
    return f"{result.result_id}/finding/{index}"


def measurement_id(result: AiResult, index: int) -> str:
    return f"{result.result_id}/measurement/{index}"


def identifier(value: str) -> JsonObject:
    return {"system": RESULT_IDS, "value": value}


def finding_observation(result: AiResult, finding: Finding, index: int,
                        refs: Refs) -> JsonObject:
    flag = "AA" if finding.is_emergent else "A" if finding.positive else "N"
    found = _observation(result, finding_id(result, index), refs)
    found.update({
        "code": concept(finding.coding),
        "valueCodeableConcept": concept(POSITIVE if finding.positive else NEGATIVE),
        "interpretation": [{"coding": [{"system": INTERPRETATION, "code": flag,
                                        "display": FLAGS[flag]}]}],
    })
    _add_note(found, result)
    if finding.body_site is not None:
        found["bodySite"] = concept(finding.body_site)
    found["derivedFrom"] = [ref(refs.study)]
    components = []
    if finding.score is not None:
        components.append({"code": concept(SCORE), "valueQuantity": _quantity(
            finding.score, "1")})
    if finding.location is not None:
        components += _location(finding.location)
    if components:
        found["component"] = components
    return _ordered(found)


def measurement_observation(result: AiResult, measurement: Measurement, index: int,
                            refs: Refs) -> JsonObject:
    found = _observation(result, measurement_id(result, index), refs)
    found.update({"code": concept(measurement.coding),
                  "valueQuantity": _quantity(measurement.value, measurement.unit)})
    _add_note(found, result)
    found["derivedFrom"] = [ref(refs.study)]
    return _ordered(found)


def diagnostic_report(result: AiResult, refs: Refs, observations: list[str]) -> JsonObject:
    """The report: basedOn the order, the ImagingStudy, every Observation, a conclusion
    naming the model, conclusionCode for each positive finding, the draft as text."""
    found: JsonObject = {
        "resourceType": "DiagnosticReport",
        "identifier": [identifier(result.result_id)],
        "basedOn": [ref(refs.order)],
        "status": status(result),
        "category": [RADIOLOGY],
        "code": concept(REPORT_CODE),
        "subject": ref(refs.patient),
        "effectiveDateTime": _effective(result),
        "issued": instant(result.created_at),
        "result": [ref(url) for url in observations],
        "imagingStudy": [ref(refs.study)],
        "conclusion": conclusion(result),
    }
    positive = [finding for finding in result.findings if finding.positive]
    if positive:
        found["conclusionCode"] = [concept(finding.coding) for finding in positive]
    found["presentedForm"] = [{
        "contentType": "text/plain; charset=utf-8",
        "data": base64.b64encode(presented_text(result).encode("utf-8")).decode("ascii"),
        "title": "Preliminary AI report",
        "creation": instant(result.created_at),
    }]
    if not found["result"]:
        del found["result"]
    return found


def status(result: AiResult) -> str:
    """The FHIR status of the report and its Observations (see the module docstring)."""
    return "entered-in-error" if result.status is ResultStatus.WITHDRAWN else "preliminary"


def notices(result: AiResult) -> list[str]:
    """What every reader must see first: a revision's reason, preliminary, the model, a
    demonstration."""
    lines = [*revision_notice(result), PRELIMINARY_NOTICE]
    if result.model.demonstration:
        lines.append(DEMONSTRATION_WARNING)
    lines.append(f"Model: {result.model.label}")
    return lines


def conclusion(result: AiResult) -> str:
    """The notices, then the findings in one sentence each."""
    lines = notices(result)
    for finding in result.findings:
        name = finding.display or finding.code
        state = "present" if finding.positive else "absent"
        urgent = " (emergent)" if finding.is_emergent else ""
        lines.append(f"{name}: {state}{urgent}.")
    return "\n".join(lines)


def presented_text(result: AiResult) -> str:
    """The draft report as the radiologist will read it, opened by the notices."""
    body = result.report_text.strip("\n")
    return "\n".join(notices(result)) + ("\n\n" + body if body else "") + "\n"


def _observation(result: AiResult, business_id: str, refs: Refs) -> JsonObject:
    return {
        "resourceType": "Observation",
        "identifier": [identifier(business_id)],
        "status": status(result),
        "category": [IMAGING],
        "subject": ref(refs.patient),
        "effectiveDateTime": _effective(result),
        "issued": instant(result.created_at),
        "device": ref(refs.device),
    }


_ORDER = ("resourceType", "meta", "identifier", "status", "category", "code", "subject",
          "effectiveDateTime", "issued", "valueQuantity", "valueCodeableConcept",
          "interpretation", "note", "bodySite", "device", "derivedFrom", "component")


def _ordered(found: JsonObject) -> JsonObject:
    """Elements in the order of the R4 definition, which makes the JSON easy to read."""
    return {name: found[name] for name in _ORDER if name in found}


def _add_note(found: JsonObject, result: AiResult) -> None:
    if result.model.demonstration:
        found["note"] = [{"text": DEMONSTRATION_WARNING}]


def _effective(result: AiResult) -> str:
    """When the imaging happened if the index knows it, else when the result was made."""
    started = None if result.study is None else result.study.started
    return instant(started or result.created_at)


def _quantity(value: float, unit: str) -> JsonObject:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _location(location: FindingLocation) -> list[JsonObject]:
    where = (f"urn:oid:{location.sop_instance_uid} frame {location.frame} "
             f"row {location.row:g} column {location.column:g}")
    found = [{"code": concept(IMAGE_POINT), "valueString": where}]
    if location.patient_mm is not None:
        x, y, z = location.patient_mm
        found.append({"code": concept(PATIENT_POINT), "valueString": f"{x:g} {y:g} {z:g}"})
    return found

