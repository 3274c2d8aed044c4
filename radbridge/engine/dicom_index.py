"""The DICOM index: studies, series and versioned instances, MPPS steps, commitments.

`record` runs inside the receiver's transaction, so an instance is indexed exactly when
its message is stored: a success status is never sent for an instance the index does
not know, and a duplicate (same SOP Instance UID, same bytes) is deduplicated before it
gets here. New bytes under a known SOP Instance UID become the next version; the old
version stays, no longer current, and an audit event says so. A new instance in a study
that assembly had declared ready puts it back to collecting (a late arrival), so the
study is announced again with the next version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from radbridge.engine.audit import AuditRecord
from radbridge.engine.blobstore import BlobRef
from radbridge.engine.db import Database, insert_many
from radbridge.engine.fast_insert import insert_rows
from radbridge.engine.models import (
    DICOM_COMMITMENTS,
    DICOM_INSTANCES,
    DICOM_MPPS,
    DICOM_SERIES,
    DICOM_STUDIES,
)
from radbridge.mappings.dicom.records import CommitmentRequest, InstanceRecord, MppsRecord

COLLECTING = "collecting"
READY = "ready"

_STUDY_FIELDS = ("patient_id", "issuer_of_patient_id", "patient_name", "patient_birth_date",
                 "patient_sex", "accession", "accession_issuer", "study_date", "study_time",
                 "study_description", "referring_physician")
_SERIES_FIELDS = ("modality", "series_number", "series_description", "body_part",
                  "manufacturer", "manufacturer_model", "station_name", "institution_name")
_INSTANCE_FIELDS = ("sop_class_uid", "transfer_syntax_uid", "instance_number",
                    "acquisition_datetime", "content_datetime", "rows", "columns",
                    "number_of_frames", "samples_per_pixel", "bits_allocated",
                    "photometric_interpretation", "pixel_spacing", "slice_thickness",
                    "image_position", "image_orientation", "image_type")
_LIMITS = {"patient_name": 255, "study_description": 255, "referring_physician": 255,
           "series_description": 255, "image_orientation": 255, "image_type": 255,
           "image_position": 128, "photometric_interpretation": 16, "modality": 16,
           "patient_sex": 16, "patient_birth_date": 16, "study_date": 16, "study_time": 32,
           "acquisition_datetime": 32, "content_datetime": 32}


# Built once: on the C-STORE path building a statement costs more than running it.
_FIND_STUDIES = (
    select(DICOM_STUDIES.c.id, DICOM_STUDIES.c.study_uid, DICOM_STUDIES.c.state,
           DICOM_STUDIES.c.modalities)
    .where(DICOM_STUDIES.c.study_uid.in_(bindparam("uids", expanding=True))))
_FIND_SERIES = (
    select(DICOM_SERIES.c.series_uid, DICOM_SERIES.c.id)
    .where(DICOM_SERIES.c.series_uid.in_(bindparam("uids", expanding=True))))
_FIND_CURRENT = (
    select(DICOM_INSTANCES.c.sop_instance_uid, DICOM_INSTANCES.c.version,
           DICOM_INSTANCES.c.blob_sha256)
    .where(DICOM_INSTANCES.c.sop_instance_uid.in_(bindparam("uids", expanding=True)),
           DICOM_INSTANCES.c.current.is_(True)))
_SUPERSEDE = (
    update(DICOM_INSTANCES)
    .where(DICOM_INSTANCES.c.sop_instance_uid.in_(bindparam("uids", expanding=True)),
           DICOM_INSTANCES.c.current.is_(True))
    .values(current=False))
_BUMP_SERIES = (
    update(DICOM_SERIES).where(DICOM_SERIES.c.series_uid == bindparam("b_uid"))
    .values(instance_count=DICOM_SERIES.c.instance_count + bindparam("b_count"),
            last_received_at=bindparam("b_now")))
_BUMP_STUDY = (
    update(DICOM_STUDIES).where(DICOM_STUDIES.c.id == bindparam("b_id"))
    .values(state=COLLECTING,
            instance_count=DICOM_STUDIES.c.instance_count + bindparam("b_instances"),
            series_count=DICOM_STUDIES.c.series_count + bindparam("b_series"),
            modalities=bindparam("b_modalities"), last_received_at=bindparam("b_now")))


@dataclass(frozen=True)
class IndexEntry:
    """One stored message's contribution to the index."""

    message_id: int
    channel: str
    record: InstanceRecord | MppsRecord | CommitmentRequest
    blob: BlobRef | None


def record(connection: Connection, entries: Sequence[IndexEntry], now: datetime
           ) -> list[AuditRecord]:
    """Index freshly stored messages; returns audit events to append in the same commit."""
    instances = [e for e in entries if isinstance(e.record, InstanceRecord)]
    events = _record_instances(connection, instances, now) if instances else []
    for entry in entries:
        if isinstance(entry.record, MppsRecord):
            _record_mpps(connection, entry.record, now)
        elif isinstance(entry.record, CommitmentRequest):
            _record_commitment(connection, entry.record, now)
    return events


def _clip(field: str, value: Any) -> Any:
    limit = _LIMITS.get(field, 64)
    return value[:limit] if isinstance(value, str) else value


def _record_instances(connection: Connection, entries: Sequence[IndexEntry], now: datetime
                      ) -> list[AuditRecord]:
    pairs = [(e, e.record) for e in entries if isinstance(e.record, InstanceRecord)]
    known = _latest_versions(connection, {item.sop_instance_uid for _, item in pairs})
    # The same bytes again through another channel (or another DICOM source) are no news.
    pairs = [(e, item) for e, item in pairs if e.blob is not None
             and known.get(item.sop_instance_uid, (0, ""))[1] != e.blob.sha256]
    if not pairs:
        return []
    entries = [e for e, _ in pairs]
    records = [item for _, item in pairs]
    studies = _upsert_studies(connection, entries, now)
    series_ids, new_series = _upsert_series(connection, records, studies.ids, now)
    versions = {uid: version for uid, (version, _) in known.items()}
    superseded = sorted({item.sop_instance_uid for item in records} & set(versions))
    if superseded:
        connection.execute(_SUPERSEDE, {"uids": superseded})
    rows: list[dict[str, Any]] = []
    events: list[AuditRecord] = []
    new_per_study: dict[str, int] = {}
    last_of: dict[str, int] = {}
    for entry in entries:
        item = entry.record
        assert isinstance(item, InstanceRecord) and entry.blob is not None
        version = versions.get(item.sop_instance_uid, 0) + 1
        versions[item.sop_instance_uid] = version
        if version == 1:
            new_per_study[item.study_uid] = new_per_study.get(item.study_uid, 0) + 1
        else:
            events.append(AuditRecord(
                action="dicom.instance-versioned", actor=f"channel:{entry.channel}",
                channel=entry.channel, message_id=entry.message_id,
                patient_id=item.patient_id, accession=item.accession,
                study_uid=item.study_uid,
                detail={"sop_instance_uid": item.sop_instance_uid, "version": version,
                        "sha256": entry.blob.sha256}))
        if item.sop_instance_uid in last_of:  # two versions in one batch: the last is current
            rows[last_of[item.sop_instance_uid]]["current"] = False
        last_of[item.sop_instance_uid] = len(rows)
        rows.append({
            "series_id": series_ids[item.series_uid], "study_uid": item.study_uid,
            "sop_instance_uid": item.sop_instance_uid, "version": version, "current": True,
            "message_id": entry.message_id, "blob_sha256": entry.blob.sha256,
            "size": entry.blob.size, "attributes": _attributes(item), "received_at": now,
            **{f: _clip(f, getattr(item, f)) for f in _INSTANCE_FIELDS},
        })
    insert_rows(connection, DICOM_INSTANCES, rows)
    _count(connection, studies, new_per_study, new_series, records, now)
    for study_uid in studies.late:
        events.append(AuditRecord(
            action="dicom.study-reopened", actor="dicom-index", study_uid=study_uid,
            detail={"reason": "instance received after the study was declared ready"}))
    return events


@dataclass(frozen=True)
class _StudyRows:
    ids: dict[str, int]
    """Study UID -> row id."""
    late: list[str]
    """Studies declared ready before this batch: the batch reopens them."""
    modalities: dict[str, str]
    """The modality list of the studies that existed before this batch."""


def _attributes(item: InstanceRecord) -> dict[str, str]:
    """The instance's further attributes; its accession too, as a combined exam's
    instances may carry different ones while the study row keeps the first."""
    attributes = dict(item.extra)
    if item.accession:
        attributes["AccessionNumber"] = item.accession
        if item.accession_issuer:
            attributes["AccessionIssuer"] = item.accession_issuer
    return attributes


def _upsert_studies(connection: Connection, entries: Sequence[IndexEntry], now: datetime
                    ) -> _StudyRows:
    """The studies of this batch, creating the missing ones (with the values of their
    first instance: patient, accession, dates, description)."""
    latest: dict[str, tuple[IndexEntry, InstanceRecord]] = {}
    for entry in entries:
        assert isinstance(entry.record, InstanceRecord)
        latest[entry.record.study_uid] = (entry, entry.record)
    found = {uid: (sid, state, modalities) for sid, uid, state, modalities
             in connection.execute(_FIND_STUDIES, {"uids": list(latest)})}
    missing = [uid for uid in latest if uid not in found]
    created = insert_many(connection, DICOM_STUDIES, [{
        "study_uid": uid, "channel": latest[uid][0].channel, "modalities": "",
        "series_count": 0, "instance_count": 0, "first_received_at": now,
        "last_received_at": now, "state": COLLECTING, "ready_version": 0,
        **{f: _clip(f, getattr(latest[uid][1], f)) for f in _STUDY_FIELDS},
    } for uid in missing])
    ids = {uid: row[0] for uid, row in found.items()} | dict(zip(missing, created, strict=True))
    late = [uid for uid, (_, state, _) in found.items() if state == READY]
    known = {uid: row[2] for uid, row in found.items()}
    return _StudyRows(ids, late, known)


def _upsert_series(connection: Connection, records: Sequence[InstanceRecord],
                   study_ids: dict[str, int], now: datetime) -> tuple[dict[str, int], list[str]]:
    latest = {r.series_uid: r for r in records}
    found = as_dict(connection.execute(_FIND_SERIES, {"uids": list(latest)}))
    missing = [uid for uid in latest if uid not in found]
    created = insert_many(connection, DICOM_SERIES, [{
        "study_id": study_ids[latest[uid].study_uid], "series_uid": uid, "instance_count": 0,
        "first_received_at": now, "last_received_at": now,
        **{f: _clip(f, getattr(latest[uid], f)) for f in _SERIES_FIELDS},
    } for uid in missing])
    return found | dict(zip(missing, created, strict=True)), missing


def _latest_versions(connection: Connection, uids: set[str]) -> dict[str, tuple[int, str]]:
    """SOP Instance UID -> (its latest version, that version's blob hash)."""
    rows = connection.execute(_FIND_CURRENT, {"uids": sorted(uids)})
    return {uid: (version, sha) for uid, version, sha in rows}


def _count(connection: Connection, studies: _StudyRows, new_per_study: dict[str, int],
           new_series: list[str], records: Sequence[InstanceRecord], now: datetime) -> None:
    """Keep the counters and modality lists in step, and (re)open each study for
    assembly: one UPDATE per series and per study of the batch."""
    per_series: dict[str, int] = {}
    for item in records:
        per_series[item.series_uid] = per_series.get(item.series_uid, 0) + 1
    study_of_series = {item.series_uid: item.study_uid for item in records}
    new_series_per_study: dict[str, int] = {}
    for uid in new_series:
        study_uid = study_of_series[uid]
        new_series_per_study[study_uid] = new_series_per_study.get(study_uid, 0) + 1
    modalities: dict[str, set[str]] = {}
    for item in records:
        if item.modality:
            modalities.setdefault(item.study_uid, set()).add(item.modality)
    connection.execute(_BUMP_SERIES, [{"b_uid": uid, "b_count": count, "b_now": now}
                                      for uid, count in per_series.items()])
    bumps = []
    for study_uid, study_id in studies.ids.items():
        known = studies.modalities.get(study_uid, "")
        names = sorted(set(filter(None, known.split("\\"))) | modalities.get(study_uid, set()))
        bumps.append({"b_id": study_id, "b_instances": new_per_study.get(study_uid, 0),
                      "b_series": new_series_per_study.get(study_uid, 0),
                      "b_modalities": "\\".join(names)[:255], "b_now": now})
    connection.execute(_BUMP_STUDY, bumps)


def _record_mpps(connection: Connection, item: MppsRecord, now: datetime) -> None:
    row = connection.execute(
        select(DICOM_MPPS.c.id, DICOM_MPPS.c.performed, DICOM_MPPS.c.status)
        .where(DICOM_MPPS.c.mpps_uid == item.mpps_uid)).first()
    performed = {s.series_uid: list(s.sop_instance_uids) for s in item.performed_series}
    if row is None:
        insert_rows(connection, DICOM_MPPS, [{
            "mpps_uid": item.mpps_uid, "study_uid": item.study_uid, "accession": item.accession,
            "patient_id": item.patient_id, "modality": item.modality,
            "status": item.status or "IN PROGRESS", "performed": performed,
            "created_at": now, "updated_at": now}])
        return
    merged = {**(row.performed or {}), **performed}
    values: dict[str, Any] = {"performed": merged, "updated_at": now,
                              "status": item.status or row.status}
    for field in ("study_uid", "accession", "patient_id", "modality"):
        if getattr(item, field) is not None:
            values[field] = getattr(item, field)
    connection.execute(update(DICOM_MPPS).where(DICOM_MPPS.c.id == row.id).values(**values))


def _record_commitment(connection: Connection, item: CommitmentRequest, now: datetime) -> None:
    exists = connection.execute(select(DICOM_COMMITMENTS.c.id).where(
        DICOM_COMMITMENTS.c.transaction_uid == item.transaction_uid)).first()
    if exists is None:
        insert_rows(connection, DICOM_COMMITMENTS, [{
            "transaction_uid": item.transaction_uid, "requester_ae": item.requester_ae[:16],
            "sop_instance_uids": [uid for _, uid in item.references], "received_at": now,
            "settled": False}])


# --- queries ------------------------------------------------------------------------------


def stored_instances(database: Database, sop_instance_uids: Iterable[str]) -> set[str]:
    """Which of these SOP instances are stored (any version): Storage Commitment's answer."""
    wanted = sorted(set(sop_instance_uids))
    found: set[str] = set()
    with database.read() as session:
        for start in range(0, len(wanted), 500):
            found.update(session.execute(
                select(DICOM_INSTANCES.c.sop_instance_uid).distinct()
                .where(DICOM_INSTANCES.c.sop_instance_uid.in_(wanted[start:start + 500]))
            ).scalars())
    return found


def as_dict(rows: Iterable[Any]) -> dict[Any, Any]:
    """Two-column rows as a dict (a Result is not a mapping; dict() would take it for one)."""
    return {first: second for first, second in rows}
