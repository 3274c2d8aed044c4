"""An AI result as a DICOM Comprehensive 3D SR, TID 1500 Measurement Report (highdicom).

The content tree, under the "Imaging Measurement Report" container:

- language (English), and the observation context: the observer is a device, the model
  (TID 1004: UID derived from the device identifier, name = device identifier,
  manufacturer "Radbridge", model name = model name, serial number = model version);
- procedure reported: the order's procedure code;
- Imaging Measurements: one measurement group (TID 1501) per finding, tracked by a UID
  derived from the result id (the SEG of the same finding uses it too), with the finding
  type, a qualitative evaluation "finding = Present | Absent" (SNOMED CT 52101004 /
  272519000), the finding site, the algorithm (TID 4019: model name and version) and
  the model's score as a measurement ("Probability", DCM 122157, UCUM {probability},
  when it lies in 0..1; else a local "AI model score" with unit 1). Where the finding
  has a location, the score is INFERRED FROM a POINT there: SCOORD3D in the images'
  Frame of Reference when the point is known in patient coordinates, else SCOORD on the
  image (and frame) in DICOM's pixel convention (0,0 is the top left corner of the top
  left pixel, so a pixel centre is +0.5). This is how dcmjs/OHIF write points, and it
  keeps every group a TID 1501 group: pixelmed's validator checks every group of a
  report against TID 1410 once one is a planar ROI group, so mixing the two kinds (a
  located finding beside an unlocated one) fails there although the standard allows
  it. Only a located finding without a score becomes a TID 1410 group whose Image
  Region is the point. The result's measurements form one more TID 1501 group.
- Qualitative Evaluations (TID 1500 row 12): TEXT items with the demonstration warning
  (demonstration models), the preliminary notice, the model's label and intended use,
  and the report text.

The document is PRELIMINARY, COMPLETE and UNVERIFIED; patient and study attributes come
from the evidence (the headers of the images the model read, all listed as evidence);
the order goes to the Referenced Request Sequence. Series and SOP Instance UIDs are
derived from the result id, and dates from its time, so rendering is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    Comprehensive3DSR,
    ContainerContentItem,
    ContentSequence,
    CoordinatesForMeasurement,
    CoordinatesForMeasurement3D,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    GraphicTypeValues,
    GraphicTypeValues3D,
    ImageRegion,
    ImageRegion3D,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForRegion,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from radbridge.mappings.results import AiResult, Finding, FindingLocation, ModelIdentity
from radbridge.mappings.sr import concepts
from radbridge.mappings.sr.errors import SrRenderError

QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
Group = PlanarROIMeasurementsAndQualitativeEvaluations | MeasurementsAndQualitativeEvaluations


def render_sr(result: AiResult, evidence: Sequence[Dataset], *, series_number: int = 900,
              institution: str | None = None, previous: Sequence[Dataset] = ()) -> Dataset:
    """The TID 1500 Comprehensive 3D SR of `result` against `evidence`, the headers of
    the images the model read (pixel data not needed). SrRenderError when they do not
    fit (no evidence of the result's study, a finding on an image not in evidence).

    `previous`: the SRs this one replaces (a corrected result after new images), listed
    in its Predecessor Documents Sequence so that a PACS or viewer knows which is current.
    """
    ordered = [concepts.fit_patient(ds) for ds in _study_first(result, evidence)]
    images = {str(ds.SOPInstanceUID): ds for ds in ordered}
    groups: list[Group] = [_finding_group(result, f, images) for f in result.findings]
    if result.measurements or not groups:
        groups.append(_measurements_group(result))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=observer(result.model))),
        procedure_reported=concepts.concept(result.order.procedure),
        imaging_measurements=groups)
    root = report[0]
    root.ContentSequence.append(_notes(result))
    created = result.created_at
    try:
        document = Comprehensive3DSR(
            evidence=ordered, content=root,
            series_instance_uid=concepts.derived_uid(result.revision_key, "sr-series"),
            series_number=series_number,
            sop_instance_uid=concepts.derived_uid(result.revision_key, "sr"),
            instance_number=1, manufacturer=concepts.MANUFACTURER,
            is_complete=True, is_final=False, is_verified=False,
            institution_name=institution, requested_procedures=[_request(result)],
            previous_versions=list(previous) or None,
            series_description=concepts.series_description(result.model, "SR"),
            content_date=created.date(), content_time=created.time().replace(tzinfo=None),
            series_date=created.date(), series_time=created.time().replace(tzinfo=None),
            coding_schemes=concepts.local_schemes(concepts.result_designators(result)))
    except (ValueError, TypeError, AttributeError) as exc:
        raise SrRenderError(f"result {result.result_id}: highdicom refused the SR: "
                            f"{type(exc).__name__}: {exc}") from exc
    concepts.pin_times(document, created)
    return document


def observer(model: ModelIdentity) -> DeviceObserverIdentifyingAttributes:
    """The model as the SR's observer device (TID 1004)."""
    return DeviceObserverIdentifyingAttributes(
        uid=concepts.device_uid(model), name=model.device_identifier[:64],
        manufacturer_name=concepts.MANUFACTURER, model_name=model.name[:64],
        serial_number=model.version[:64])


def algorithm(model: ModelIdentity) -> AlgorithmIdentification:
    return AlgorithmIdentification(name=model.name, version=model.version)


def _study_first(result: AiResult, evidence: Sequence[Dataset]) -> list[Dataset]:
    """The evidence with the result's own study first (the SR copies patient and study
    from the first item), or SrRenderError when none is of that study."""
    ordered = sorted(evidence, key=lambda ds: ds.get("StudyInstanceUID") != result.study_uid)
    if not ordered or ordered[0].get("StudyInstanceUID") != result.study_uid:
        raise SrRenderError(f"result {result.result_id}: no evidence image belongs to "
                            f"study {result.study_uid}")
    return ordered


def _finding_group(result: AiResult, finding: Finding, images: dict[str, Dataset]) -> Group:
    name = concepts.finding_concept(finding)
    common = {
        "tracking_identifier": TrackingIdentifier(
            uid=concepts.finding_tracking_uid(result, finding),
            identifier=concepts.tracking_id(finding)),
        "finding_type": name,
        "algorithm_id": algorithm(result.model),
        "finding_sites": [FindingSite(concepts.concept(finding.body_site))]
        if finding.body_site else None,
        "qualitative_evaluations": [QualitativeEvaluation(
            name, concepts.PRESENT if finding.positive else concepts.ABSENT)],
    }
    point = None if finding.location is None else _point(finding.location, images)
    if finding.score is not None:
        return MeasurementsAndQualitativeEvaluations(
            measurements=[_score(finding.score, point)], **common)  # type: ignore[arg-type]
    if point is None:
        return MeasurementsAndQualitativeEvaluations(**common)  # type: ignore[arg-type]
    return PlanarROIMeasurementsAndQualitativeEvaluations(
        referenced_region=point.region(), **common)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Point:
    """Where a finding is: patient coordinates in a Frame of Reference, or an image
    pixel position in DICOM's convention (column, row from the top left corner)."""

    data: list[float]
    frame_of_reference: str | None = None
    image: SourceImageForRegion | None = None

    def coordinates(self) -> CoordinatesForMeasurement | CoordinatesForMeasurement3D:
        """The point a measurement was inferred from (TID 300 row 'INFERRED FROM')."""
        if self.image is not None:
            return CoordinatesForMeasurement(GraphicTypeValues.POINT, np.asarray([self.data]),
                                             self.image)
        return CoordinatesForMeasurement3D(GraphicTypeValues3D.POINT, np.asarray([self.data]),
                                           str(self.frame_of_reference))

    def region(self) -> ImageRegion | ImageRegion3D:
        """The point as the image region of a planar ROI group (TID 1410)."""
        if self.image is not None:
            return ImageRegion(GraphicTypeValues.POINT, np.asarray([self.data]), self.image)
        return ImageRegion3D(GraphicTypeValues3D.POINT, np.asarray([self.data]),
                             str(self.frame_of_reference))


def _point(location: FindingLocation, images: dict[str, Dataset]) -> _Point:
    image = images.get(location.sop_instance_uid)
    if image is None:
        raise SrRenderError(f"a finding lies on image {location.sop_instance_uid}, which "
                            "is not among the evidence")
    frame_of_reference = image.get("FrameOfReferenceUID")
    if location.patient_mm is not None and frame_of_reference:
        return _Point(list(location.patient_mm), frame_of_reference=str(frame_of_reference))
    frames = int(image.get("NumberOfFrames", 1) or 1)
    rows, columns = int(image.get("Rows", 0)), int(image.get("Columns", 0))
    if location.frame > frames or not (0 <= location.row < rows
                                       and 0 <= location.column < columns):
        raise SrRenderError(f"a finding's location is outside image "
                            f"{location.sop_instance_uid} ({frames} frames, {rows}x{columns})")
    source = SourceImageForRegion(str(image.SOPClassUID), location.sop_instance_uid,
                                  [location.frame] if frames > 1 else None)
    return _Point([location.column + 0.5, location.row + 0.5], image=source)


def _score(score: float, point: _Point | None) -> Measurement:
    """The model's score, inferred from the finding's point where it has one."""
    where = None if point is None else [point.coordinates()]
    if 0.0 <= score <= 1.0:
        return Measurement(concepts.PROBABILITY, score, concepts.PROBABILITY_UNIT,
                           referenced_coordinates=where)
    return Measurement(concepts.SCORE, score, concepts.NO_UNIT, referenced_coordinates=where)


def _measurements_group(result: AiResult) -> MeasurementsAndQualitativeEvaluations:
    """The result's own measurements (or, for a result without findings, an empty group:
    TID 1500 needs at least one)."""
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=concepts.derived_uid(result.result_id, "measurements"),
            identifier="AI measurements"),
        algorithm_id=algorithm(result.model),
        measurements=[Measurement(concepts.concept(m.coding), m.value, _unit(m.unit))
                      for m in result.measurements] or None)


def _unit(unit: str) -> CodedConcept:
    return concepts.NO_UNIT if unit == "1" else CodedConcept(unit, "UCUM", unit)


def _notes(result: AiResult) -> ContainerContentItem:
    """TEXT items that say where the result came from and how far to trust it."""
    model = result.model
    items: list[tuple[CodedConcept, str]] = []
    if model.demonstration:
        items.append((concepts.WARNING, concepts.notices(model)[0]))
    items.append((concepts.COMMENT, concepts.notices(model)[-1]))
    items.append((concepts.MODEL, model.label))
    if model.intended_use:
        items.append((concepts.INTENDED_USE, model.intended_use))
    if result.report_text.strip():
        items.append((concepts.REPORT, result.report_text))
    container = ContainerContentItem(QUALITATIVE_EVALUATIONS,
                                     relationship_type=RelationshipTypeValues.CONTAINS)
    container.ContentSequence = ContentSequence([
        TextContentItem(name, value, RelationshipTypeValues.CONTAINS) for name, value in items])
    return container


def _request(result: AiResult) -> Dataset:
    """The order as a Referenced Request Sequence item (SR Document General module)."""
    order = result.order
    item = Dataset()
    item.StudyInstanceUID = result.study_uid
    item.ReferencedStudySequence = []
    item.AccessionNumber = order.accession
    if order.accession_issuer:
        issuer = Dataset()
        issuer.LocalNamespaceEntityID = order.accession_issuer
        item.IssuerOfAccessionNumberSequence = [issuer]
    item.RequestedProcedureID = order.requested_procedure_id or order.accession
    item.RequestedProcedureDescription = (order.procedure.display or order.procedure.code)[:64]
    item.RequestedProcedureCodeSequence = [concepts.concept(order.procedure)]
    item.PlacerOrderNumberImagingServiceRequest = order.placer_number or ""
    item.FillerOrderNumberImagingServiceRequest = order.filler_number or ""
    return item

