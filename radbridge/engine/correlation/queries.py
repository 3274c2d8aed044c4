"""Read-only views of the reconciliation queue and of a study's links."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from radbridge.engine.models import ReconciliationItem, StudyOrderLink
from radbridge.engine.queries import iso


def list_items(session: Session, *, state: str | None = "open", limit: int = 50,
               before_id: int | None = None) -> list[dict[str, Any]]:
    """Reconciliation items, newest first (keyset pages by id)."""
    statement = select(ReconciliationItem).order_by(ReconciliationItem.id.desc())
    if state is not None:
        statement = statement.where(ReconciliationItem.state == state)
    if before_id is not None:
        statement = statement.where(ReconciliationItem.id < before_id)
    items = session.execute(statement.limit(max(1, min(limit, 1000)))).scalars().all()
    return [item_view(item) for item in items]


def item_view(item: ReconciliationItem) -> dict[str, Any]:
    return {"id": item.id, "study_uid": item.study_uid, "kind": item.kind,
            "reason": item.reason, "candidates": item.candidates, "state": item.state,
            "created_at": iso(item.created_at), "updated_at": iso(item.updated_at),
            "resolved_by": item.resolved_by, "note": item.note}


def study_links(session: Session, study_uid: str) -> list[dict[str, Any]]:
    links = session.execute(select(StudyOrderLink).where(StudyOrderLink.study_uid == study_uid)
                            .order_by(StudyOrderLink.id)).scalars().all()
    return [{"order_id": link.order_id, "rule": link.rule, "confidence": link.confidence,
             "reason": link.reason, "decided_by": link.decided_by,
             "created_at": iso(link.created_at)} for link in links]
