"""One ready study through the models that apply to it.

Routing picks, per model card, the series it takes (or records why none fits: skipped,
not an error). Each assignment is one run: the series' current instances are read from
the blob store, preprocessed into the card's tensor, and only that tensor goes to the
backend (never names, MRNs or any header: that is the de-identification of what leaves
for inference, whether the backend is in-process or a Triton server). The findings are
recorded with the model's provenance and timing, and an audit event, in one transaction.

A run is keyed by study, study version, model name and version, so a delivery tried again
never runs a finished model twice. Failures are classified: the backend unavailable
(Triton down, slow, its breaker open) is failed-retryable, tried again with the delivery;
a series or a model that cannot work (missing slices, mixed orientations, over the memory
budget, inputs that do not match the card, NaN outputs) is failed-final with the reason.
Every call here blocks: the destination runs it on a worker thread.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radbridge.engine import audit, metrics
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.engine.inference_runs.facts import (
    OrderContext,
    order_context,
    series_blobs,
    series_facts,
)
from radbridge.engine.models import DicomStudy, InferenceRun, utcnow
from radbridge.engine.qa.observations import RunInput, record_observations
from radbridge.errors import BlobNotFound
from radbridge.inference.backends import (
    ROUTINE,
    STAT,
    Backend,
    BackendError,
    BackendUnavailable,
)
from radbridge.inference.cards import ModelCard
from radbridge.inference.findings import Finding, findings
from radbridge.inference.preprocess import PreprocessError, prepare
from radbridge.inference.routing import Assignment, Routing, route

log = logging.getLogger(__name__)

BackendFactory = Callable[[ModelCard, Path], Backend]
"""Opens the backend for a card (its folder holds the card's files)."""


class RunStatus(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    RETRYABLE = "failed-retryable"
    FINAL = "failed-final"


SETTLED = (RunStatus.DONE, RunStatus.SKIPPED, RunStatus.FINAL)


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    model: str
    status: RunStatus
    reason: str | None
    positive: bool
    emergent: bool


@dataclass(frozen=True)
class Plan:
    study_uid: str
    version: int
    routing: Routing
    order: OrderContext
    patient_id: str | None
    accession: str | None


@dataclass(frozen=True)
class StudyOutcome:
    study_uid: str
    version: int
    runs: tuple[RunOutcome, ...]

    @property
    def retryable(self) -> tuple[RunOutcome, ...]:
        return tuple(r for r in self.runs if r.status == RunStatus.RETRYABLE)


class InferenceService:
    """Runs the cards' models on ready studies and records every run."""

    def __init__(self, database: Database, blobs: BlobStore,
                 cards: Sequence[tuple[Path, ModelCard]], backend_for: BackendFactory, *,
                 backend_label: str, budget_bytes: int, chain: str, actor: str,
                 qa_strata: Sequence[str] = ()) -> None:
        self._database = database
        self._blobs = blobs
        self._cards = list(cards)
        self._folders = {card.key: path.parent for path, card in cards}
        self._backend_for = backend_for
        self._backends: dict[str, Backend] = {}
        self._label = backend_label
        self._budget = budget_bytes
        self._chain = chain
        self._actor = actor
        self._qa_strata = tuple(qa_strata)

    def plan(self, study_uid: str, version: int) -> Plan:
        """Which model runs on which series of the study, and how urgent it is."""
        with self._database.read() as session:
            study = session.execute(select(DicomStudy.patient_id, DicomStudy.accession)
                                    .where(DicomStudy.study_uid == study_uid)).one_or_none()
            facts = series_facts(session, study_uid)
            order = order_context(session, study_uid)
        routing = route(facts, [card for _, card in self._cards], order.procedure_codes)
        return Plan(study_uid, version, routing, order,
                    study.patient_id if study else None, study.accession if study else None)

    def record_skipped(self, plan: Plan) -> list[RunOutcome]:
        outcomes = []
        for skipped in plan.routing.skipped:
            outcomes.append(self._record(plan, skipped.card, None, 0, RunStatus.SKIPPED,
                                         skipped.reason, [], None, None, None))
        return outcomes

    def run(self, plan: Plan, assignment: Assignment) -> RunOutcome:
        """Run one model on its series, unless an earlier attempt settled it."""
        card = assignment.card
        earlier = self._existing(plan, card)
        if earlier is not None and earlier.status in SETTLED:
            return earlier
        began = time.perf_counter()
        try:
            datasets = self._read_series(assignment.series_uid)
            prepared = prepare(card.preprocessing, datasets, budget_bytes=self._budget)
        except PreprocessError as exc:
            return self._record(plan, card, assignment.series_uid, 0, RunStatus.FINAL,
                                f"preprocessing: {exc}", [], None, None, None)
        prepared_at = time.perf_counter()
        preprocess_ms = (prepared_at - began) * 1000
        try:
            backend = self._backend(card)
            input_name = next(iter(card.inputs))
            outputs = backend.run({input_name: prepared.tensor[np.newaxis]},
                                  priority=STAT if plan.order.rank == 0 else ROUTINE)
            found = findings(card, outputs, grid=prepared.grid)
        except BackendUnavailable as exc:
            return self._record(plan, card, assignment.series_uid, len(datasets),
                                RunStatus.RETRYABLE, str(exc), [], None, preprocess_ms, None)
        except BackendError as exc:
            return self._record(plan, card, assignment.series_uid, len(datasets),
                                RunStatus.FINAL, str(exc), [], None, preprocess_ms, None)
        inference_ms = (time.perf_counter() - prepared_at) * 1000
        metrics.observe_inference(card.name, card.version, inference_ms / 1000, found)
        heatmap = self._keep_heatmap(found)
        return self._record(plan, card, assignment.series_uid, len(datasets), RunStatus.DONE,
                            None, found, heatmap, preprocess_ms, inference_ms,
                            prepared.grid.to_json() if heatmap else None,
                            qa=RunInput.of(datasets, prepared.tensor, self._qa_strata))

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()

    def _backend(self, card: ModelCard) -> Backend:
        backend = self._backends.get(card.key)
        if backend is None:
            backend = self._backend_for(card, self._folders[card.key])
            self._backends[card.key] = backend
        return backend

    def _read_series(self, series_uid: str) -> list[pydicom.Dataset]:
        with self._database.read() as session:
            hashes = series_blobs(session, series_uid)
        datasets: list[pydicom.Dataset] = []
        for sha256 in hashes:
            try:
                datasets.append(pydicom.dcmread(self._blobs.path(sha256)))
            except (InvalidDicomError, OSError, BlobNotFound, ValueError) as exc:
                raise PreprocessError(f"instance blob {sha256[:12]} is unreadable: "
                                      f"{type(exc).__name__}") from exc
        return datasets

    def _keep_heatmap(self, found: Sequence[Finding]) -> str | None:
        """The first positive finding's heat map, as .npy in the blob store (overlays)."""
        for finding in found:
            if finding.positive and finding.heatmap is not None:
                buffer = io.BytesIO()
                np.save(buffer, finding.heatmap.astype(np.float16), allow_pickle=False)
                return self._blobs.put_bytes(buffer.getvalue()).sha256
        return None

    def _existing(self, plan: Plan, card: ModelCard) -> RunOutcome | None:
        with self._database.read() as session:
            row = _row(session, plan, card)
            return None if row is None else _outcome(row)

    def _record(self, plan: Plan, card: ModelCard, series_uid: str | None, instances: int,
                status: RunStatus, reason: str | None, found: Sequence[Finding],
                heatmap: str | None, preprocess_ms: float | None,
                inference_ms: float | None, grid: dict[str, Any] | None = None,
                qa: RunInput | None = None) -> RunOutcome:
        positive = any(f.positive for f in found)
        emergent = any(f.emergent for f in found)
        values = {
            "card_sha256": card.digest(), "device_identifier": card.device_identifier,
            "demonstration": card.demonstration, "intended_use": card.intended_use,
            "use_case": card.use_case, "backend": self._label,
            "status": status.value, "reason": reason, "series_uid": series_uid,
            "instances": instances, "positive": positive, "emergent": emergent,
            "findings": [f.as_record() for f in found], "heatmap_sha256": heatmap,
            "grid": grid,
            "preprocess_ms": _round(preprocess_ms), "inference_ms": _round(inference_ms),
            "updated_at": utcnow(),
        }
        try:
            with self._database.write() as session:
                row = _row(session, plan, card)
                if row is None:
                    row = InferenceRun(study_uid=plan.study_uid, study_version=plan.version,
                                       model_name=card.name, model_version=card.version,
                                       attempts=1, **values)
                    session.add(row)
                elif row.status in SETTLED:
                    return _outcome(row)  # settled meanwhile (another node's attempt)
                else:
                    for key, value in values.items():
                        setattr(row, key, value)
                    row.attempts += 1
                session.flush()
                if qa is not None:  # QA rows of a done run commit with it (engine.qa)
                    record_observations(session, row, card, qa)
                audit.append(session, [self._audit(plan, card, row)], self._chain)
                outcome = _outcome(row)
        except IntegrityError:
            with self._database.read() as session:
                existing = _row(session, plan, card)
                assert existing is not None
                return _outcome(existing)
        log.info("inference %s on study %s v%d: %s", card.key, plan.study_uid, plan.version,
                 status.value)
        return outcome

    def _audit(self, plan: Plan, card: ModelCard, row: InferenceRun) -> audit.AuditRecord:
        failed = row.status in (RunStatus.RETRYABLE, RunStatus.FINAL)
        return audit.AuditRecord(
            action="inference.skipped" if row.status == RunStatus.SKIPPED else "inference.run",
            outcome="failure" if failed else "success", actor=self._actor,
            patient_id=plan.patient_id, accession=plan.accession, study_uid=plan.study_uid,
            detail={"run": row.id, "model": card.name, "version": card.version,
                    "card_sha256": row.card_sha256, "backend": row.backend,
                    "study_version": plan.version, "series_uid": row.series_uid,
                    "status": row.status, "reason": row.reason, "positive": row.positive,
                    "emergent": row.emergent, "attempt": row.attempts,
                    "preprocess_ms": row.preprocess_ms, "inference_ms": row.inference_ms})


def _row(session: Session, plan: Plan, card: ModelCard) -> InferenceRun | None:
    return session.execute(select(InferenceRun).where(
        InferenceRun.study_uid == plan.study_uid, InferenceRun.study_version == plan.version,
        InferenceRun.model_name == card.name, InferenceRun.model_version == card.version)
    ).scalar_one_or_none()


def _outcome(row: InferenceRun) -> RunOutcome:
    return RunOutcome(row.id, f"{row.model_name}:{row.model_version}", RunStatus(row.status),
                      row.reason, row.positive, row.emergent)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
