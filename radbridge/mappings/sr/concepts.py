"""Codes, units and UIDs that the SR and the SEG of one result share.

Coding systems arrive with HL7 table 0396 names (SCT, LN, RADLEX, DCM, 99xxx for local
ones); DICOM's Coding Scheme Designators use the same names for these, so most pass
through; a few common aliases are mapped. A local scheme (99xxx) is declared in the
object's Coding Scheme Identification Sequence, as PS3.3 C.12.1.1.2 asks for designators
that PS3.16 does not list.

UIDs are name-based: a UUID (version 5) of the result id and the object's role, written
as a `2.25.` OID (PS3.5 B.2). Rendering the same result again gives the same Series and
SOP Instance UIDs, so a resend after a crash overwrites instead of duplicating, and the
SEG and the SR of one finding share its tracking UID.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from radbridge.mappings.results import (
    DEMONSTRATION_WARNING,
    PRELIMINARY_NOTICE,
    AiResult,
    Coding,
    Finding,
    ModelIdentity,
)

LOCAL_SCHEME = "99RDB"
"""Radbridge's own codes, the same local system the ORU uses."""
MANUFACTURER = "Radbridge"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:radbridge:dicom-uid")
_ALIASES = {"SNOMED": "SCT", "SNOMEDCT": "SCT", "SNM": "SCT", "LOINC": "LN",
            "RADLEX": "RADLEX", "RADLX": "RADLEX"}
_MEANING_LENGTH = 64  # Code Meaning is LO

PRESENT = codes.SCT.Present
ABSENT = codes.SCT.Absent
PROBABILITY = codes.DCM.Probability
PROBABILITY_UNIT = CodedConcept("{probability}", "UCUM", "probability")
SCORE = CodedConcept("AI-SCORE", LOCAL_SCHEME, "AI model score")
NO_UNIT = CodedConcept("1", "UCUM", "no units")
COMMENT = codes.DCM.Comment
REPORT = CodedConcept("18782-3", "LN", "Radiology Study observation (narrative)")
INTENDED_USE = CodedConcept("AI-USE", LOCAL_SCHEME, "AI intended use")
WARNING = CodedConcept("AI-WARNING", LOCAL_SCHEME, "AI usage warning")
MODEL = CodedConcept("AI-DEVICE", LOCAL_SCHEME, "AI device identifier")


DICOM_SEXES = ("M", "F", "O", "")


def fit_patient(dataset: Dataset) -> Dataset:
    """`dataset`, or a shallow copy of it with a PatientSex DICOM does not allow (HL7's
    U, A, N, or lower case, as some modalities write) emptied: highdicom refuses those,
    and an SR or SEG must not fail because a source header is sloppy."""
    if str(dataset.get("PatientSex", "") or "") in DICOM_SEXES:
        return dataset
    fitted = Dataset()  # pydicom's copies share elements: build a new one around them
    for element in dataset:
        if element.keyword != "PatientSex":
            fitted.add(element)
    fitted.PatientSex = ""
    if hasattr(dataset, "file_meta"):
        fitted.file_meta = dataset.file_meta
    return fitted


def derived_uid(*parts: str) -> str:
    """A UID that depends only on `parts` (a name-based UUID as a 2.25 OID)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, '/'.join(parts)).int}"


def device_uid(model: ModelIdentity) -> str:
    """The observer device's UID: one per device identifier, whatever the version."""
    return derived_uid("device", model.device_identifier)


def finding_tracking_uid(result: AiResult, finding: Finding) -> str:
    """The finding's tracking UID, shared by its SR measurement group and SEG segment."""
    return derived_uid(result.result_id, "finding", finding.system, finding.code)


def tracking_id(finding: Finding) -> str:
    """A human-readable tracking identifier (UT, kept short)."""
    return f"{finding.display or finding.code} ({finding.system} {finding.code})"[:64]


def scheme(system: str) -> str:
    """The DICOM Coding Scheme Designator for an HL7 coding system name."""
    return _ALIASES.get(system.upper(), system)


def concept(coding: Coding) -> CodedConcept:
    """A Coding as an SR/SEG CodedConcept (the code stands in for a missing display)."""
    meaning = (coding.display or coding.code)[:_MEANING_LENGTH]
    return CodedConcept(coding.code, scheme(coding.system), meaning)


def finding_concept(finding: Finding) -> CodedConcept:
    return concept(finding.coding)


def local_schemes(designators: set[str]) -> list[CodingSchemeIdentificationItem]:
    """Coding Scheme Identification items for the local (99xxx) designators used."""
    return [CodingSchemeIdentificationItem(designator, name="Radbridge local codes"
                                           if designator == LOCAL_SCHEME
                                           else f"Local coding scheme {designator}")
            for designator in sorted(designators) if designator.startswith("99")]


def result_designators(result: AiResult) -> set[str]:
    """Every coding scheme designator an SR or SEG of `result` may use."""
    found = {scheme(f.system) for f in result.findings}
    found |= {scheme(f.body_site.system) for f in result.findings if f.body_site}
    found |= {scheme(m.system) for m in result.measurements}
    found.add(scheme(result.order.procedure.system))
    return found | {LOCAL_SCHEME}


def notices(model: ModelIdentity) -> list[str]:
    """What every output must say about its origin, most important first."""
    lines = [DEMONSTRATION_WARNING] if model.demonstration else []
    lines.append(PRELIMINARY_NOTICE)
    return lines


def series_description(model: ModelIdentity, kind: str) -> str:
    """Series Description (LO, 64): the kind, the model and version, DEMO flagged."""
    prefix = f"AI {kind}{' DEMO' if model.demonstration else ''}"
    return f"{prefix}: {model.name} {model.version}"[:64]


def utc_offset(moment: datetime) -> str:
    """Timezone Offset From UTC (&ZZXX) of an aware datetime."""
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def pin_times(dataset: Dataset, moment: datetime) -> None:
    """Make the object's own times the result's: its time zone, instance creation and
    the time highdicom stamps on its Contributing Equipment item (all 'now' otherwise,
    and a resend would differ from the first send)."""
    dataset.TimezoneOffsetFromUTC = utc_offset(moment)
    dataset.InstanceCreationDate = moment.strftime("%Y%m%d")
    dataset.InstanceCreationTime = moment.strftime("%H%M%S.%f")
    stamp = moment.strftime("%Y%m%d%H%M%S.%f") + utc_offset(moment)
    for item in dataset.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = stamp
