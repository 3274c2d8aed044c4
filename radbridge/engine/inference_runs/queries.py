"""Read-only views of inference runs for the API and the CLI: identifiers, UIDs,
findings and provenance; no names or birth dates (the runs never hold them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from radbridge.engine.models import INFERENCE_RUNS
from radbridge.engine.study_queries import plain

_SUMMARY = ("id", "study_uid", "study_version", "model_name", "model_version", "status",
            "reason", "series_uid", "instances", "positive", "emergent", "backend",
            "demonstration", "preprocess_ms", "inference_ms", "attempts", "created_at",
            "updated_at")
_DETAIL = (*_SUMMARY, "card_sha256", "device_identifier", "findings", "heatmap_sha256", "grid")


@dataclass(frozen=True)
class RunFilter:
    study_uid: str | None = None
    model: str | None = None
    status: str | None = None
    positive: bool | None = None
    limit: int = 50
    offset: int = 0


def list_runs(session: Session, where: RunFilter) -> list[dict[str, Any]]:
    """Runs, the newest first."""
    table = INFERENCE_RUNS
    statement = select(*(table.c[name] for name in _SUMMARY))
    if where.study_uid is not None:
        statement = statement.where(table.c.study_uid == where.study_uid)
    if where.model is not None:
        name, _, version = where.model.partition(":")
        statement = statement.where(table.c.model_name == name)
        if version:
            statement = statement.where(table.c.model_version == version)
    if where.status is not None:
        statement = statement.where(table.c.status == where.status)
    if where.positive is not None:
        statement = statement.where(table.c.positive.is_(where.positive))
    statement = (statement.order_by(table.c.id.desc())
                 .limit(max(1, min(where.limit, 1000))).offset(max(0, where.offset)))
    return [plain(row._mapping) for row in session.execute(statement)]


def run_detail(session: Session, run_id: int) -> dict[str, Any] | None:
    row = session.execute(select(*(INFERENCE_RUNS.c[name] for name in _DETAIL))
                          .where(INFERENCE_RUNS.c.id == run_id)).first()
    return None if row is None else plain(row._mapping)


def study_runs(session: Session, study_uid: str) -> list[dict[str, Any]]:
    """Every run on the study, all versions, with findings."""
    return [plain(row._mapping) for row in session.execute(
        select(*(INFERENCE_RUNS.c[name] for name in _DETAIL))
        .where(INFERENCE_RUNS.c.study_uid == study_uid)
        .order_by(INFERENCE_RUNS.c.study_version, INFERENCE_RUNS.c.id))]
