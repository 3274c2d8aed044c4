"""An AI result as every renderer sees it: patient, order, findings, measurements, model.

The records are frozen and valid when built, or they raise `ResultFormatError` naming
the bad field (never quoting its value, which may be PHI). HL7 v2 (`mappings.hl7.oru`),
FHIR and DICOM SR renderers all start from an `AiResult`. `result_to_json` and
`result_from_json` are its wire form: the JSON that travels between channels as a
message payload (`samples/results/` has examples).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, TypeVar

from radbridge.errors import RadbridgeError

DEMONSTRATION_WARNING = "DEMONSTRATION MODEL, NOT FOR CLINICAL USE"
PRELIMINARY_NOTICE = "PRELIMINARY AI-GENERATED RESULT, NOT REVIEWED BY A RADIOLOGIST"

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class ResultFormatError(RadbridgeError, ValueError):
    """A result (or its JSON) has a missing or wrong value; `field` is its path."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class Sex(StrEnum):
    """Administrative sex, HL7 table 0001."""

    FEMALE = "F"
    MALE = "M"
    OTHER = "O"
    UNKNOWN = "U"
    AMBIGUOUS = "A"
    NOT_APPLICABLE = "N"


class ResultStatus(StrEnum):
    """Where a result stands for its receivers: the first preliminary, a corrected one
    that replaces what they hold (new images, a patient update or merge), or withdrawn
    (its order was cancelled or discontinued after it was sent)."""

    PRELIMINARY = "preliminary"
    CORRECTED = "corrected"
    WITHDRAWN = "withdrawn"


class Priority(StrEnum):
    """Order priority, HL7 tables 0027 / 0485 (the codes both share)."""

    STAT = "S"
    ASAP = "A"
    ROUTINE = "R"
    PREOP = "P"
    CALLBACK = "C"
    TIMING_CRITICAL = "T"


def _text(value: object, name: str, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise ResultFormatError(name, f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ResultFormatError(name, "must not be empty")


def _finite(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ResultFormatError(name, f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ResultFormatError(name, "must be a finite number")


_E = TypeVar("_E", bound=StrEnum)


def _enum(kind: type[_E], value: object, name: str) -> _E:
    allowed = ", ".join(member.value for member in kind)
    if not isinstance(value, str) or value not in kind._value2member_map_:
        raise ResultFormatError(name, f"expected one of {allowed}")
    return kind(value)


@dataclass(frozen=True)
class Coding:
    """One code from a coding system (HL7 table 0396 names: SCT, LN, RADLEX, DCM, 99xxx)."""

    code: str
    system: str
    display: str = ""

    def __post_init__(self) -> None:
        _text(self.code, "code")
        _text(self.system, "system")
        _text(self.display, "display", required=False)


@dataclass(frozen=True)
class PatientRef:
    """Who the result is about; the identifier means nothing without its issuer."""

    identifier: str
    issuer: str
    family: str | None = None
    given: str | None = None
    birth_date: date | None = None
    sex: Sex | None = None

    def __post_init__(self) -> None:
        _text(self.identifier, "identifier")
        _text(self.issuer, "issuer")
        _text(self.family, "family", required=False)
        _text(self.given, "given", required=False)
        if self.birth_date is not None and (
            not isinstance(self.birth_date, date) or isinstance(self.birth_date, datetime)
        ):
            raise ResultFormatError("birth_date", "expected a date")
        if self.sex is not None:
            object.__setattr__(self, "sex", _enum(Sex, self.sex, "sex"))


@dataclass(frozen=True)
class Provider:
    """The ordering clinician, as far as the order told us."""

    identifier: str | None = None
    family: str | None = None
    given: str | None = None

    def __post_init__(self) -> None:
        for name in ("identifier", "family", "given"):
            _text(getattr(self, name), name, required=False)
        if not any((self.identifier, self.family, self.given)):
            raise ResultFormatError("identifier", "a provider needs an identifier or a name")


@dataclass(frozen=True)
class OrderRef:
    """The imaging order the result answers (numbers as the placer and the RIS gave them).

    `requested_procedure_id` and `scheduled_step_id` are the DICOM worklist identifiers
    that OMI^O23 needs; renderers fall back to the accession when they are unknown.
    """

    accession: str
    procedure: Coding
    placer_number: str | None = None
    filler_number: str | None = None
    accession_issuer: str | None = None
    priority: Priority | None = None
    ordering_provider: Provider | None = None
    requested_procedure_id: str | None = None
    scheduled_step_id: str | None = None

    def __post_init__(self) -> None:
        _text(self.accession, "accession")
        if not isinstance(self.procedure, Coding):
            raise ResultFormatError("procedure", "expected a Coding")
        for name in ("placer_number", "filler_number", "accession_issuer",
                     "requested_procedure_id", "scheduled_step_id"):
            _text(getattr(self, name), name, required=False)
        if self.priority is not None:
            object.__setattr__(self, "priority", _enum(Priority, self.priority, "priority"))


@dataclass(frozen=True)
class ModelIdentity:
    """Which model produced the result; a demonstration model taints every output."""

    name: str
    version: str
    device_identifier: str
    intended_use: str = ""
    demonstration: bool = False

    def __post_init__(self) -> None:
        _text(self.name, "name")
        _text(self.version, "version")
        _text(self.device_identifier, "device_identifier")
        _text(self.intended_use, "intended_use", required=False)
        if not isinstance(self.demonstration, bool):
            raise ResultFormatError("demonstration", "expected true or false")

    @property
    def label(self) -> str:
        """'name version (device)', the way reports and notes name the model."""
        return f"{self.name} {self.version} ({self.device_identifier})"


@dataclass(frozen=True)
class FindingLocation:
    """Where a finding is: the image (and frame) and pixel (row, column, from 0 at the
    top left pixel's centre), and the point in patient coordinates (mm, LPS) where the
    images carry geometry."""

    sop_instance_uid: str
    frame: int = 1
    row: float = 0.0
    column: float = 0.0
    patient_mm: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        _text(self.sop_instance_uid, "location.sop_instance_uid")
        if not _UID.fullmatch(self.sop_instance_uid):
            raise ResultFormatError("location.sop_instance_uid", "not a DICOM UID")
        if not isinstance(self.frame, int) or self.frame < 1:
            raise ResultFormatError("location.frame", "expected a frame number from 1")
        for name in ("row", "column"):
            _finite(getattr(self, name), f"location.{name}")
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.patient_mm is not None:
            if len(self.patient_mm) != 3:
                raise ResultFormatError("location.patient_mm", "expected [x, y, z]")
            for value in self.patient_mm:
                _finite(value, "location.patient_mm")
            object.__setattr__(self, "patient_mm", tuple(float(v) for v in self.patient_mm))


@dataclass(frozen=True)
class Finding:
    """One coded finding, present or absent; `score` is the model's output (e.g. 0..1);
    `location` where the model placed a positive finding."""

    code: str
    system: str
    display: str
    positive: bool
    emergent: bool = False
    score: float | None = None
    body_site: Coding | None = None
    location: FindingLocation | None = None

    def __post_init__(self) -> None:
        _text(self.code, "code")
        _text(self.system, "system")
        _text(self.display, "display", required=False)
        for name in ("positive", "emergent"):
            if not isinstance(getattr(self, name), bool):
                raise ResultFormatError(name, "expected true or false")
        if self.score is not None:
            _finite(self.score, "score")
            object.__setattr__(self, "score", float(self.score))
        if self.body_site is not None and not isinstance(self.body_site, Coding):
            raise ResultFormatError("body_site", "expected a Coding")
        if self.location is not None and not isinstance(self.location, FindingLocation):
            raise ResultFormatError("location", "expected a FindingLocation")

    @property
    def coding(self) -> Coding:
        """The finding's code as a Coding."""
        return Coding(self.code, self.system, self.display)

    @property
    def is_emergent(self) -> bool:
        """True when the finding is present and calls for immediate attention."""
        return self.positive and self.emergent


@dataclass(frozen=True)
class Measurement:
    """A numeric measurement with its UCUM unit ('mL', 'mm', '[hnsf\\'U]', '1')."""

    code: str
    system: str
    display: str
    value: float
    unit: str

    def __post_init__(self) -> None:
        _text(self.code, "code")
        _text(self.system, "system")
        _text(self.display, "display", required=False)
        _finite(self.value, "value")
        object.__setattr__(self, "value", float(self.value))
        _text(self.unit, "unit")

    @property
    def coding(self) -> Coding:
        """The measurement's code as a Coding."""
        return Coding(self.code, self.system, self.display)


@dataclass(frozen=True)
class InstanceRef:
    """One image of the study as the DICOM index has it."""

    sop_class_uid: str
    sop_instance_uid: str
    number: int | None = None

    def __post_init__(self) -> None:
        for name in ("sop_class_uid", "sop_instance_uid"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _UID.fullmatch(value):
                raise ResultFormatError(name, "not a DICOM UID")


@dataclass(frozen=True)
class SeriesRecord:
    series_uid: str
    modality: str
    number: int | None = None
    description: str | None = None
    body_part: str | None = None
    instances: tuple[InstanceRef, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.series_uid, str) or not _UID.fullmatch(self.series_uid):
            raise ResultFormatError("series_uid", "not a DICOM UID")
        _text(self.modality, "modality")
        object.__setattr__(self, "instances", tuple(self.instances))


@dataclass(frozen=True)
class StudyRecord:
    """The study's series and instances (for FHIR ImagingStudy and SR evidence) and
    where a viewer can fetch it (`endpoint`: the PACS's DICOMweb base URL, if known)."""

    started: datetime | None = None
    description: str | None = None
    series: tuple[SeriesRecord, ...] = field(default_factory=tuple)
    endpoint: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "series", tuple(self.series))
        if self.started is not None and (not isinstance(self.started, datetime)
                                         or self.started.utcoffset() is None):
            raise ResultFormatError("study.started", "expected a datetime with a time zone")


@dataclass(frozen=True)
class AiResult:
    """Everything one inference run concluded about one study.

    `result_id` is stable for the study, order and model: renderers derive message ids
    from `revision_key` (the result id, and the revision after the first), so a resend
    after a crash carries the same ids and receivers can drop the duplicate, while a
    revision is a new message about the same result (same business identifiers).
    """

    result_id: str
    patient: PatientRef
    order: OrderRef
    study_uid: str
    model: ModelIdentity
    created_at: datetime
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    measurements: tuple[Measurement, ...] = field(default_factory=tuple)
    report_text: str = ""
    series_uids: tuple[str, ...] = field(default_factory=tuple)
    """The series the model read (its input), for SR evidence and FHIR derivedFrom."""
    study: StudyRecord | None = None
    status: ResultStatus = ResultStatus.PRELIMINARY
    revision: int = 0
    """0 for the first result sent; each correction or withdrawal adds one."""
    revision_reason: str | None = None
    """Why a revision was sent (no PHI: "order cancelled", "new images")."""

    def __post_init__(self) -> None:
        _text(self.result_id, "result_id")
        object.__setattr__(self, "status", _enum(ResultStatus, self.status, "status"))
        if isinstance(self.revision, bool) or not isinstance(self.revision, int) \
                or self.revision < 0:
            raise ResultFormatError("revision", "expected a whole number, 0 or more")
        if (self.revision == 0) != (self.status is ResultStatus.PRELIMINARY):
            raise ResultFormatError("status", "the first result (revision 0) is preliminary;"
                                              " a revision is corrected or withdrawn")
        _text(self.revision_reason, "revision_reason", required=False)
        _text(self.study_uid, "study_uid")
        object.__setattr__(self, "series_uids", tuple(self.series_uids))
        for uid in self.series_uids:
            if not isinstance(uid, str) or not _UID.fullmatch(uid):
                raise ResultFormatError("series_uids", "not a DICOM UID")
        if self.study is not None and not isinstance(self.study, StudyRecord):
            raise ResultFormatError("study", "expected a StudyRecord")
        if len(self.study_uid) > 64 or not _UID.fullmatch(self.study_uid):
            raise ResultFormatError("study_uid", "not a DICOM UID (digits and dots, 64 at most)")
        _text(self.report_text, "report_text", required=False)
        if not isinstance(self.created_at, datetime) or self.created_at.utcoffset() is None:
            raise ResultFormatError("created_at", "expected a datetime with a time zone")
        for name, kind in (("patient", PatientRef), ("order", OrderRef),
                           ("model", ModelIdentity)):
            if not isinstance(getattr(self, name), kind):
                raise ResultFormatError(name, f"expected a {kind.__name__}")
        object.__setattr__(self, "findings", tuple(self.findings))
        object.__setattr__(self, "measurements", tuple(self.measurements))

    @property
    def emergent_findings(self) -> tuple[Finding, ...]:
        """Positive findings flagged emergent: what justifies a STAT worklist update
        (none once the result is withdrawn)."""
        if self.status is ResultStatus.WITHDRAWN:
            return ()
        return tuple(finding for finding in self.findings if finding.is_emergent)

    @property
    def revision_key(self) -> str:
        """What message ids and derived UIDs come from: the result id for the first
        result (so its ids never change), the id and revision for the later ones."""
        return self.result_id if self.revision == 0 else f"{self.result_id}/r{self.revision}"


def revision_notice(result: AiResult) -> list[str]:
    """The line that opens a revision's report (every rendering): corrected or
    withdrawn, and why; nothing for the first result."""
    why = f": {result.revision_reason}" if result.revision_reason else ""
    if result.status is ResultStatus.WITHDRAWN:
        return [f"WITHDRAWN{why}. Disregard the AI result sent earlier for this order."]
    if result.status is ResultStatus.CORRECTED:
        return [f"CORRECTED{why}. Replaces the AI result sent earlier for this order."]
    return []


# --- JSON -----------------------------------------------------------------------------

_T = TypeVar("_T")


def result_to_json(result: AiResult) -> dict[str, Any]:
    """The JSON form of `result` (optional members left out when unset)."""
    order = result.order
    return _compact({
        "result_id": result.result_id,
        "created_at": result.created_at.isoformat(),
        "study_uid": result.study_uid,
        "patient": _compact({
            "identifier": result.patient.identifier,
            "issuer": result.patient.issuer,
            "family": result.patient.family,
            "given": result.patient.given,
            "birth_date": _iso(result.patient.birth_date),
            "sex": _value(result.patient.sex),
        }),
        "order": _compact({
            "accession": order.accession,
            "accession_issuer": order.accession_issuer,
            "placer_number": order.placer_number,
            "filler_number": order.filler_number,
            "procedure": _coding_json(order.procedure),
            "priority": _value(order.priority),
            "ordering_provider": _provider_json(order.ordering_provider),
            "requested_procedure_id": order.requested_procedure_id,
            "scheduled_step_id": order.scheduled_step_id,
        }),
        "model": _compact({
            "name": result.model.name,
            "version": result.model.version,
            "device_identifier": result.model.device_identifier,
            "intended_use": result.model.intended_use or None,
            "demonstration": result.model.demonstration,
        }),
        "findings": [_finding_json(finding) for finding in result.findings],
        "measurements": [
            {"code": m.code, "system": m.system, "display": m.display, "value": m.value,
             "unit": m.unit}
            for m in result.measurements
        ],
        "report_text": result.report_text,
        "series_uids": list(result.series_uids) or None,
        "study": None if result.study is None else _study_json(result.study),
        "status": None if result.revision == 0 else result.status.value,
        "revision": result.revision or None,
        "revision_reason": result.revision_reason,
    })


def _study_json(study: StudyRecord) -> dict[str, Any]:
    return _compact({
        "started": None if study.started is None else study.started.isoformat(),
        "description": study.description, "endpoint": study.endpoint,
        "series": [_compact({
            "series_uid": s.series_uid, "modality": s.modality, "number": s.number,
            "description": s.description, "body_part": s.body_part,
            "instances": [_compact({"sop_class_uid": i.sop_class_uid,
                                    "sop_instance_uid": i.sop_instance_uid,
                                    "number": i.number}) for i in s.instances]})
            for s in study.series]})


def result_from_json(obj: Mapping[str, Any]) -> AiResult:
    """Parse what `result_to_json` wrote; ResultFormatError names the first bad member."""
    top = _members(obj, "$", required={"result_id", "created_at", "study_uid", "patient",
                                        "order", "model"},
                   optional={"findings", "measurements", "report_text", "series_uids",
                             "study", "status", "revision", "revision_reason"})
    return _build("$", AiResult,
        result_id=top["result_id"],
        created_at=_parse("$.created_at", top["created_at"], _datetime),
        study_uid=top["study_uid"],
        patient=_patient(top["patient"], "$.patient"),
        order=_order(top["order"], "$.order"),
        model=_model(top["model"], "$.model"),
        findings=tuple(_finding(item, f"$.findings[{i}]")
                       for i, item in enumerate(_list(top.get("findings", []), "$.findings"))),
        measurements=tuple(
            _measurement(item, f"$.measurements[{i}]")
            for i, item in enumerate(_list(top.get("measurements", []), "$.measurements"))
        ),
        report_text=top.get("report_text", ""),
        series_uids=tuple(_list(top.get("series_uids", []), "$.series_uids")),
        study=None if top.get("study") is None else _study(top["study"], "$.study"),
        status=top.get("status", ResultStatus.PRELIMINARY.value),
        revision=top.get("revision", 0),
        revision_reason=top.get("revision_reason"),
    )


def _study(value: object, path: str) -> StudyRecord:
    obj = _members(value, path, required=set(),
                   optional={"started", "description", "series", "endpoint"})
    started = obj.get("started")
    series = []
    for index, item in enumerate(_list(obj.get("series", []), f"{path}.series")):
        where = f"{path}.series[{index}]"
        member = _members(item, where, required={"series_uid", "modality"},
                          optional={"number", "description", "body_part", "instances"})
        instances = tuple(
            _build(f"{where}.instances[{n}]", InstanceRef, **_members(
                raw, f"{where}.instances[{n}]", required={"sop_class_uid", "sop_instance_uid"},
                optional={"number"}))
            for n, raw in enumerate(_list(member.pop("instances", []), f"{where}.instances")))
        series.append(_build(where, SeriesRecord, **member, instances=instances))
    return _build(path, StudyRecord, description=obj.get("description"),
                  endpoint=obj.get("endpoint"), series=tuple(series),
                  started=None if started is None
                  else _parse(f"{path}.started", started, _datetime))


def _patient(value: object, path: str) -> PatientRef:
    obj = _members(value, path, required={"identifier", "issuer"},
                   optional={"family", "given", "birth_date", "sex"})
    birth = obj.get("birth_date")
    return _build(path, PatientRef,
        identifier=obj["identifier"], issuer=obj["issuer"], family=obj.get("family"),
        given=obj.get("given"), sex=obj.get("sex"),
        birth_date=None if birth is None else _parse(f"{path}.birth_date", birth, _date),
    )


def _order(value: object, path: str) -> OrderRef:
    obj = _members(value, path, required={"accession", "procedure"},
                   optional={"accession_issuer", "placer_number", "filler_number", "priority",
                             "ordering_provider", "requested_procedure_id",
                             "scheduled_step_id"})
    provider = obj.get("ordering_provider")
    return _build(path, OrderRef,
        accession=obj["accession"],
        procedure=_coding(obj["procedure"], f"{path}.procedure"),
        accession_issuer=obj.get("accession_issuer"),
        placer_number=obj.get("placer_number"),
        filler_number=obj.get("filler_number"),
        priority=obj.get("priority"),
        ordering_provider=None if provider is None
        else _provider(provider, f"{path}.ordering_provider"),
        requested_procedure_id=obj.get("requested_procedure_id"),
        scheduled_step_id=obj.get("scheduled_step_id"),
    )


def _provider(value: object, path: str) -> Provider:
    obj = _members(value, path, required=set(), optional={"identifier", "family", "given"})
    return _build(path, Provider, **obj)


def _model(value: object, path: str) -> ModelIdentity:
    obj = _members(value, path, required={"name", "version", "device_identifier"},
                   optional={"intended_use", "demonstration"})
    return _build(path, ModelIdentity, **obj)


def _finding(value: object, path: str) -> Finding:
    obj = _members(value, path, required={"code", "system", "display", "positive"},
                   optional={"emergent", "score", "body_site", "location"})
    site = obj.pop("body_site", None)
    where = obj.pop("location", None)
    return _build(path, Finding, **obj,
                  body_site=None if site is None else _coding(site, f"{path}.body_site"),
                  location=None if where is None else _location(where, f"{path}.location"))


def _location(value: object, path: str) -> FindingLocation:
    obj = _members(value, path, required={"sop_instance_uid"},
                   optional={"frame", "row", "column", "patient_mm"})
    point = obj.pop("patient_mm", None)
    return _build(path, FindingLocation, **obj,
                  patient_mm=None if point is None else tuple(_list(point, f"{path}.patient_mm")))


def _measurement(value: object, path: str) -> Measurement:
    obj = _members(value, path, required={"code", "system", "display", "value", "unit"},
                   optional=set())
    return _build(path, Measurement, **obj)


def _coding(value: object, path: str) -> Coding:
    obj = _members(value, path, required={"code", "system"}, optional={"display"})
    return _build(path, Coding, **obj)


def _members(value: object, path: str, *, required: set[str],
             optional: set[str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ResultFormatError(path, f"expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise ResultFormatError(f"{path}.{unknown[0]}", f"unknown member; allowed: {allowed}")
    for name in sorted(required):
        if value.get(name) is None:
            raise ResultFormatError(f"{path}.{name}", "required")
    return {name: member for name, member in value.items() if member is not None}


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ResultFormatError(path, f"expected a list, got {type(value).__name__}")
    return value


def _build(path: str, kind: Callable[..., _T], **values: Any) -> _T:
    try:
        return kind(**values)
    except ResultFormatError as exc:
        raise ResultFormatError(f"{path}.{exc.field}", exc.reason) from None


def _parse(path: str, value: object, parser: Callable[[str], _T]) -> _T:
    # Messages never quote the value: a birth date is PHI, and errors reach the logs.
    if not isinstance(value, str):
        raise ResultFormatError(path, f"expected a string, got {type(value).__name__}")
    try:
        return parser(value)
    except ValueError:
        raise ResultFormatError(path, f"expected an ISO 8601 {parser.__name__[1:]}") from None


def _datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.utcoffset() is None:
        raise ValueError("no time zone offset")
    return value


def _date(text: str) -> date:
    return date.fromisoformat(text)


def _coding_json(coding: Coding | None) -> dict[str, Any] | None:
    if coding is None:
        return None
    return {"code": coding.code, "system": coding.system, "display": coding.display}


def _provider_json(provider: Provider | None) -> dict[str, Any] | None:
    if provider is None:
        return None
    return _compact({"identifier": provider.identifier, "family": provider.family,
                     "given": provider.given})


def _finding_json(finding: Finding) -> dict[str, Any]:
    return _compact({
        "code": finding.code, "system": finding.system, "display": finding.display,
        "positive": finding.positive, "emergent": finding.emergent, "score": finding.score,
        "body_site": _coding_json(finding.body_site),
        "location": None if finding.location is None else _compact({
            "sop_instance_uid": finding.location.sop_instance_uid,
            "frame": finding.location.frame, "row": finding.location.row,
            "column": finding.location.column,
            "patient_mm": None if finding.location.patient_mm is None
            else list(finding.location.patient_mm)}),
    })


def _compact(members: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in members.items() if value is not None}


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _value(value: StrEnum | None) -> str | None:
    return None if value is None else value.value
