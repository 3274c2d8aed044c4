"""What routing and preprocessing need of a ready study, read from the DICOM index and
the registry: its series as routing sees them, each series' current instances, and the
procedure codes and priority of the order(s) it is linked to."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from radbridge.engine.models import DicomInstance, DicomSeries, Order, StudyOrderLink
from radbridge.inference.routing import SeriesFacts

PRIORITY_RANK = {"S": 0, "A": 1, "T": 1}
"""HL7 order priority (tables 0027/0485) -> rank, lower first; anything else is routine."""
ROUTINE = 2


@dataclass(frozen=True)
class OrderContext:
    procedure_codes: tuple[str, ...]
    rank: int
    """0 for a STAT order, 1 for ASAP/timing critical, 2 otherwise (or no order)."""


def series_facts(session: Session, study_uid: str) -> list[SeriesFacts]:
    """Every series of the study with current instances, as routing sees it."""
    rows = session.execute(
        select(DicomSeries.series_uid, DicomSeries.modality, DicomSeries.body_part,
               DicomSeries.series_description, DicomInstance.slice_thickness,
               DicomInstance.image_type, DicomInstance.attributes)
        .join(DicomInstance, DicomInstance.series_id == DicomSeries.id)
        .where(DicomInstance.study_uid == study_uid, DicomInstance.current.is_(True))
        .order_by(DicomSeries.id, DicomInstance.id)).all()
    grouped: dict[str, list[Row[Any]]] = {}
    for row in rows:
        grouped.setdefault(row.series_uid, []).append(row)
    facts = []
    for uid, members in grouped.items():
        first = members[0]
        thicknesses = [m.slice_thickness for m in members if m.slice_thickness is not None]
        facts.append(SeriesFacts(
            series_uid=uid, modality=first.modality, instances=len(members),
            body_part=first.body_part, description=first.series_description,
            slice_thickness=statistics.median(thicknesses) if thicknesses else None,
            contrast=any((m.attributes or {}).get("ContrastBolusAgent") for m in members),
            image_type=tuple(v for v in (first.image_type or "").split("\\") if v)))
    return facts


def series_blobs(session: Session, series_uid: str) -> list[str]:
    """The blob hashes of the series' current instances."""
    return list(session.execute(
        select(DicomInstance.blob_sha256)
        .join(DicomSeries, DicomInstance.series_id == DicomSeries.id)
        .where(DicomSeries.series_uid == series_uid, DicomInstance.current.is_(True))
        .order_by(DicomInstance.id)).scalars())


def order_context(session: Session, study_uid: str) -> OrderContext:
    rows = session.execute(
        select(Order.procedure_code, Order.priority)
        .join(StudyOrderLink, StudyOrderLink.order_id == Order.id)
        .where(StudyOrderLink.study_uid == study_uid)).all()
    codes = tuple(sorted({r.procedure_code for r in rows if r.procedure_code}))
    rank = min((PRIORITY_RANK.get((r.priority or "").upper()[:1], ROUTINE) for r in rows),
               default=ROUTINE)
    return OrderContext(codes, rank)
