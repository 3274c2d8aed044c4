"""Study assembly: decide when a study received instance by instance is complete.

A study is ready, in order of preference, when
1. its order(s) name a procedure whose series count the channel knows
   (`expected_series`), and that many series have arrived;
2. an MPPS COMPLETED for it references instances (or series) that have all arrived;
3. a Storage Commitment request covers its instances and they are all stored;
4. it has been quiet (no new instance) for its modality's quiet period; while an MPPS
   for it is still open, the quiet period waits for `mpps_timeout` instead.

Ready is announced as a message on the channel's `ready_channel` ("everything is a
message"), deduplicated by study and version, so two nodes, or a crash between the
announcement and the state change, never announce one version twice. An instance that
arrives after the announcement puts the study back to collecting (dicom_index); the next
announcement carries the next version and names the one it supersedes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, select, update

from radbridge.engine import audit
from radbridge.engine.config import ChannelConfig, StudyAssembly
from radbridge.engine.db import Database
from radbridge.engine.dicom_index import COLLECTING, READY, as_dict
from radbridge.engine.models import (
    DICOM_COMMITMENTS,
    DICOM_INSTANCES,
    DICOM_MPPS,
    DICOM_SERIES,
    DICOM_STUDIES,
    ORDERS,
    utcnow,
)
from radbridge.engine.receiver import Inbound, Receipt

log = logging.getLogger(__name__)

READY_CONTENT_TYPE = "application/vnd.radbridge.study-ready+json"
MPPS_FINAL = ("COMPLETED", "DISCONTINUED")


@dataclass(frozen=True)
class StudyState:
    """What assembly needs to know about one collecting study."""

    study_id: int
    study_uid: str
    channel: str
    modalities: tuple[str, ...]
    last_received_at: datetime
    ready_version: int
    series_uids: frozenset[str] = frozenset()
    sop_instance_uids: frozenset[str] = frozenset()
    series_count: int = 0
    expected_series: int | None = None
    """What the study's order(s) say the exam makes, when the channel knows the codes."""


@dataclass(frozen=True)
class MppsState:
    status: str
    performed: Mapping[str, Sequence[str]] = field(default_factory=dict)


def quiet_period(config: StudyAssembly, modalities: Sequence[str]) -> float:
    """The longest quiet period among the study's modalities (the default for the rest)."""
    periods = [config.quiet_period.get(m, config.quiet_period["default"]) for m in modalities]
    return max(periods or [config.quiet_period["default"]])


def readiness(study: StudyState, steps: Sequence[MppsState], committed: bool,
              config: StudyAssembly, now: datetime) -> str | None:
    """Why the study is ready now ('order', 'mpps', 'storage-commitment', 'quiet-period'),
    or None."""
    if study.expected_series is not None and study.series_count >= study.expected_series:
        return "order"
    quiet = (now - study.last_received_at).total_seconds()
    waiting_for_mpps = False
    if config.mpps:
        for step in steps:
            if step.status == "COMPLETED" and _all_arrived(study, step):
                return "mpps"
            if step.status != "DISCONTINUED":
                waiting_for_mpps = True  # open, or completed with instances still to come
    if committed:
        return "storage-commitment"
    limit = config.mpps_timeout if waiting_for_mpps else quiet_period(config, study.modalities)
    return "quiet-period" if quiet >= limit else None


def _all_arrived(study: StudyState, step: MppsState) -> bool:
    if not step.performed:
        return False
    for series_uid, instances in step.performed.items():
        if instances:
            if not set(instances) <= study.sop_instance_uids:
                return False
        elif series_uid not in study.series_uids:
            return False
    return True


class StudyAssembler:
    """Checks collecting studies and announces the complete ones (one node or many)."""

    def __init__(self, database: Database, channels: Mapping[str, ChannelConfig],
                 receive: Callable[[Inbound], Receipt], *, audit_chain: str = "assembly",
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._database = database
        self._configs = {name: c.assembly for name, c in channels.items()
                         if c.assembly is not None}
        self._receive = receive
        self._audit_chain = audit_chain
        self._clock = clock

    @property
    def active(self) -> bool:
        return bool(self._configs)

    def interval(self) -> float:
        """How often to look: a quarter of the shortest quiet period, between 0.1 and 5 s."""
        shortest = min((min(c.quiet_period.values()) for c in self._configs.values()),
                       default=20.0)
        return min(5.0, max(0.1, shortest / 4))

    def run_once(self) -> list[tuple[str, int, str]]:
        """Announce every study that is ready now; returns (study UID, version, reason)."""
        if not self._configs:
            return []
        now = self._clock()
        with self._database.read() as session:
            connection = session.connection()
            committed, settled = self._commitments(connection, now)
            studies = self._collecting(connection)
            steps = self._steps(connection, [s.study_uid for s in studies])
            studies = [self._with_contents(connection, s) if s.study_uid in steps else s
                       for s in studies]
        announced = []
        for study in studies:
            config = self._configs[study.channel]
            reason = readiness(study, steps.get(study.study_uid, []),
                               study.study_uid in committed, config, now)
            if reason is not None:
                version = self._announce(study, reason, config, now)
                announced.append((study.study_uid, version, reason))
        if settled:
            with self._database.write() as session:
                session.execute(update(DICOM_COMMITMENTS)
                                .where(DICOM_COMMITMENTS.c.id.in_(settled))
                                .values(settled=True))
        return announced

    def _collecting(self, connection: Connection) -> list[StudyState]:
        rows = connection.execute(
            select(DICOM_STUDIES.c.id, DICOM_STUDIES.c.study_uid, DICOM_STUDIES.c.channel,
                   DICOM_STUDIES.c.modalities, DICOM_STUDIES.c.last_received_at,
                   DICOM_STUDIES.c.ready_version, DICOM_STUDIES.c.series_count,
                   DICOM_STUDIES.c.accession)
            .where(DICOM_STUDIES.c.state == COLLECTING,
                   DICOM_STUDIES.c.channel.in_(sorted(self._configs)))
            .order_by(DICOM_STUDIES.c.id)).all()
        expected = self._expected(connection, rows)
        return [StudyState(r.id, r.study_uid, r.channel,
                           tuple(m for m in r.modalities.split("\\") if m),
                           r.last_received_at, r.ready_version, series_count=r.series_count,
                           expected_series=expected.get(r.study_uid)) for r in rows]

    def _expected(self, connection: Connection, rows: Sequence[Any]) -> dict[str, int]:
        """Study UID -> series its orders expect (orders found by the Study UID they
        assigned or the accession), for channels with `expected_series`."""
        wanted = [r for r in rows if self._configs[r.channel].expected_series]
        if not wanted:
            return {}
        uids = [r.study_uid for r in wanted]
        accessions = [r.accession for r in wanted if r.accession]
        orders = connection.execute(
            select(ORDERS.c.id, ORDERS.c.study_uid, ORDERS.c.accession,
                   ORDERS.c.procedure_code)
            .where(or_(ORDERS.c.study_uid.in_(uids), ORDERS.c.accession.in_(accessions)),
                   ORDERS.c.status.not_in(("cancelled", "discontinued")))).all()
        expected: dict[str, int] = {}
        for row in wanted:
            codes = {o.id: o.procedure_code for o in orders
                     if o.study_uid == row.study_uid
                     or (row.accession and o.accession == row.accession)}
            table = self._configs[row.channel].expected_series
            counts = [table[code] for code in codes.values() if code in table]
            if counts:
                expected[row.study_uid] = sum(counts)
        return expected

    def _with_contents(self, connection: Connection, study: StudyState) -> StudyState:
        """The study with its stored series and instances (to check an MPPS against)."""
        rows = connection.execute(
            select(DICOM_SERIES.c.series_uid, DICOM_INSTANCES.c.sop_instance_uid)
            .join(DICOM_INSTANCES, DICOM_INSTANCES.c.series_id == DICOM_SERIES.c.id)
            .where(DICOM_SERIES.c.study_id == study.study_id)).all()
        return replace(study, series_uids=frozenset(r[0] for r in rows),
                       sop_instance_uids=frozenset(r[1] for r in rows))

    def _steps(self, connection: Connection, study_uids: list[str]
               ) -> dict[str, list[MppsState]]:
        steps: dict[str, list[MppsState]] = {}
        if not study_uids:
            return steps
        for uid, status, performed in connection.execute(
                select(DICOM_MPPS.c.study_uid, DICOM_MPPS.c.status, DICOM_MPPS.c.performed)
                .where(DICOM_MPPS.c.study_uid.in_(study_uids))):
            steps.setdefault(uid, []).append(MppsState(status, performed or {}))
        return steps

    def _commitments(self, connection: Connection, now: datetime
                     ) -> tuple[set[str], list[int]]:
        """Studies fully covered by a Storage Commitment request whose instances are all
        stored, and the requests to settle (those, and any older than a day)."""
        covered: set[str] = set()
        settled: list[int] = []
        for row in connection.execute(
                select(DICOM_COMMITMENTS.c.id, DICOM_COMMITMENTS.c.sop_instance_uids,
                       DICOM_COMMITMENTS.c.received_at)
                .where(DICOM_COMMITMENTS.c.settled.is_(False))).all():
            wanted = set(row.sop_instance_uids)
            found = as_dict(connection.execute(
                select(DICOM_INSTANCES.c.sop_instance_uid, DICOM_INSTANCES.c.study_uid)
                .where(DICOM_INSTANCES.c.sop_instance_uid.in_(sorted(wanted)),
                       DICOM_INSTANCES.c.current.is_(True))))
            complete = set(found) == wanted
            if complete:
                covered.update(found.values())
            if complete or (now - row.received_at).total_seconds() > 86_400:
                settled.append(row.id)
        return covered, settled

    def _announce(self, study: StudyState, reason: str, config: StudyAssembly,
                  now: datetime) -> int:
        version = study.ready_version + 1
        summary = self._summary(study, version, reason)
        self._receive(Inbound(
            channel=config.ready_channel, content_type=READY_CONTENT_TYPE,
            source=f"assembly:{study.channel}", content=json.dumps(summary).encode(),
            dedup_key=f"study-ready/{study.study_uid}/{version}",
            patient_id=summary["patient_id"], accession=summary["accession"],
            study_uid=study.study_uid, metadata={"version": str(version), "reason": reason}))
        with self._database.write() as session:
            marked = session.connection().execute(
                update(DICOM_STUDIES)
                .where(DICOM_STUDIES.c.id == study.study_id,
                       DICOM_STUDIES.c.state == COLLECTING,
                       DICOM_STUDIES.c.last_received_at == study.last_received_at)
                .values(state=READY, ready_version=version, ready_at=now, ready_reason=reason))
            if marked.rowcount == 0:
                # An instance arrived while we announced: stay collecting, and let the next
                # announcement carry the next version.
                session.execute(update(DICOM_STUDIES).where(DICOM_STUDIES.c.id == study.study_id)
                                .values(ready_version=version))
            audit.append(session, [audit.AuditRecord(
                action="dicom.study-ready", actor="assembly", channel=study.channel,
                patient_id=summary["patient_id"], accession=summary["accession"],
                study_uid=study.study_uid,
                detail={"version": version, "reason": reason,
                        "instances": summary["instance_count"]})], self._audit_chain)
        log.info("study %s ready (version %d, %s)", study.study_uid, version, reason)
        return version

    def _summary(self, study: StudyState, version: int, reason: str) -> dict[str, Any]:
        with self._database.read() as session:
            row = session.execute(select(DICOM_STUDIES).where(
                DICOM_STUDIES.c.id == study.study_id)).one()
            series = session.execute(
                select(DICOM_SERIES.c.series_uid, DICOM_SERIES.c.modality,
                       DICOM_SERIES.c.series_number, DICOM_SERIES.c.series_description,
                       DICOM_SERIES.c.body_part, DICOM_SERIES.c.instance_count)
                .where(DICOM_SERIES.c.study_id == study.study_id)
                .order_by(DICOM_SERIES.c.id)).all()
        return {
            "study_uid": study.study_uid, "version": version, "reason": reason,
            "supersedes": version - 1 if version > 1 else None, "channel": study.channel,
            "patient_id": row.patient_id, "accession": row.accession,
            "modalities": list(study.modalities), "instance_count": row.instance_count,
            "series": [dict(s._mapping) for s in series],
        }
