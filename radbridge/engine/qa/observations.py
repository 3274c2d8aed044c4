"""What the model said, per finding of each done inference run, as QA rows.

Recorded in the transaction that records the run as done, so a run is never done
without its rows (nor rows without a done run). Each row carries what QA breaks results
down by: the study date (the time axis of every window), the equipment, site and
demographics as labels ("unknown" when the header has none: such studies still count),
the acquisition, and the mean and standard deviation of the model's input tensor after
preprocessing, on which input drift is measured. No identifiers beyond the study's UID
and accession: sex and an age band, never a birth date.

Recording a run a second time adds nothing. Reports that were waiting for this study
by accession (its report came first) are moved onto the study, so that they join.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from radbridge.engine.models import InferenceRun, QaObservation, utcnow
from radbridge.engine.qa.reports import adopt_waiting, study_accessions
from radbridge.inference.cards import ModelCard
from radbridge.mappings.dicom.values import dicom_date, text
from radbridge.qa.acquisition import StudyFacts
from radbridge.qa.strata import group_value

DONE = "done"
_LABEL = 64
"""The width of the strata columns."""


@dataclass(frozen=True)
class RunInput:
    """What a done run's QA rows take beyond the run: a header of the series the model
    read (equipment, acquisition, demographics, study date) and its input's statistics."""

    header: Dataset
    pixel_mean: float | None
    pixel_std: float | None
    strata: dict[str, str] = field(default_factory=dict)
    """The site's configured strata: DICOM keyword -> value ("unknown" when absent)."""

    @classmethod
    def of(cls, datasets: Sequence[Dataset], tensor: NDArray[Any],
           strata: Sequence[str] = ()) -> RunInput:
        """From the series' datasets (the first one's header) and the prepared tensor;
        statistics that are not finite are left out (None) rather than stored as NaN."""
        values = np.asarray(tensor, dtype=np.float64)
        mean = float(values.mean()) if values.size else math.nan
        std = float(values.std()) if values.size else math.nan
        header = datasets[0]
        chosen = {keyword: _label(group_value(text(header, keyword))) for keyword in strata}
        return cls(header, _finite(mean), _finite(std), chosen)


def record_observations(session: Session, run: InferenceRun, card: ModelCard,
                        source: RunInput) -> int:
    """Insert one row per finding of `run` (done) in the caller's transaction; the count
    inserted (0 for a run not done, or one already recorded). A run of a newer version of
    the study (late images) replaces the rows of the earlier runs of the same model
    version: the study counts once in agreement and drift, with its latest result."""
    if run.status != DONE or not run.findings or _recorded(session, run.id):
        return 0
    session.execute(delete(QaObservation).where(
        QaObservation.study_uid == run.study_uid, QaObservation.model_name == run.model_name,
        QaObservation.model_version == run.model_version, QaObservation.run_id < run.id))
    rows = observation_rows(run, card, source)
    session.add_all(rows)
    accession = rows[0].accession if rows else None
    adopt_waiting(session, run.study_uid,
                  study_accessions(session, run.study_uid, also=(accession,)))
    return len(rows)


def observation_rows(run: InferenceRun, card: ModelCard,
                     source: RunInput) -> list[QaObservation]:
    """The rows for a done run: one per finding, once per (system, code)."""
    header = source.header
    facts = StudyFacts.from_header(header)
    study_date: date = dicom_date(text(header, "StudyDate")) or (
        run.updated_at or utcnow()).date()
    thresholds = {(o.finding.system, o.finding.code): o.threshold for o in card.findings}
    shared: dict[str, Any] = {
        "run_id": run.id, "study_uid": run.study_uid,
        "accession": _clip(text(header, "AccessionNumber")),
        "model_name": run.model_name, "model_version": run.model_version,
        "study_date": study_date, "recorded_at": utcnow(),
        "manufacturer": _label(facts.manufacturer), "scanner_model": _label(facts.scanner_model),
        "station": _label(facts.station),
        "site": _label(group_value(text(header, "InstitutionName"))),
        "sex": facts.sex, "age_band": facts.age_band,
        "kvp": facts.kvp, "slice_thickness": facts.slice_thickness,
        "pixel_spacing": facts.pixel_spacing[0] if facts.pixel_spacing else None,
        "kernel": _clip(facts.kernel),
        "pixel_mean": source.pixel_mean, "pixel_std": source.pixel_std,
        "strata": dict(source.strata),
    }
    rows: dict[tuple[str, str], QaObservation] = {}
    for finding in run.findings:
        key = (str(finding["system"]), str(finding["code"]))
        if key in rows or key not in thresholds:
            continue
        rows[key] = QaObservation(
            finding_system=key[0], finding_code=key[1],
            score=float(finding["probability"]), ai_positive=bool(finding["positive"]),
            threshold=thresholds[key], **shared)
    return list(rows.values())


def _recorded(session: Session, run_id: int) -> bool:
    return bool(session.execute(
        select(exists().where(QaObservation.run_id == run_id))).scalar())


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _label(value: str) -> str:
    return value[:_LABEL]


def _clip(value: str | None) -> str | None:
    return None if value is None else value[:_LABEL]
