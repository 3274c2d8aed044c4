"""PS3.15 Annex E Basic Application Level Confidentiality Profile for pydicom datasets.

Inference may run outside the hospital: what leaves is de-identified here first. The
profile's table (E.1-1) gives one action per attribute: remove (X), empty (Z), replace
with a dummy (D), replace a UID (U) or keep (K); where it allows a choice (X/Z/D) the
choice is made in the table below per attribute, so objects stay valid for the common
image IODs. On top of the table:

- every UID that is not a registered DICOM UID (classes, syntaxes, coding schemes) is
  replaced by `pseudonymous_uid`, keyed by a secret, so the same input UID always gives
  the same output and a study's hierarchy and references stay linked;
- private elements are removed unless allow-listed by (group, creator, element);
- curve and overlay groups (50xx, 60xx), group lengths and person names the table does
  not list are removed;
- descriptions the profile removes (study and series description, protocol name) go:
  callers that need one keep it explicitly with `DeidOptions.keep`.

Pixel data, geometry and acquisition parameters are not in the table and are kept.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from radbridge.mappings.dicom import values
from radbridge.mappings.dicom.errors import DicomContentError


class Action(StrEnum):
    """Table E.1-1's action codes, as this module resolves them."""

    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    UID = "U"


K, X, Z, D, U = Action.KEEP, Action.REMOVE, Action.EMPTY, Action.DUMMY, Action.UID

BASIC_PROFILE: dict[str, Action] = {
    # patient
    "PatientName": Z, "PatientID": Z, "IssuerOfPatientID": X,
    "IssuerOfPatientIDQualifiersSequence": X, "PatientBirthDate": Z, "PatientBirthTime": X,
    "PatientSex": Z, "PatientAge": X, "PatientSize": X, "PatientWeight": X,
    "OtherPatientIDs": X, "OtherPatientIDsSequence": X, "OtherPatientNames": X,
    "PatientBirthName": X, "PatientMotherBirthName": X, "PatientAddress": X,
    "PatientTelephoneNumbers": X, "PatientTelecomInformation": X, "CountryOfResidence": X,
    "RegionOfResidence": X, "MilitaryRank": X, "BranchOfService": X, "Occupation": X,
    "MedicalRecordLocator": X, "PatientInsurancePlanCodeSequence": X,
    "PatientReligiousPreference": X, "PatientPrimaryLanguageCodeSequence": X,
    "PatientPrimaryLanguageModifierCodeSequence": X, "EthnicGroup": X, "SmokingStatus": X,
    "PregnancyStatus": X, "LastMenstrualDate": X, "PatientSexNeutered": X, "PatientState": X,
    "SpecialNeeds": X, "Allergies": X, "MedicalAlerts": X, "AdditionalPatientHistory": X,
    "PatientComments": X, "ResponsiblePerson": X, "ResponsiblePersonRole": X,
    "ResponsibleOrganization": X, "PatientTransportArrangements": X,
    "ReferencedPatientSequence": X, "ReferencedPatientAliasSequence": X,
    "PatientInstitutionResidence": X, "CurrentPatientLocation": X,
    "PatientClinicalTrialParticipationSequence": X, "ClinicalTrialSubjectID": X,
    "ClinicalTrialSubjectReadingID": X, "ClinicalTrialSponsorName": X,
    "ClinicalTrialProtocolEthicsCommitteeName": X,
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber": X, "ClinicalTrialSiteName": X,
    "ClinicalTrialCoordinatingCenterName": X, "ConsentForClinicalTrialUseSequence": X,
    # study, visit and request
    "StudyInstanceUID": U, "AccessionNumber": Z, "IssuerOfAccessionNumberSequence": X,
    "StudyID": Z, "StudyDate": Z, "StudyTime": Z, "StudyDescription": X,
    "StudyComments": X, "ReferringPhysicianName": Z, "ReferringPhysicianAddress": X,
    "ReferringPhysicianTelephoneNumbers": X, "ReferringPhysicianIdentificationSequence": X,
    "ConsultingPhysicianName": X, "ConsultingPhysicianIdentificationSequence": X,
    "PhysiciansOfRecord": X, "PhysiciansOfRecordIdentificationSequence": X,
    "NameOfPhysiciansReadingStudy": X, "PhysiciansReadingStudyIdentificationSequence": X,
    "RequestingPhysician": X, "RequestingPhysicianIdentificationSequence": X,
    "RequestingService": X, "RequestingServiceCodeSequence": X,
    "AdmittingDiagnosesDescription": X, "AdmittingDiagnosesCodeSequence": X,
    "AdmissionID": X, "IssuerOfAdmissionIDSequence": X, "AdmittingDate": X,
    "AdmittingTime": X, "DischargeDiagnosisDescription": X, "ServiceEpisodeID": X,
    "ServiceEpisodeDescription": X, "IssuerOfServiceEpisodeIDSequence": X,
    "VisitComments": X, "ReasonForStudy": X, "ReasonForTheRequestedProcedure": X,
    "ReasonForRequestedProcedureCodeSequence": X, "RequestedProcedureDescription": X,
    "RequestedProcedureID": X, "RequestedProcedureComments": X,
    "RequestedProcedureLocation": X, "RequestedProcedureCodeSequence": X,
    "RequestAttributesSequence": X, "ImagingServiceRequestComments": X,
    "PlacerOrderNumberImagingServiceRequest": X, "FillerOrderNumberImagingServiceRequest": X,
    "OrderEnteredBy": X, "OrderEntererLocation": X, "OrderCallbackPhoneNumber": X,
    "OrderCallbackTelecomInformation": X, "ReferencedStudySequence": X,
    "ProcedureCodeSequence": X, "NamesOfIntendedRecipientsOfResults": X,
    "IntendedRecipientsOfResultsIdentificationSequence": X,
    # scheduled and performed steps
    "ScheduledProcedureStepID": X, "ScheduledProcedureStepDescription": X,
    "ScheduledPerformingPhysicianName": X,
    "ScheduledPerformingPhysicianIdentificationSequence": X,
    "ScheduledProcedureStepLocation": X, "ScheduledProcedureStepStartDate": X,
    "ScheduledProcedureStepStartTime": X, "ScheduledProcedureStepEndDate": X,
    "ScheduledProcedureStepEndTime": X, "ScheduledStudyLocation": X,
    "ScheduledStudyLocationAETitle": X, "ScheduledStationName": X,
    "ScheduledStationAETitle": X, "ScheduledHumanPerformersSequence": X,
    "PerformedProcedureStepID": X, "PerformedProcedureStepDescription": X,
    "PerformedProcedureStepStartDate": X, "PerformedProcedureStepStartTime": X,
    "PerformedProcedureStepEndDate": X, "PerformedProcedureStepEndTime": X,
    "PerformedLocation": X, "PerformedStationName": X, "PerformedStationAETitle": X,
    "PerformedProcedureCodeSequence": X, "ActualHumanPerformersSequence": X,
    "HumanPerformerName": X, "HumanPerformerOrganization": X,
    "HumanPerformerCodeSequence": X,
    # series, equipment and people at work
    "SeriesDescription": X, "SeriesDescriptionCodeSequence": X, "ProtocolName": X,
    "SeriesDate": X, "SeriesTime": X, "InstitutionName": X, "InstitutionAddress": X,
    "InstitutionalDepartmentName": X, "InstitutionalDepartmentTypeCodeSequence": X,
    "InstitutionCodeSequence": X, "StationName": X, "DeviceSerialNumber": D,
    "DeviceUID": U, "DeviceDescription": X, "DeviceLabel": X, "UniqueDeviceIdentifier": X,
    "DetectorID": X, "GantryID": X, "GeneratorID": X, "CassetteID": X, "PlateID": X,
    "SoftwareVersions": X, "DateOfLastCalibration": X, "TimeOfLastCalibration": X,
    "PerformingPhysicianName": X, "PerformingPhysicianIdentificationSequence": X,
    "OperatorsName": X, "OperatorIdentificationSequence": X,
    "SourceApplicationEntityTitle": X,
    # instance
    "SOPInstanceUID": U, "InstanceCreationDate": X, "InstanceCreationTime": X,
    "InstanceCreatorUID": U, "AcquisitionDate": X, "AcquisitionTime": X,
    "AcquisitionDateTime": D, "ContentDate": D, "ContentTime": D,
    "DateOfSecondaryCapture": X, "TimeOfSecondaryCapture": X, "OverlayDate": X,
    "OverlayTime": X, "CurveDate": X, "CurveTime": X, "ImageComments": X,
    "FrameComments": X, "DerivationDescription": X, "AcquisitionComments": X,
    "AcquisitionDeviceProcessingDescription": X, "ContributionDescription": X,
    "IdentifyingComments": X, "ModifiedImageDescription": X, "TextComments": X,
    "TextString": X, "BarcodeValue": X, "LabelText": X,
    "StorageMediaFileSetID": X, "StorageMediaFileSetUID": U,
    # content, reports and signatures
    "ContentCreatorName": Z, "ContentCreatorIdentificationCodeSequence": X,
    "VerifyingObserverName": D, "VerifyingObserverIdentificationCodeSequence": Z,
    "VerifyingOrganization": X, "PersonName": D, "PersonIdentificationCodeSequence": D,
    "PersonAddress": X, "PersonTelephoneNumbers": X, "AuthorObserverSequence": X,
    "ParticipantSequence": X, "CustodialOrganizationSequence": X, "TextValue": X,
    "ContentSequence": X, "AcquisitionContextSequence": X,
    "InterpretationRecorder": X, "InterpretationTranscriber": X, "InterpretationAuthor": X,
    "InterpretationApproverSequence": X, "InterpretationText": X,
    "InterpretationDiagnosisDescription": X, "InterpretationID": X, "ResultsID": X,
    "ResultsIDIssuer": X, "ResultsComments": X, "DistributionName": X,
    "DistributionAddress": X, "ReviewerName": X, "EvaluatorName": X,
    "TopicAuthor": X, "TopicKeywords": X, "TopicSubject": X, "TopicTitle": X,
    "DigitalSignaturesSequence": X, "MACParametersSequence": X,
    "EncryptedAttributesSequence": X, "OriginalAttributesSequence": X,
    "VerificationDateTime": D, "TimezoneOffsetFromUTC": X, "DataSetTrailingPadding": X,
}
"""Table E.1-1, resolved to one action per attribute (keywords as pydicom spells them)."""

PATIENT_CHARACTERISTICS = frozenset({
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup",
    "SmokingStatus", "PregnancyStatus", "PatientSexNeutered", "PatientState",
})
"""Kept with the Retain Patient Characteristics Option."""

DEVICE_IDENTITY = frozenset({
    "StationName", "DeviceSerialNumber", "DeviceUID", "DeviceDescription", "DeviceLabel",
    "UniqueDeviceIdentifier", "DetectorID", "GantryID", "GeneratorID", "CassetteID",
    "PlateID", "SoftwareVersions", "DateOfLastCalibration", "TimeOfLastCalibration",
    "PerformedStationName", "PerformedStationAETitle", "ScheduledStationName",
    "ScheduledStationAETitle",
})
"""Kept with the Retain Device Identity Option."""

_REMOVED_GROUPS = (0x5000, 0x6000)
"""Curves (50xx, retired) and overlays (60xx): their data and comments may identify."""
_NEVER_DATED = frozenset({"PatientBirthDate", "PatientBirthTime", "LastMenstrualDate"})
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_DUMMIES: dict[str, str | int | float | bytes] = {
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y", "DS": "0",
    "IS": "0", "US": 0, "UL": 0, "SS": 0, "SL": 0, "FL": 0.0, "FD": 0.0,
    "OB": b"", "OW": b"", "UN": b"",
}
_DUMMY_TEXT = "ANONYMIZED"
_REGISTERED_UID_ROOT = "1.2.840.10008."
_UID_ROOT = "2.25."
_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "patient": ("113108", "Retain Patient Characteristics Option"),
    "device": ("113109", "Retain Device Identity Option"),
    "dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
}


@dataclass(frozen=True)
class DeidOptions:
    """The profile's options, and what a caller explicitly keeps on top of them.

    `keep` names keywords retained wherever they occur (e.g. StationName for per-scanner
    QA; a kept sequence is still walked, so its items are de-identified); `keep_private`
    names private elements retained as (group, private creator, element offset
    0x00-0xFF), e.g. (0x0019, "GEMS_ACQU_01", 0x0B). A BurnedInAnnotation of YES is
    refused unless `allow_burned_in_annotation`, since the profile only holds if the
    pixels carry no identifying text.
    """

    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_longitudinal_dates: bool = False
    keep: frozenset[str] = frozenset()
    keep_private: frozenset[tuple[int, str, int]] = frozenset()
    allow_burned_in_annotation: bool = False
    method: str = "Radbridge PS3.15 E.1 basic profile"
    """DeidentificationMethod's text (at most 64 characters)."""

    extra_codes: tuple[tuple[str, str], ...] = field(default=())
    """Further (code, meaning) pairs of DCM codes for DeidentificationMethodCodeSequence."""


def pseudonymous_uid(uid: str, secret: bytes) -> str:
    """A 2.25 UID derived from HMAC-SHA256(secret, uid): same input and secret, same UID.

    The first 128 bits of the MAC are stamped as an RFC 9562 version 8 UUID, whose
    integer form makes the UID (2.25.<up to 39 digits>, at most 44 characters).
    """
    digest = hmac.new(secret, uid.strip(values.PAD).encode("utf-8"), hashlib.sha256).digest()
    number = int.from_bytes(digest[:16], "big")
    number = (number & ~(0xF << 76)) | (0x8 << 76)
    number = (number & ~(0x3 << 62)) | (0x2 << 62)
    return f"{_UID_ROOT}{number}"


def deidentify(
    dataset: Dataset, *, secret: bytes, options: DeidOptions | None = None
) -> Dataset:
    """A de-identified copy of `dataset` (the input is never changed).

    Raises DicomContentError when BurnedInAnnotation is YES and the options do not
    allow it.
    """
    chosen = options or DeidOptions()
    if (values.text(dataset, "BurnedInAnnotation") or "").upper() == "YES" and not (
            chosen.allow_burned_in_annotation):
        raise DicomContentError("BurnedInAnnotation",
                                "is YES: the pixels may show identifying text")
    result = copy.deepcopy(dataset)
    profile = _Profile(chosen, secret)
    profile.apply(result)
    _mark(result, chosen)
    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        result.file_meta = _file_meta(meta, result)
    if getattr(result, "preamble", None):
        # a preamble may hold a TIFF header and its tags (dual-personality files)
        result.preamble = bytes(128)
    return result


class _Profile:
    """The resolved table for one call, and the walk that applies it."""

    def __init__(self, options: DeidOptions, secret: bytes) -> None:
        self.options = options
        self.secret = secret
        self.uids: dict[str, str] = {}

    def apply(self, dataset: Dataset) -> None:
        for tag in list(dataset.keys()):
            if tag.is_private:
                self._private(dataset, tag)
                continue
            raw = dataset.get_item(tag)
            vr = _vr_of(raw, tag)
            action = self.action_for(tag, vr)
            self._do(dataset, tag, vr, action)

    def action_for(self, tag: BaseTag, vr: str) -> Action:
        keyword = keyword_for_tag(tag)
        if keyword in self.options.keep:
            return K
        if tag.element == 0 or tag.group == 0x0002 or tag.group & 0xFF00 in _REMOVED_GROUPS:
            return X
        action = BASIC_PROFILE.get(keyword)
        if action is None:
            return U if vr == "UI" else (X if vr == "PN" else K)
        if self._retained(keyword, vr):
            return K
        return action

    def uid(self, value: str) -> str:
        value = value.strip(values.PAD)
        if not value or value.startswith(_REGISTERED_UID_ROOT):
            return value
        if value not in self.uids:
            self.uids[value] = pseudonymous_uid(value, self.secret)
        return self.uids[value]

    def _retained(self, keyword: str, vr: str) -> bool:
        options = self.options
        if keyword in PATIENT_CHARACTERISTICS:
            return options.retain_patient_characteristics
        if keyword in DEVICE_IDENTITY:
            return options.retain_device_identity
        return options.retain_longitudinal_dates and vr in _DATE_VRS and (
            keyword not in _NEVER_DATED)

    def _do(self, dataset: Dataset, tag: BaseTag, vr: str, action: Action) -> None:
        if action is X:
            del dataset[tag]
        elif vr == "SQ":
            self._sequence(dataset, tag, action)
        elif action is Z:
            dataset[tag] = DataElement(tag, vr, None)
        elif action is D:
            dataset[tag] = DataElement(tag, vr, _DUMMIES.get(vr, _DUMMY_TEXT))
        elif action is U:
            self._replace_uids(dataset, tag)

    def _sequence(self, dataset: Dataset, tag: BaseTag, action: Action) -> None:
        """Z empties the sequence, D keeps its shape with every value a dummy, K recurses."""
        if action is Z:
            dataset[tag] = DataElement(tag, "SQ", Sequence())
            return
        for item in dataset[tag].value or ():
            if action is D:
                self._dummy_item(item)
            else:
                self.apply(item)

    def _dummy_item(self, item: Dataset) -> None:
        for tag in list(item.keys()):
            if tag.is_private:
                del item[tag]
                continue
            vr = _vr_of(item.get_item(tag), tag)
            self._do(item, tag, vr, U if vr == "UI" else D)

    def _replace_uids(self, dataset: Dataset, tag: BaseTag) -> None:
        value = dataset[tag].value
        if isinstance(value, MultiValue | list):
            replaced: str | list[str] = [self.uid(str(part)) for part in value]
        else:
            replaced = self.uid(str(value or ""))
        dataset[tag] = DataElement(tag, "UI", replaced)

    def _private(self, dataset: Dataset, tag: BaseTag) -> None:
        if tag.element < 0x0010 or not self._private_kept(dataset, tag):
            del dataset[tag]

    def _private_kept(self, dataset: Dataset, tag: BaseTag) -> bool:
        wanted = self.options.keep_private
        if tag.is_private_creator:
            creator = values.text(dataset, tag)
            return any(group == tag.group and name == creator for group, name, _ in wanted)
        creator_tag = Tag(tag.group, tag.element >> 8)
        if creator_tag not in dataset:
            return False
        creator = values.text(dataset, creator_tag)
        return (tag.group, creator or "", tag.element & 0xFF) in wanted


def _vr_of(raw: DataElement | RawDataElement, tag: BaseTag) -> str:
    """The element's VR; the dictionary's when it was sent implicit or as UN."""
    if raw.VR and raw.VR != "UN":
        return str(raw.VR)
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return str(raw.VR or "UN")


def _mark(dataset: Dataset, options: DeidOptions) -> None:
    """PatientIdentityRemoved, the method and its codes, per PS3.15 E.1.1."""
    dataset.PatientIdentityRemoved = "YES"
    dataset.LongitudinalTemporalInformationModified = (
        "UNMODIFIED" if options.retain_longitudinal_dates else "REMOVED")
    methods = [str(method) for method in _as_list(dataset.get("DeidentificationMethod"))]
    if options.method not in methods:
        methods.append(options.method[:64])
    dataset.DeidentificationMethod = methods[0] if len(methods) == 1 else methods
    used = [_CODES["basic"]]
    used += [_CODES[name] for name, on in (
        ("patient", options.retain_patient_characteristics),
        ("device", options.retain_device_identity),
        ("dates", options.retain_longitudinal_dates)) if on]
    items = list(dataset.get("DeidentificationMethodCodeSequence") or ())
    present = {values.text(item, "CodeValue") for item in items}
    for code, meaning in [*used, *options.extra_codes]:
        if code not in present:
            items.append(_code(code, meaning))
            present.add(code)
    dataset.DeidentificationMethodCodeSequence = Sequence(items)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _as_list(value: object) -> Iterable[object]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue | list) else [value]


def _file_meta(meta: FileMetaDataset, result: Dataset) -> FileMetaDataset:
    """The meta header rebuilt from what is left: the new SOP UIDs, the same syntax."""
    fresh = FileMetaDataset()
    sop_class = values.text(result, "SOPClassUID") or values.text(
        meta, "MediaStorageSOPClassUID")
    sop_instance = values.text(result, "SOPInstanceUID")
    if sop_class:
        fresh.MediaStorageSOPClassUID = UID(sop_class)
    if sop_instance:
        fresh.MediaStorageSOPInstanceUID = UID(sop_instance)
    syntax = values.text(meta, "TransferSyntaxUID")
    if syntax:
        fresh.TransferSyntaxUID = UID(syntax)
    return fresh
