"""The radiologist's call per finding, from final reports, into `qa_reads`.

What a report is read from:

- HL7 v2 ORU^R01 whose first OBR-25 is F (final) or C (corrected final). Coded values:
  OBX of type CWE/CE/CNE whose OBX-3 names the finding (first or alternate triplet)
  and whose OBX-5 says positive or negative (`radbridge.qa.reading.read_coded`). Text:
  every TX/FT/ST OBX in order, one line per repetition; an OBX coded as the impression
  (LOINC 19005-8, or the `&IMP` suffix) opens an IMPRESSION section. OBX-11 D, X or W
  (deleted, not obtained, wrong) are left out. The study: OBX DCM 110180 or ZDS-1; the
  accession: OBR-18, else OBR-3, else ORC-3. An ORU carrying Radbridge's own AI
  provenance (DCM 111001, 99RDB AI-DEVICE) is an AI result, not a report, and ignored.
- A FHIR R4 DiagnosticReport (alone, or the first in a Bundle) with status final (F)
  or amended, corrected, appended (C). Coded values: `conclusionCode` (present) and the
  `result` Observations' value or interpretation. Text: the text/plain `presentedForm`,
  else the narrative, then `conclusion` as the IMPRESSION. The study: `imagingStudy`
  (identifier urn:dicom:uid urn:oid:UID, logical or on the referenced ImagingStudy);
  the accession: ACSN-typed identifiers of the report, its `basedOn` ServiceRequest and
  its ImagingStudy, then FILL-typed ones.

Which findings: every rule given, every finding the study's AI results have (with the
default rule for its code where none is given), every finding the report codes. Coded
values win over text.

Which study: the report's own Study Instance UID, else the first accession candidate
that the orders registry (an order with that accession or filler number, through its
study links) or the DICOM index knows. A report no study answers to yet waits in
`qa_reads` under the key `acc:<accession>`: it never joins an observation (UIDs are
digits and dots) and is moved onto the study when the study's AI result is recorded
(`adopt_waiting`), or when a later report finds the study. Waiting keeps the reads of
reports for studies the AI never sees (most of a RIS's reports) out of the dead letters.

Replacing: a read replaces the stored one unless it is older (`reported_at`), or it
comes from a report of another accession (one study, two orders: a grouped
procedure) and does not mention the finding while the stored one does.

Nothing here logs or raises with report text: errors name the field.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from radbridge.engine import audit
from radbridge.engine.models import (
    DicomStudy,
    Order,
    QaObservation,
    QaRead,
    StudyOrderLink,
    utcnow,
)
from radbridge.errors import RadbridgeError
from radbridge.mappings.dicom.values import is_valid_uid
from radbridge.mappings.hl7.errors import Hl7ContentError
from radbridge.mappings.hl7.reading import Reader, Segment, decode, dicom_uid, read_message
from radbridge.qa.reading import (
    DEFAULT_RULES,
    Call,
    FindingRule,
    radiologist_positive,
    read_coded,
    read_text,
)

WAITING_PREFIX = "acc:"
"""`qa_reads.study_uid` of a report waiting for its study: this, then the accession."""
_WAIT_MAX = 64 - len(WAITING_PREFIX)
_COLUMN = 64


class ReportContentError(RadbridgeError, ValueError):
    """A report that cannot be read or placed; names the field, never quotes it."""

    def __init__(self, location: str, problem: str) -> None:
        self.location = location
        self.problem = problem
        super().__init__(f"{location} {problem}")


@dataclass(frozen=True)
class CodedValue:
    """A finding (code, system as sent) and the call a coded value gives it."""

    code: str
    system: str
    call: Call


@dataclass(frozen=True)
class FinalReport:
    """What the reads of one final report come from."""

    status: str
    """'F' final or 'C' corrected final."""
    reported_at: datetime | None
    study_uids: tuple[str, ...]
    accessions: tuple[str, ...]
    """Candidates, best first."""
    text: str
    coded: tuple[CodedValue, ...]


@dataclass(frozen=True)
class NotFinal:
    """Content that is no final report (a preliminary one, another message): ignored."""

    reason: str


@dataclass(frozen=True)
class Read:
    """The radiologist's call on one finding, before (`call`) and after the rule's
    mapping (`radiologist_positive`, None: left out of the 2x2 table)."""

    finding_system: str
    finding_code: str
    call: Call
    radiologist_positive: bool | None
    source: str
    """'coded' or 'text'."""


@dataclass(frozen=True)
class Recorded:
    """What one report changed: the studies it was placed on (none: it waits by
    `accession`), its reads, and how many rows were written (older ones replace none)."""

    studies: tuple[str, ...]
    accession: str | None
    reads: tuple[Read, ...]
    written: int

    @property
    def summary(self) -> str:
        where = (f"study {self.studies[0]}" if len(self.studies) == 1
                 else f"{len(self.studies)} studies" if self.studies
                 else "waiting for its study by accession")
        coded = sum(1 for r in self.reads if r.source == "coded")
        return (f"{len(self.reads)} finding(s) read ({coded} coded), {self.written} "
                f"stored, {where}")


# --- reading the content ------------------------------------------------------------------

def read_report(content: bytes, content_type: str = "") -> FinalReport | NotFinal:
    """A final report from HL7 v2 or FHIR JSON content (JSON when it says so or looks
    so); Hl7ContentError or ReportContentError when it cannot be read."""
    if "json" in content_type.lower() or content.lstrip()[:1] == b"{":
        return report_from_fhir(content)
    return report_from_hl7(decode(content))


_V2_FINAL = frozenset({"F", "C"})
_V2_SKIPPED = frozenset({"D", "X", "W"})
_TEXT_TYPES = frozenset({"TX", "FT", "ST"})
_CODED_TYPES = frozenset({"CWE", "CE", "CNE"})
_IMPRESSION_CODES = frozenset({"19005-8"})


def report_from_hl7(text: str) -> FinalReport | NotFinal:
    reader = read_message(text)
    msh = reader.segment("MSH")
    kind = (msh.text(9, 1)[:8], msh.text(9, 2)[:8])
    if not kind[0]:
        raise Hl7ContentError("MSH-9 (message type)", "is empty")
    if kind != ("ORU", "R01"):
        return NotFinal(f"{'^'.join(kind).rstrip('^')} is not a report")
    orders = [group["OBR"] for group in reader.groups("OBR")]
    if not orders:
        raise Hl7ContentError("OBR", "segment is missing: a report names its order")
    observations = [group["OBX"] for group in reader.groups("OBX")]
    if any(_is_ai_provenance(obx) for obx in observations):
        return NotFinal("ORU^R01 is an AI result (it carries the algorithm's identity), "
                        "not a radiologist's report")
    status = orders[0].text(25)
    if status not in _V2_FINAL:
        return NotFinal(f"ORU^R01 with result status {status[:2] or 'empty'} (OBR-25) "
                        "is not a final report")
    uids = [(obx.text(5), "OBX-5 (Study Instance UID)") for obx in observations
            if _is_study_uid(obx)]
    zds = reader.optional("ZDS")
    uids += [(zds.text(1), "ZDS-1 (Study Instance UID)")] if zds is not None else []
    studies = [uid for raw, label in uids if (uid := dicom_uid(raw, label))]
    common = [group["ORC"] for group in reader.groups("ORC")]
    accessions = ([o.text(18) for o in orders] + [o.text(3) for o in orders]
                  + [c.text(3) for c in common])
    reported = _v2_time(reader, orders[0], 22) or _v2_time(reader, msh, 7)
    return FinalReport(status, reported, _unique(studies), _unique(accessions),
                       _v2_text(observations),
                       tuple(v for obx in observations for v in _v2_coded(obx)))


def _v2_time(reader: Reader, segment: Segment, field: int) -> datetime | None:
    """A time that does not parse is left out: it orders reads, it is no reason to
    lose the report."""
    try:
        return reader.datetime(segment, field, f"{segment.name}-{field}")
    except Hl7ContentError:
        return None


def _is_ai_provenance(obx: Segment) -> bool:
    return ((obx.text(3, 1), obx.text(3, 3)) in {("111001", "DCM"), ("AI-DEVICE", "99RDB")})


def _is_study_uid(obx: Segment) -> bool:
    return (obx.text(3, 1), obx.text(3, 3)) == ("110180", "DCM")


def _v2_coded(obx: Segment) -> list[CodedValue]:
    if obx.text(2) not in _CODED_TYPES or obx.text(11) in _V2_SKIPPED:
        return []
    call = read_coded(obx.text(5, 1), obx.text(5, 3)) or read_coded(obx.text(5, 2), None)
    if call is None:
        return []
    named = ((obx.text(3, 1), obx.text(3, 3)), (obx.text(3, 4), obx.text(3, 6)))
    return [CodedValue(code, system, call) for code, system in named if code]


def _v2_text(observations: Sequence[Segment]) -> str:
    lines: list[str] = []
    in_impression = False
    for obx in observations:
        if (obx.text(2) not in _TEXT_TYPES or obx.text(11) in _V2_SKIPPED
                or _is_study_uid(obx)):
            continue
        impression = obx.text(3, 1) in _IMPRESSION_CODES or obx.text(3, 1, 2) == "IMP"
        if impression != in_impression:
            lines.append("IMPRESSION:" if impression else "REPORT:")
            in_impression = impression
        lines.extend(obx.text(5, rep=rep) for rep in range(1, obx.repeats(5) + 1))
    return "\n".join(lines)


_FHIR_FINAL = {"final": "F", "amended": "C", "corrected": "C", "appended": "C"}
_FHIR_SKIPPED = frozenset({"registered", "preliminary", "cancelled", "entered-in-error"})
_DICOM_UID_SYSTEM = "urn:dicom:uid"
_OID = "urn:oid:"
JsonObject = dict[str, Any]


def report_from_fhir(content: bytes) -> FinalReport | NotFinal:
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReportContentError("FHIR content", "is not JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise ReportContentError("resourceType", "is missing: not a FHIR resource")
    report, index = _fhir_index(document)
    if report is None:
        return NotFinal(f"{document['resourceType'][:40]} holds no DiagnosticReport")
    status = _str(report, "status")
    if status not in _FHIR_FINAL:
        return NotFinal(f"DiagnosticReport with status {status[:20] or 'empty'} "
                        "is not a final report")
    studies = [_target(ref, index) for ref in _list(report, "imagingStudy")]
    orders = [_target(ref, index) for ref in _list(report, "basedOn")]
    study_ids = [i for ref in _list(report, "imagingStudy") for i in _logical(ref)]
    study_ids += [i for study in studies for i in _list(study, "identifier")]
    identifiers = (_list(report, "identifier")
                   + [i for ref in _list(report, "basedOn") for i in _logical(ref)]
                   + [i for order in orders for i in _list(order, "identifier")]
                   + [i for study in studies for i in _list(study, "identifier")])
    accessions = _typed(identifiers, "ACSN") + _typed(identifiers, "FILL")
    return FinalReport(_FHIR_FINAL[status], _instant(report), _study_uids(study_ids),
                       _unique(accessions), _fhir_text(report),
                       tuple(_fhir_coded(report, index)))


def _fhir_index(document: JsonObject) -> tuple[JsonObject | None, dict[str, JsonObject]]:
    """The report and what references may point at: bundle entries (by fullUrl and
    Type/id) and the report's contained resources (by #id)."""
    index: dict[str, JsonObject] = {}
    if document["resourceType"] == "Bundle":
        resources = []
        for entry in _list(document, "entry"):
            resource = _dict(entry, "resource")
            resources.append(resource)
            for key in (_str(entry, "fullUrl"),
                        f"{_str(resource, 'resourceType')}/{_str(resource, 'id')}"):
                index[key] = resource
        report = next((r for r in resources if r.get("resourceType") == "DiagnosticReport"),
                      None)
    else:
        report = document if document["resourceType"] == "DiagnosticReport" else None
    for contained in _list(report or {}, "contained"):
        index[f"#{_str(contained, 'id')}"] = contained
    return report, index


def _study_uids(identifiers: Iterable[JsonObject]) -> tuple[str, ...]:
    found = []
    for identifier in identifiers:
        value = _str(identifier, "value")
        if _str(identifier, "system") in ("", _DICOM_UID_SYSTEM) and value.startswith(_OID):
            uid = value[len(_OID):]
            if not is_valid_uid(uid):
                raise ReportContentError("ImagingStudy.identifier",
                                         "is not a DICOM UID (digits and dots, at most 64)")
            found.append(uid)
    return _unique(found)


def _typed(identifiers: Iterable[JsonObject], type_code: str) -> list[str]:
    return [_str(i, "value") for i in identifiers
            if type_code in {_str(c, "code") for c in _list(_dict(i, "type"), "coding")}]


def _fhir_text(report: JsonObject) -> str:
    parts = []
    for form in _list(report, "presentedForm"):
        data = _str(form, "data")
        if _str(form, "contentType").lower().startswith("text/plain") and data:
            try:
                parts.append(base64.b64decode(data, validate=True).decode("utf-8"))
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ReportContentError("presentedForm.data",
                                         "is not base64 UTF-8 text") from exc
    if not parts and (div := _str(_dict(report, "text"), "div")):
        parts.append(_narrative(div))
    conclusion = _str(report, "conclusion")
    if conclusion and conclusion not in "\n".join(parts):
        parts.append(f"IMPRESSION:\n{conclusion}")
    return "\n".join(parts)


def _narrative(div: str) -> str:
    lines = re.sub(r"<br\s*/?>|</(?:p|div|li|tr|h\d)>", "\n", div, flags=re.IGNORECASE)
    return html.unescape(re.sub(r"<[^>]*>", "", lines))


def _fhir_coded(report: JsonObject, index: Mapping[str, JsonObject]) -> list[CodedValue]:
    found = [CodedValue(_str(c, "code"), _str(c, "system"), Call.POSITIVE)
             for concept in _list(report, "conclusionCode")
             for c in _list(concept, "coding") if _str(c, "code")]
    for ref in _list(report, "result"):
        observation = _target(ref, index)
        if (observation.get("resourceType") != "Observation"
                or _str(observation, "status") in _FHIR_SKIPPED):
            continue
        call = _observation_call(observation)
        if call is not None:
            found += [CodedValue(_str(c, "code"), _str(c, "system"), call)
                      for c in _list(_dict(observation, "code"), "coding") if _str(c, "code")]
    return found


def _observation_call(observation: JsonObject) -> Call | None:
    concepts = [_dict(observation, "valueCodeableConcept"),
                *_list(observation, "interpretation")]
    for coding in (c for concept in concepts for c in _list(concept, "coding")):
        if (call := read_coded(_str(coding, "code"), _str(coding, "system"))) is not None:
            return call
    flag = observation.get("valueBoolean")
    if isinstance(flag, bool):
        return Call.POSITIVE if flag else Call.NEGATIVE
    return read_coded(_str(observation, "valueString"), None)


def _instant(report: JsonObject) -> datetime | None:
    """`issued`, else `effectiveDateTime`; one that does not parse is left out, as in v2."""
    for value in (_str(report, "issued"), _str(report, "effectiveDateTime")):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            continue
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    return None


def _target(reference: JsonObject, index: Mapping[str, JsonObject]) -> JsonObject:
    return index.get(_str(reference, "reference"), {})


def _logical(reference: JsonObject) -> list[JsonObject]:
    identifier = _dict(reference, "identifier")
    return [identifier] if identifier else []


def _dict(obj: JsonObject, key: str) -> JsonObject:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _list(obj: JsonObject, key: str) -> list[JsonObject]:
    value = obj.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) \
        else []


def _str(obj: JsonObject, key: str) -> str:
    value = obj.get(key)
    return value.strip() if isinstance(value, str) else ""


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


# --- the calls ----------------------------------------------------------------------------

_SYSTEMS = {
    "SCT": ("SCT", "SNOMED", "SNOMEDCT", "SNOMED-CT", "SNOMED CT", "SNM", "SNM3",
            "HTTP://SNOMED.INFO/SCT", "2.16.840.1.113883.6.96"),
    "LN": ("LN", "LOINC", "HTTP://LOINC.ORG", "2.16.840.1.113883.6.1"),
    "RADLEX": ("RADLEX", "HTTP://RADLEX.ORG", "HTTP://WWW.RADLEX.ORG"),
    "DCM": ("DCM", "HTTP://DICOM.NEMA.ORG/RESOURCES/ONTOLOGY/DCM", "1.2.840.10008.2.16.4"),
}
_SYSTEM_OF = {alias: name for name, aliases in _SYSTEMS.items() for alias in aliases}


def finding_system(raw: str) -> str:
    """The coding system as model cards name it (SCT, LN, RADLEX, DCM), so that a read
    joins the observations however the sender spelled the system."""
    cleaned = raw.strip()
    upper = cleaned.upper().removeprefix("URN:OID:")
    return _SYSTEM_OF.get(upper, cleaned[:32])


_REFERENCE = {Call.POSITIVE: True, Call.NEGATIVE: False}
Key = tuple[str, str]


def reads_of(report: FinalReport, rules: Sequence[FindingRule],
             observed: Iterable[Key] = ()) -> list[Read]:
    """The call per finding: each rule, each observed (system, code), each coded one."""
    defaults = {(finding_system(r.system), r.code): r for r in DEFAULT_RULES}
    wanted: dict[Key, FindingRule | None] = {}
    for rule in rules:
        wanted.setdefault((finding_system(rule.system), rule.code), rule)
    coded = {(finding_system(v.system), v.code): v.call for v in report.coded}
    for system, code in [*observed, *coded]:
        key = (finding_system(system), code)
        wanted.setdefault(key, defaults.get(key))
    reads = []
    for (system, code), wanted_rule in wanted.items():
        if (system, code) in coded:
            call, source = coded[(system, code)], "coded"
        elif wanted_rule is not None and report.text.strip():
            call, source = read_text(report.text, wanted_rule), "text"
        else:
            continue  # neither coded here nor text to read with a rule
        positive = (radiologist_positive(call, wanted_rule) if wanted_rule
                    else _REFERENCE.get(call))
        reads.append(Read(system, code[:_COLUMN], call, positive, source))
    return reads


# --- the store ----------------------------------------------------------------------------

def record_report(session: Session, report: FinalReport, rules: Sequence[FindingRule], *,
                  message_id: int | None, channel: str | None, patient_id: str | None,
                  actor: str, chain: str) -> Recorded:
    """Upsert the report's reads in the caller's transaction, with a `qa.report` audit
    event (identifiers and counts only)."""
    studies, accession = find_studies(session, report)
    if studies:
        for study in studies:
            adopt_waiting(session, study, report.accessions)
        keys = studies
    elif accession is None:
        raise ReportContentError("study", "is named neither by a Study Instance UID nor by "
                                 "an accession: the report cannot be placed")
    else:
        keys = (waiting_key(accession),)
    observed = session.execute(
        select(QaObservation.finding_system, QaObservation.finding_code).distinct()
        .where(QaObservation.study_uid.in_(studies))).tuples().all() if studies else []
    reads = tuple(reads_of(report, rules, observed))
    reported_at = report.reported_at or utcnow()
    written = sum(_upsert(session, key, accession, read, report.status, reported_at,
                          message_id) for key in keys for read in reads)
    audit.append(session, [audit.AuditRecord(
        action="qa.report", actor=actor, channel=channel, message_id=message_id,
        patient_id=patient_id, accession=_clip(accession),
        study_uid=studies[0] if len(studies) == 1 else None,
        detail={"status": report.status, "studies": list(studies), "waiting": not studies,
                "findings": len(reads), "coded": sum(r.source == "coded" for r in reads),
                "stored": written})], chain)
    return Recorded(studies, accession, reads, written)


def find_studies(session: Session, report: FinalReport) -> tuple[tuple[str, ...], str | None]:
    """(the studies the report is about, the accession it was found by or will wait by)."""
    first = report.accessions[0] if report.accessions else None
    if report.study_uids:
        return report.study_uids, first
    for accession in report.accessions:
        linked = session.execute(
            select(StudyOrderLink.study_uid).join(Order, Order.id == StudyOrderLink.order_id)
            .where(or_(Order.accession == accession, Order.filler_number == accession))
            .order_by(StudyOrderLink.id)).scalars().all()
        indexed = session.execute(select(DicomStudy.study_uid).where(
            DicomStudy.accession == accession).order_by(DicomStudy.id)).scalars().all()
        if found := _unique([*linked, *indexed]):
            return found, accession
    return (), first


def study_accessions(session: Session, study_uid: str,
                     also: Iterable[str | None] = ()) -> tuple[str, ...]:
    """Every accession a report on this study may wait under: its header's, the DICOM
    index's, and the accession and filler number of each order it is linked to."""
    found = [a for a in also if a]
    found += [a for a in session.execute(select(DicomStudy.accession).where(
        DicomStudy.study_uid == study_uid)).scalars() if a]
    for accession, filler in session.execute(
            select(Order.accession, Order.filler_number)
            .join(StudyOrderLink, StudyOrderLink.order_id == Order.id)
            .where(StudyOrderLink.study_uid == study_uid)).tuples():
        found += [a for a in (accession, filler) if a]
    return _unique(found)


def waiting_key(accession: str) -> str:
    """The `qa_reads.study_uid` of reads waiting for the study of `accession`."""
    if len(accession) > _WAIT_MAX:
        raise ReportContentError("accession", f"is longer than {_WAIT_MAX} characters and "
                                 "no study is known for it yet")
    return WAITING_PREFIX + accession


def adopt_waiting(session: Session, study_uid: str, accessions: Iterable[str]) -> int:
    """Move the reads waiting under any of `accessions` onto the study (where the study
    has a read of that finding already, the later one stays); how many were moved."""
    keys = [waiting_key(a) for a in accessions if a and len(a) <= _WAIT_MAX]
    if not keys:
        return 0
    waiting = session.execute(select(QaRead).where(QaRead.study_uid.in_(keys))
                              .order_by(QaRead.reported_at, QaRead.id)).scalars().all()
    for row in waiting:
        existing = _stored(session, study_uid, row.finding_system, row.finding_code)
        if existing is None:
            row.study_uid = study_uid
        else:
            if _supersedes(row.reported_at, row.accession, row.call, existing):
                _copy(row, existing)
            session.delete(row)
        session.flush()
    return len(waiting)


def _upsert(session: Session, study_key: str, accession: str | None, read: Read,
            status: str, reported_at: datetime, message_id: int | None) -> int:
    values = QaRead(study_uid=study_key, accession=_clip(accession),
                    finding_system=read.finding_system, finding_code=read.finding_code,
                    call=read.call.value, radiologist_positive=read.radiologist_positive,
                    source=read.source, report_status=status, reported_at=reported_at,
                    message_id=message_id)
    existing = _stored(session, study_key, read.finding_system, read.finding_code)
    if existing is None:
        session.add(values)
    elif _supersedes(reported_at, values.accession, values.call, existing):
        _copy(values, existing)
    else:
        return 0
    session.flush()
    return 1


def _stored(session: Session, study_key: str, system: str, code: str) -> QaRead | None:
    return session.execute(select(QaRead).where(
        QaRead.study_uid == study_key, QaRead.finding_system == system,
        QaRead.finding_code == code)).scalar_one_or_none()


def _supersedes(reported_at: datetime, accession: str | None, call: str,
                existing: QaRead) -> bool:
    if reported_at < existing.reported_at:
        return False
    other_order = None not in (accession, existing.accession) and accession != existing.accession
    silent = Call.NOT_MENTIONED.value
    return not (other_order and call == silent and existing.call != silent)


def _copy(source: QaRead, target: QaRead) -> None:
    for name in ("accession", "call", "radiologist_positive", "source", "report_status",
                 "reported_at", "message_id"):
        setattr(target, name, getattr(source, name))


def _clip(value: str | None) -> str | None:
    return None if value is None else value[:_COLUMN]
