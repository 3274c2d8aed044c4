"""C-MOVE and C-GET of a study or series (Study Root), with sub-operation counts.

C-MOVE asks the peer to C-STORE to a third AE (usually our own SCP, which stores and
indexes what arrives). C-GET brings the instances back on the same association: we take
the SCP role for the storage SOP classes, and every instance is handed to the caller's
callback, which decides what to do with it (write a blob and `receive` it, write a file).
The callback runs on pynetdicom's association thread; the status it leads to goes back
to the peer, so a failure there counts as a failed sub-operation rather than a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import evt, sop_class
from pynetdicom.presentation import PresentationContext, build_context, build_role

from radbridge.errors import RadbridgeError, StoreError
from radbridge.interfaces.dimse.scu import (
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    DicomClient,
    DimseStatusError,
    check_status,
    release,
)

log = logging.getLogger(__name__)

PENDING = (0xFF00,)
LITTLE_ENDIAN: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
COMPRESSED: list[str] = [JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless,
                         JPEG2000, RLELossless]
"""Each gets a context of its own: the peer accepts one syntax per context, and sends an
instance unchanged only when its own syntax was accepted for its SOP class."""
IMAGE_STORAGE = (
    "CTImageStorage", "EnhancedCTImageStorage", "MRImageStorage", "EnhancedMRImageStorage",
    "ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForPresentation", "UltrasoundImageStorage",
    "UltrasoundMultiFrameImageStorage", "SecondaryCaptureImageStorage",
    "XRayAngiographicImageStorage", "NuclearMedicineImageStorage",
    "PositronEmissionTomographyImageStorage", "VLPhotographicImageStorage",
)
"""Storage classes C-GET takes by default in little endian and in each of COMPRESSED."""
OTHER_STORAGE = (
    "DigitalXRayImageStorageForProcessing", "DigitalMammographyXRayImageStorageForProcessing",
    "BreastTomosynthesisImageStorage", "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage", "XRayRadiofluoroscopicImageStorage",
    "EnhancedPETImageStorage", "SegmentationStorage", "BasicTextSRStorage",
    "EnhancedSRStorage", "ComprehensiveSRStorage", "Comprehensive3DSRStorage",
    "KeyObjectSelectionDocumentStorage", "GrayscaleSoftcopyPresentationStateStorage",
    "EncapsulatedPDFStorage", "RTStructureSetStorage", "RTDoseStorage", "RTPlanStorage",
    "RTImageStorage", "ParametricMapStorage", "RawDataStorage", "SpatialRegistrationStorage",
    "VLWholeSlideMicroscopyImageStorage",
)
"""Further classes C-GET takes by default, in little endian only (7 x 14 + 24 < 128)."""


@dataclass(frozen=True)
class RetrieveOutcome:
    """The final C-MOVE/C-GET status and its sub-operation counts."""

    status: int
    completed: int = 0
    failed: int = 0
    warning: int = 0

    @property
    def instances(self) -> int:
        return self.completed + self.warning


@dataclass(frozen=True)
class RetrievedInstance:
    """One instance that arrived by C-GET, as a DICOM Part 10 file."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    data: bytes


OnInstance = Callable[[RetrievedInstance], None]
"""Takes one retrieved instance; raising StoreError answers 0xA700, RadbridgeError 0xC000."""


def identifier(study_uid: str, series_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
    ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    return ds


def move(client: DicomClient, move_to: str, study_uid: str,
         series_uid: str | None = None) -> RetrieveOutcome:
    """C-MOVE a study (or one series) to the AE the peer knows as `move_to`."""
    assoc = client.associate([build_context(STUDY_ROOT_MOVE)])
    try:
        responses = assoc.send_c_move(identifier(study_uid, series_uid), move_to,
                                      STUDY_ROOT_MOVE)
        outcome = _final(client.name, "C-MOVE", responses)
    finally:
        release(assoc)
    log.info("C-MOVE of study %s from %s to %s: status 0x%04X, %d completed, %d failed,"
             " %d warning", study_uid, client.name, move_to, outcome.status,
             outcome.completed, outcome.failed, outcome.warning)
    return outcome


def get(client: DicomClient, study_uid: str, on_instance: OnInstance, *,
        series_uid: str | None = None,
        sop_classes: Iterable[str] = ()) -> RetrieveOutcome:
    """C-GET a study (or one series); each instance goes to `on_instance` as it arrives."""
    if sop_classes:
        classes = list(dict.fromkeys(sop_classes))
        storage = storage_contexts(classes)
    else:
        classes = [str(getattr(sop_class, n)) for n in (*IMAGE_STORAGE, *OTHER_STORAGE)]
        storage = storage_contexts(classes[:len(IMAGE_STORAGE)], classes[len(IMAGE_STORAGE):])
    contexts = [build_context(STUDY_ROOT_GET), *storage]
    roles = [build_role(uid, scp_role=True) for uid in dict.fromkeys(classes)]
    handler = _StoreHandler(on_instance)
    assoc = client.associate(contexts, roles=roles, handlers=[(evt.EVT_C_STORE, handler)])
    try:
        outcome = _final(client.name, "C-GET",
                         assoc.send_c_get(identifier(study_uid, series_uid), STUDY_ROOT_GET))
    finally:
        release(assoc)
    log.info("C-GET of study %s from %s: status 0x%04X, %d completed, %d failed, %d warning",
             study_uid, client.name, outcome.status, outcome.completed, outcome.failed,
             outcome.warning)
    return outcome


def storage_contexts(images: Iterable[str],
                     others: Iterable[str] = ()) -> list[PresentationContext]:
    """Little endian for every class; each compressed syntax too for `images`.

    Cut at 127 contexts (one is the C-GET's own): the classes given first are kept.
    """
    contexts = []
    for uid in images:
        contexts.append(build_context(uid, LITTLE_ENDIAN))
        contexts += [build_context(uid, syntax) for syntax in COMPRESSED]
    contexts += [build_context(uid, LITTLE_ENDIAN) for uid in others]
    return contexts[:127]


def _final(peer: str, what: str,
           responses: Iterator[tuple[Dataset, Dataset | None]]) -> RetrieveOutcome:
    outcome = RetrieveOutcome(0xFF00)
    for status, _identifier in responses:
        code = check_status(peer, status, what)
        outcome = RetrieveOutcome(
            code, int(status.get("NumberOfCompletedSuboperations", outcome.completed) or 0),
            int(status.get("NumberOfFailedSuboperations", outcome.failed) or 0),
            int(status.get("NumberOfWarningSuboperations", outcome.warning) or 0))
        if code in PENDING:
            continue
        if code not in (0x0000, 0xB000) and code != 0xFE00:
            comment = status.get("ErrorComment", "")
            raise DimseStatusError(peer, code, f"{what} failed {comment}".strip())
    return outcome


class _StoreHandler:
    """EVT_C_STORE during C-GET: decode nothing, hand the Part 10 bytes on."""

    def __init__(self, on_instance: OnInstance) -> None:
        self._on_instance = on_instance

    def __call__(self, event: evt.Event) -> Dataset:
        request = event.request
        instance = RetrievedInstance(
            str(getattr(request, "AffectedSOPClassUID", "")),
            str(getattr(request, "AffectedSOPInstanceUID", "")),
            str(event.context.transfer_syntax), event.encoded_dataset(include_meta=True))
        try:
            self._on_instance(instance)
        except StoreError as exc:
            return _status(0xA700, str(exc))
        except RadbridgeError as exc:
            return _status(0xC000, str(exc))
        return _status(0x0000)


def _status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds
