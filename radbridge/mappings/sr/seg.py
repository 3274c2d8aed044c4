"""One finding's mask or heat map as a DICOM Segmentation (highdicom), on the source images.

The masks come keyed by (SOP Instance UID, frame), each on that image's pixel grid (as
`radbridge.inference.overlay.heatmap_on_images` gives them). By default the SEG is
BINARY: a boolean or integer mask is used as it is (non-zero is inside), and a float heat
map is cut at half its peak over all planes (the region at least half as strong as the
strongest response, as a full width at half maximum is). Binary is the default because
every SEG-capable viewer and PACS displays it, while FRACTIONAL support is patchy, and
because a heat map is not a calibrated probability, which FRACTIONAL PROBABILITY would
claim it to be. `fractional=True` keeps the graded map instead (values in 0..1 are kept,
a map peaking above 1 is scaled by its peak), for viewers that show it.

The segment is typed by the finding's code (category SNOMED CT "Morphologically
abnormal structure"), carries the finding site as anatomic region, the finding's
tracking UID (the SR's measurement group of the same finding has it too), and the model
as algorithm (name, version, family "Artificial Intelligence"). The equipment is the
model: manufacturer Radbridge, model name, version, device identifier; a demonstration
model's SEG has Content Qualification RESEARCH and the warning as Content Description.
UIDs derive from the result id and the finding, so a resend replaces, never duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from highdicom import AlgorithmIdentificationSequence
from highdicom.seg import Segmentation, SegmentDescription
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from radbridge.mappings.results import DEMONSTRATION_WARNING, AiResult, Finding
from radbridge.mappings.sr import concepts
from radbridge.mappings.sr.errors import SrRenderError

MaskKey = tuple[str, int]
"""(SOP Instance UID, frame number from 1) of the image a mask lies on."""
CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
CONTENT_LABEL = "AI_FINDING"


def render_seg(result: AiResult, source: Sequence[Dataset], masks: Mapping[MaskKey, Any],
               finding: Finding, *, series_number: int = 901, fractional: bool = False
               ) -> Dataset:
    """The Segmentation of `finding` (one of `result.findings`) from `masks` on the
    images of `source` (one series: single-frame images, or one multi-frame image).
    SrRenderError when a mask does not fit its image or marks nothing."""
    if finding not in result.findings:
        raise SrRenderError(f"result {result.result_id}: the finding to segment is not "
                            "one of the result's findings")
    images, keys = _planes([concepts.fit_patient(ds) for ds in source], masks)
    frames = _frames(images, keys, masks, fractional)
    model = result.model
    created = result.created_at
    try:
        seg = Segmentation(
            source_images=images, pixel_array=frames,
            segmentation_type="FRACTIONAL" if fractional else "BINARY",
            segment_descriptions=[_segment(result, finding)],
            series_instance_uid=concepts.derived_uid(result.revision_key, "seg-series"),
            series_number=series_number,
            sop_instance_uid=concepts.derived_uid(result.revision_key, "seg", finding.system,
                                                  finding.code),
            instance_number=result.findings.index(finding) + 1,
            manufacturer=concepts.MANUFACTURER, manufacturer_model_name=model.name[:64],
            software_versions=model.version[:64],
            device_serial_number=model.device_identifier[:64],
            content_label=CONTENT_LABEL,
            content_description=(DEMONSTRATION_WARNING if model.demonstration
                                 else concepts.notices(model)[-1])[:64],
            content_qualification="RESEARCH" if model.demonstration else "PRODUCT",
            series_description=concepts.series_description(model, "SEG"),
            content_date=created.date(), content_time=created.time().replace(tzinfo=None),
            series_date=created.date(), series_time=created.time().replace(tzinfo=None),
            coding_schemes=concepts.local_schemes(concepts.result_designators(result)))
    except (ValueError, TypeError, AttributeError) as exc:
        raise SrRenderError(f"result {result.result_id}: highdicom refused the SEG: "
                            f"{type(exc).__name__}: {exc}") from exc
    if "FrameOfReferenceUID" not in seg:
        # General Image: Patient Orientation (type 2C) is required of an image without
        # patient geometry (a projection radiograph, a photograph); highdicom leaves it out.
        seg.PatientOrientation = images[0].get("PatientOrientation", "")
    concepts.pin_times(seg, created)
    return seg


def _segment(result: AiResult, finding: Finding) -> SegmentDescription:
    model = result.model
    return SegmentDescription(
        segment_number=1,
        segment_label=(finding.display or finding.code)[:64],
        segmented_property_category=CATEGORY,
        segmented_property_type=concepts.finding_concept(finding),
        algorithm_type="AUTOMATIC",
        algorithm_identification=AlgorithmIdentificationSequence(
            name=model.name, family=codes.cid7162.ArtificialIntelligence,
            version=model.version, source=concepts.MANUFACTURER),
        tracking_uid=concepts.finding_tracking_uid(result, finding),
        tracking_id=concepts.tracking_id(finding),
        anatomic_regions=[concepts.concept(finding.body_site)] if finding.body_site else None)


def _planes(source: Sequence[Dataset], masks: Mapping[MaskKey, Any]
            ) -> tuple[list[Dataset], list[MaskKey]]:
    """The source images highdicom gets and the (instance, frame) of each SEG frame, in
    the same order: every frame of one multi-frame image, or one frame per single-frame
    image that has a mask (the others would be empty frames, which the SEG leaves out)."""
    if not source:
        raise SrRenderError("no source images to segment")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source}
    unknown = sorted({uid for uid, _ in masks} - by_uid.keys())
    if unknown:
        raise SrRenderError(f"masks on images not among the source: {', '.join(unknown)}")
    frames = {str(ds.SOPInstanceUID): int(ds.get("NumberOfFrames", 1) or 1) for ds in source}
    multi = [uid for uid, count in frames.items() if count > 1 and any(
        key[0] == uid for key in masks)]
    if multi:
        if len({uid for uid, _ in masks}) > 1:
            raise SrRenderError("masks on a multi-frame image and on other images: a SEG "
                                "segments one multi-frame image or single-frame images")
        uid = multi[0]
        return [by_uid[uid]], [(uid, number) for number in range(1, frames[uid] + 1)]
    images = [ds for ds in source if (str(ds.SOPInstanceUID), 1) in masks]
    if not images:
        raise SrRenderError("no mask lies on frame 1 of a single-frame source image")
    return images, [(str(ds.SOPInstanceUID), 1) for ds in images]


def _frames(images: Sequence[Dataset], keys: Sequence[MaskKey], masks: Mapping[MaskKey, Any],
            fractional: bool) -> NDArray[Any]:
    """The SEG's pixel array (frames, rows, columns): bool (binary) or float (fractional)."""
    rows, columns = int(images[0].Rows), int(images[0].Columns)
    stack = np.zeros((len(keys), rows, columns), dtype=np.float32)
    graded = False
    for index, key in enumerate(keys):
        if key not in masks:
            continue
        mask = np.asarray(masks[key])
        if mask.shape != (rows, columns):
            raise SrRenderError(f"the mask on {key[0]} frame {key[1]} is {mask.shape}, the "
                                f"image {(rows, columns)}")
        graded = graded or mask.dtype.kind == "f"
        stack[index] = mask
    peak = float(stack.max(initial=0.0))
    if peak <= 0.0 or not np.isfinite(peak):
        raise SrRenderError("the mask marks no pixel (nothing to segment)")
    if fractional:
        scaled: NDArray[np.float32] = np.clip(stack / peak if peak > 1.0 else stack, 0.0, 1.0)
        return scaled
    inside: NDArray[np.bool_] = stack >= peak / 2 if graded else stack > 0
    return inside
