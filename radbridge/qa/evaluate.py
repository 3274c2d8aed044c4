"""Evaluate model cards on a held-out set, the way the engine would run them.

A held-out set is a folder of DICOM studies in any layout (files are grouped by the
StudyInstanceUID in their headers) and a labels CSV with one row per study and finding:
`study_uid` (or `accession`, matched to AccessionNumber), `finding` (the code of a card's
finding), `label` (1/0, positive/negative, true/false); any other column is a stratum
(site, reader, ...) reported verbatim, so identifying columns are refused.

Every card with a labelled finding runs on every labelled study it routes to, through
the steps `radbridge infer` takes (inference.offline: routing, preprocessing, the card's
backend or a Triton server, findings), its backend opened once for the whole set. Per
model version and finding the result holds each study's score, the AI call at the card's
threshold and the label with the study's equipment and demographics (as strata, never
identifiers: study UIDs are the only ones), the AUC with its interval, agreement at the
threshold, and both again per stratum, small groups flagged.

The held-out set is read by `qa.held_out` (its errors are re-exported here), the
equipment and demographics of each study by `qa.acquisition`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from radbridge.inference.backends import (
    Backend,
    BackendError,
    BackendUnavailable,
    TritonTarget,
    open_backend,
)
from radbridge.inference.cards import ModelCard, OnnxBackend, TritonBackend
from radbridge.inference.findings import Finding, findings
from radbridge.inference.preprocess import PreprocessError, prepare
from radbridge.inference.routing import route
from radbridge.qa.acquisition import StudyFacts
from radbridge.qa.held_out import (
    HEADER_STRATA,
    EvaluationError,
    HeldOutError,
    HeldOutSet,
    HeldOutStudy,
    Label,
    load_held_out,
)
from radbridge.qa.metrics import Agreement, Counts, agreement, auc_interval, roc_points
from radbridge.qa.strata import UNKNOWN

# ---- the result -------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyRecord:
    """One study and finding: the model's score and call against the label."""

    study_uid: str
    score: float
    ai_positive: bool
    label: bool
    facts: StudyFacts
    extra: tuple[tuple[str, str], ...] = ()

    def strata(self) -> dict[str, str]:
        return {**self.facts.strata(), **dict(self.extra)}

    def as_json(self) -> dict[str, Any]:
        return {"study_uid": self.study_uid, "score": self.score,
                "ai_positive": self.ai_positive, "label": self.label,
                **self.facts.as_json(), "strata": dict(self.extra)}


@dataclass(frozen=True)
class AucEstimate:
    value: float
    low: float
    high: float

    def as_json(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class GroupResult:
    """One stratum value (a scanner model, a sex, a site): metrics over its studies."""

    value: str
    agreement: Agreement
    auc: AucEstimate | None
    """None where the group lacks positives or negatives."""

    @property
    def studies(self) -> int:
        return self.agreement.counts.total

    @property
    def small(self) -> bool:
        return self.agreement.small

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "studies": self.studies, "small": self.small,
                "auc": None if self.auc is None else self.auc.as_json(),
                "metrics": self.agreement.as_json()}


@dataclass(frozen=True)
class Breakdown:
    stratum: str
    groups: tuple[GroupResult, ...]


@dataclass(frozen=True)
class FindingResult:
    """One finding of one model version on the held-out set."""

    code: str
    system: str
    display: str
    threshold: float
    records: tuple[StudyRecord, ...]
    agreement: Agreement
    """At the card's threshold: the AI call against the label."""
    auc: AucEstimate | None
    roc: tuple[tuple[float, float, float], ...]
    """(threshold, false positive rate, true positive rate), for the ROC plot; the first
    point's threshold is infinity (nothing called positive), null in JSON."""
    breakdowns: tuple[Breakdown, ...]

    def breakdown(self, stratum: str) -> Breakdown | None:
        return next((b for b in self.breakdowns if b.stratum == stratum), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code, "system": self.system, "display": self.display,
            "threshold": self.threshold, "studies": len(self.records),
            "auc": None if self.auc is None else self.auc.as_json(),
            "metrics": self.agreement.as_json(),
            "roc": [[None if math.isinf(t) else t, fpr, tpr] for t, fpr, tpr in self.roc],
            "breakdowns": {b.stratum: [g.as_json() for g in b.groups]
                           for b in self.breakdowns},
            "records": [r.as_json() for r in self.records]}


@dataclass(frozen=True)
class SkippedStudy:
    """A labelled study the model did not run on, and why (routing, preprocessing)."""

    study_uid: str
    reason: str


@dataclass(frozen=True)
class ModelResult:
    name: str
    version: str
    card_sha256: str
    device_identifier: str
    intended_use: str
    demonstration: bool
    use_case: str
    backend: str
    findings: tuple[FindingResult, ...]
    skipped: tuple[SkippedStudy, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "card_sha256": self.card_sha256,
            "device_identifier": self.device_identifier, "intended_use": self.intended_use,
            "demonstration": self.demonstration, "use_case": self.use_case,
            "backend": self.backend, "findings": [f.as_json() for f in self.findings],
            "skipped": [asdict(s) for s in self.skipped]}


@dataclass(frozen=True)
class Evaluation:
    """Every model version run on one held-out set; `as_json` is evaluation.json."""

    generated_at: datetime
    folder: str
    labels_file: str
    studies: int
    """DICOM studies in the folder, labelled or not."""
    labelled_studies: int
    confidence: float
    min_group: int
    models: tuple[ModelResult, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(timespec="seconds"),
            "held_out": {"folder": self.folder, "labels": self.labels_file,
                         "studies": self.studies, "labelled_studies": self.labelled_studies},
            "confidence": self.confidence, "min_group": self.min_group,
            "models": [m.as_json() for m in self.models]}


# ---- running ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendChoice:
    """Where the cards run, with `radbridge infer`'s options: "card" is each card's own
    backend (ONNX Runtime in-process for the shipped ones), "onnxruntime" insists on it,
    "triton" runs each card's model on a Triton server under the card's name."""

    kind: Literal["card", "onnxruntime", "triton"] = "card"
    url: str | None = None
    protocol: Literal["http", "grpc"] | None = None
    timeout: float = 30.0

    def target(self, card: ModelCard) -> TritonTarget | None:
        if self.kind == "onnxruntime" and not isinstance(card.backend, OnnxBackend):
            raise EvaluationError(f"{card.key} has no ONNX file (its backend is "
                                  f"{card.backend.kind})")
        if self.kind != "triton":
            return None
        section = card.backend if isinstance(card.backend, TritonBackend) else None
        return TritonTarget(url=self.url or (section.url if section else "127.0.0.1:8000"),
                            protocol=self.protocol or (section.protocol if section
                                                       else "http"),
                            timeout=self.timeout)

    def label(self, card: ModelCard) -> str:
        target = self.target(card)
        if target is not None:
            return f"triton-{target.protocol}"
        backend = card.backend
        return "onnxruntime" if isinstance(backend, OnnxBackend) else f"triton-{backend.protocol}"


def evaluate(held_out: HeldOutSet, cards: Sequence[tuple[Path, ModelCard]], *,
             backend: BackendChoice | None = None, min_group: int = 30,
             confidence: float = 0.95, generated_at: datetime | None = None) -> Evaluation:
    """Run every card with a labelled finding on the studies it routes to; see the module
    docstring. `cards` are (card file, card) as `load_cards` gives them."""
    choice = backend or BackendChoice()
    models = []
    for path, card in cards:
        codes = {f.finding.code for f in card.findings}
        labels = [label for label in held_out.labels if label.finding in codes]
        if labels:
            models.append(_evaluate_card(card, path.parent, held_out, labels, choice,
                                         min_group, confidence))
    if not models:
        raise EvaluationError("no model card has a finding that the labels name")
    return Evaluation(
        generated_at or datetime.now(UTC), str(held_out.folder), str(held_out.labels_file),
        len(held_out.studies), len({label.study_uid for label in held_out.labels}),
        confidence, min_group, tuple(models))


def _evaluate_card(card: ModelCard, folder: Path, held_out: HeldOutSet,
                   labels: Sequence[Label], choice: BackendChoice, min_group: int,
                   confidence: float) -> ModelResult:
    try:
        runner = open_backend(card, folder, target=choice.target(card))
    except BackendError as exc:
        raise EvaluationError(str(exc)) from exc
    outcomes: dict[str, tuple[StudyFacts, list[Finding]] | str] = {}
    try:
        for uid in sorted({label.study_uid for label in labels}):
            outcomes[uid] = _infer(card, runner, held_out.studies[uid])
    finally:
        runner.close()
    results = []
    for meaning in card.findings:
        records = tuple(_record(label, outcome) for label in labels
                        if label.finding == meaning.finding.code
                        and not isinstance(outcome := outcomes[label.study_uid], str))
        if records:
            results.append(_finding_result(meaning.finding.code, meaning.finding.system,
                                           meaning.finding.display, meaning.threshold,
                                           records, held_out.extra_columns, min_group,
                                           confidence))
    skipped = tuple(SkippedStudy(uid, outcome) for uid, outcome in outcomes.items()
                    if isinstance(outcome, str))
    return ModelResult(card.name, card.version, card.digest(), card.device_identifier,
                       card.intended_use, card.demonstration, card.use_case,
                       choice.label(card), tuple(results), skipped)


def _infer(card: ModelCard, runner: Backend, study: HeldOutStudy
           ) -> tuple[StudyFacts, list[Finding]] | str:
    """The study's findings and the facts of the series they came from, or why not."""
    routing = route(study.files.facts, [card])
    if not routing.assignments:
        return routing.skipped[0].reason if routing.skipped else "no series"
    series_uid = routing.assignments[0].series_uid
    try:
        datasets = [pydicom.dcmread(p) for p in study.files.series[series_uid]]
        prepared = prepare(card.preprocessing, datasets)
        outputs = runner.run({next(iter(card.inputs)): prepared.tensor[np.newaxis]})
        found = findings(card, outputs, grid=prepared.grid)
    except BackendUnavailable as exc:
        raise EvaluationError(str(exc)) from exc
    except (PreprocessError, BackendError) as exc:
        return str(exc)
    except (InvalidDicomError, OSError, ValueError) as exc:  # the path may name a patient
        return f"an instance cannot be read ({type(exc).__name__})"
    return StudyFacts.from_header(study.headers[series_uid]), found


def _record(label: Label, outcome: tuple[StudyFacts, list[Finding]]) -> StudyRecord:
    facts, found = outcome
    finding = next(f for f in found if f.code.code == label.finding)
    return StudyRecord(label.study_uid, finding.probability, finding.positive,
                       label.positive, facts, label.extra)


def _finding_result(code: str, system: str, display: str, threshold: float,
                    records: tuple[StudyRecord, ...], extra_columns: Sequence[str],
                    min_group: int, confidence: float) -> FindingResult:
    whole = _group("all", records, min_group, confidence)
    scores = [r.score for r in records]
    truth = [r.label for r in records]
    roc = tuple(roc_points(scores, truth)) if whole.auc is not None else ()
    breakdowns = tuple(
        Breakdown(stratum, tuple(_group(value, members, min_group, confidence)
                                 for value, members in _grouped(records, stratum)))
        for stratum in (*HEADER_STRATA, *extra_columns))
    return FindingResult(code, system, display, threshold, records, whole.agreement,
                         whole.auc, roc, breakdowns)


def _grouped(records: Iterable[StudyRecord], stratum: str
             ) -> list[tuple[str, tuple[StudyRecord, ...]]]:
    groups: dict[str, list[StudyRecord]] = {}
    for record in records:
        groups.setdefault(record.strata().get(stratum, UNKNOWN), []).append(record)
    return [(value, tuple(members)) for value, members in sorted(groups.items())]


def _group(value: str, records: Sequence[StudyRecord], min_group: int, confidence: float
           ) -> GroupResult:
    counts = Counts.from_pairs((r.ai_positive, r.label) for r in records)
    truth = [r.label for r in records]
    estimate = None
    if any(truth) and not all(truth):
        estimate = AucEstimate(*auc_interval([r.score for r in records], truth,
                                             confidence=confidence))
    return GroupResult(value, agreement(counts, min_group=min_group, confidence=confidence),
                       estimate)


__all__ = ["BackendChoice", "Evaluation", "EvaluationError", "HeldOutError", "evaluate",
           "load_held_out"]
