"""The processor: runs each received message through its channel's pipeline.

A batch goes in three steps: take received messages, run filter -> transform -> route
in memory, then write in one transaction the stage records, the outbox deliveries, the
new status and the audit events. On PostgreSQL the messages are claimed in that same
transaction (`FOR UPDATE SKIP LOCKED`, so several nodes take different messages: row
locks hold up nobody else). SQLite has a single writer for the whole store, and a
source's acknowledgement waits for it; so there the pipeline runs before the write
transaction, and the transaction only checks that each message is still received in
the same generation (a reprocess may have moved it on) and writes the rows. A crash
before the commit leaves the messages received, to be processed again; after it, the
deliveries exist. Either way nothing acknowledged is lost.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Row, and_, bindparam, select

from radbridge.engine import audit, metrics
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database, insert_many
from radbridge.engine.fast_insert import insert_rows, update_rows
from radbridge.engine.lifecycle import DeliveryStatus, MessageStatus, StageKind
from radbridge.engine.models import DELIVERIES, MESSAGES, STAGES, utcnow
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.pipeline import ChannelPipeline
from radbridge.errors import PipelineError
from radbridge.mappings.payload import Payload

log = logging.getLogger(__name__)

_M, _S, _D = MESSAGES.c, STAGES.c, DELIVERIES.c
_CANDIDATES = (
    select(_M.id, _M.uid, _M.channel, _M.generation, _M.content_type, _M.source,
           _M.patient_id, _M.accession, _M.study_uid, _M.metadata, _M.attempts,
           _M.received_at, _S.id.label("stage_id"), _S.in_blob, _S.content,
           _S.content_sha256, _S.content_size, _S.content_type.label("stage_content_type"))
    .join(STAGES, and_(_S.message_id == _M.id, _S.stage == StageKind.RECEIVED))
    .where(_M.status == MessageStatus.RECEIVED,
           _M.channel.in_(bindparam("channels", expanding=True)))
    .order_by(_M.id)
    .limit(bindparam("batch"))
)
_STILL_RECEIVED = select(_M.id, _M.generation).where(
    _M.id.in_(bindparam("ids", expanding=True)), _M.status == MessageStatus.RECEIVED)


def idempotency_key(message_uid: str, generation: int, destination: str) -> str:
    """Stable across redeliveries of one generation, so receivers can recognise repeats."""
    return f"{message_uid}-{generation}-{destination}"


class Handoff(Protocol):
    """This node's delivery workers, which may take fresh deliveries without a claim."""

    node_id: str

    def reserve(self, channel: str, destination: str) -> bool:
        """Whether the worker has room for one more; True reserves it."""
        ...


@dataclass
class Processed:
    """What one batch did: how many messages, and deliveries leased to this node."""

    count: int = 0
    handed: list[OutboundDelivery] = field(default_factory=list)
    queued: set[tuple[str, str]] = field(default_factory=set)
    """(channel, destination) of deliveries left in the outbox for a claim."""


@dataclass(frozen=True)
class _Written:
    """What a write transaction stored, for `_finish` after it commits."""

    outcomes: Sequence[_Outcome]
    deliveries: list[dict[str, Any]]
    delivery_ids: list[int]
    content_stage: dict[int, tuple[int, Any]]


@dataclass
class _Outcome:
    """The pipeline's verdict on one message, ready to be written."""

    row: Row[Any]
    status: MessageStatus
    payload: Payload
    event: audit.AuditRecord
    destinations: tuple[str, ...] = ()
    transformed_stage: dict[str, Any] | None = None
    detail: str | None = None
    """For filtered and errored messages: the reason, kept in their stage record."""


class Processor:
    """Processes received messages of the channels deployed on this node.

    With a `handoff`, a new delivery to an unordered destination whose local worker has
    room is written already leased to this node and handed straight to that worker:
    one transaction fewer per delivery than a claim. If the node dies the lease
    expires and any node sends it, as for claimed deliveries.
    """

    def __init__(
        self,
        database: Database,
        blobs: BlobStore,
        pipelines: Mapping[str, ChannelPipeline],
        *,
        inline_limit: int,
        batch: int = 64,
        handoff: Handoff | None = None,
        audit_chain: str = "processor",
    ) -> None:
        self._audit_chain = audit_chain
        self._handoff = handoff
        self._database = database
        self._blobs = blobs
        self._pipelines = pipelines
        self._inline_limit = inline_limit
        self.batch = batch

    def process_batch(self) -> Processed:
        """Process up to one batch of received messages."""
        if not self._pipelines:
            return Processed()
        parameters = {"channels": sorted(self._pipelines), "batch": self.batch}
        if self._database.is_postgres:
            with self._database.write(redoable=True) as session:
                connection = session.connection()
                rows = connection.execute(
                    _CANDIDATES.with_for_update(skip_locked=True, of=MESSAGES), parameters
                ).all()
                written = self._write(connection, [self._run(row) for row in rows])
            return self._finish(written)
        with self._database.read() as session:
            rows = session.connection().execute(_CANDIDATES, parameters).all()
        if not rows:
            return Processed()
        outcomes = [self._run(row) for row in rows]  # no write lock held meanwhile
        with self._database.write(redoable=True) as session:
            connection = session.connection()
            current: dict[int, int] = {
                id_: generation for id_, generation in
                connection.execute(_STILL_RECEIVED, {"ids": [r.id for r in rows]})}
            written = self._write(connection, [o for o in outcomes
                                               if current.get(o.row.id) == o.row.generation])
        return self._finish(written)

    # --- the pipeline, in memory ---------------------------------------------------------

    def _run(self, row: Row[Any]) -> _Outcome:
        pipeline = self._pipelines[row.channel]
        payload = self._payload(row, pipeline)
        try:
            routing = pipeline.run(payload)
        except PipelineError as exc:
            return _errored(row, payload, str(exc))
        except Exception as exc:  # a bug or a lost blob: error this message, keep the rest
            # The exception text may quote content: its type in the log, the text in the
            # message's error (access-controlled and audited when read).
            log.error("processing message %s failed: %s", row.id, type(exc).__name__)
            log.debug("traceback of message %s", row.id, exc_info=exc)
            return _errored(row, payload, f"internal error: {type(exc).__name__}: {exc}")
        payload = routing.payload
        if not routing.accepted or not routing.destinations:
            reason = ("channel filter" if not routing.accepted
                      else "no destination filter accepted it")
            return _Outcome(row, MessageStatus.FILTERED, payload,
                            _event(row, payload, "message.filtered", "success",
                                   {"reason": reason}), detail=reason)
        event = _event(row, payload, "message.transformed", "success",
                       {"steps": list(routing.steps), "destinations": list(routing.destinations),
                        "generation": row.generation})
        stage = self._transformed_stage(row, payload) if routing.transformed else None
        return _Outcome(row, MessageStatus.ROUTED, payload, event, routing.destinations, stage)

    def _payload(self, row: Row[Any], pipeline: ChannelPipeline) -> Payload:
        if row.in_blob:
            needed = pipeline.needs_content and row.content_sha256
            content = self._blobs.read_bytes(row.content_sha256 or "") if needed else b""
        else:
            content = row.content or b""
        return Payload(
            content=content, content_type=row.content_type, source=row.source,
            patient_id=row.patient_id, accession=row.accession, study_uid=row.study_uid,
            metadata=row.metadata or {},
        )

    def _transformed_stage(self, row: Row[Any], payload: Payload) -> dict[str, Any]:
        stage: dict[str, Any] = {
            "message_id": row.id, "generation": row.generation,
            "stage": StageKind.TRANSFORMED, "content_type": payload.content_type,
            "content_size": len(payload.content), "destination": None, "detail": None,
        }
        if len(payload.content) > self._inline_limit:
            ref = self._blobs.put_bytes(payload.content)
            stage.update(in_blob=True, content=None, content_sha256=ref.sha256)
        else:
            stage.update(in_blob=False, content=payload.content,
                         content_sha256=hashlib.sha256(payload.content).hexdigest())
        return stage

    # --- the write transaction ---------------------------------------------------------

    def _write(self, connection: Connection, outcomes: Sequence[_Outcome]) -> _Written:
        if not outcomes:
            return _Written(outcomes, [], [], {})
        now = utcnow()
        transformed = [o for o in outcomes if o.transformed_stage is not None]
        stage_ids = insert_many(connection, STAGES, [
            {**o.transformed_stage, "at": now} for o in transformed  # type: ignore[dict-item]
        ])
        content_stage: dict[int, tuple[int, Any]] = {
            o.row.id: (o.row.stage_id, o.row) for o in outcomes}
        for outcome, stage_id in zip(transformed, stage_ids, strict=True):
            content_stage[outcome.row.id] = (stage_id, outcome.transformed_stage)
        deliveries: list[dict[str, Any]] = []
        stages: list[dict[str, Any]] = []
        for outcome in outcomes:
            row = outcome.row
            if outcome.status is MessageStatus.ROUTED:
                for name in outcome.destinations:
                    deliveries.append(self._delivery(outcome, name,
                                                     content_stage[row.id][0], now))
                    stages.append(_stage(row, StageKind.QUEUED, now, destination=name))
            else:
                kind = (StageKind.ERRORED if outcome.status is MessageStatus.ERRORED
                        else StageKind.FILTERED)
                stages.append(_stage(row, kind, now, detail=outcome.detail))
        delivery_ids = insert_many(connection, DELIVERIES, deliveries)
        if stages:
            insert_rows(connection, STAGES, stages)
        update_rows(connection, MESSAGES, "id", [_message_values(o, now) for o in outcomes])
        audit.append_rows(connection, [o.event for o in outcomes], self._audit_chain)
        return _Written(outcomes, deliveries, delivery_ids, content_stage)

    def _finish(self, written: _Written) -> Processed:
        """After the commit, outside the store's write lock: what to hand to workers."""
        if not written.outcomes:
            return Processed()
        _count(written.outcomes)
        handed, queued = self._handed(written.outcomes, written.deliveries,
                                      written.delivery_ids, written.content_stage)
        return Processed(len(written.outcomes), handed, queued)

    def _delivery(self, outcome: _Outcome, name: str, content_stage_id: int,
                  now: datetime) -> dict[str, Any]:
        row = outcome.row
        policy = self._pipelines[row.channel].config.destination(name).queue
        key = outcome.payload.field(policy.ordering_key) if policy.ordering_key else None
        delivery: dict[str, Any] = {
            "message_id": row.id, "channel": row.channel, "destination": name,
            "generation": row.generation, "status": DeliveryStatus.PENDING, "attempts": 0,
            "created_at": now, "updated_at": now, "next_attempt_at": now, "sent_at": None,
            "lease_owner": None, "lease_expires_at": None, "last_error": None,
            "ordering_key": None if key is None else key[:255],
            "idempotency_key": idempotency_key(row.uid, row.generation, name),
            "content_stage_id": content_stage_id,
        }
        if (self._handoff is not None and policy.ordering_key is None
                and self._handoff.reserve(row.channel, name)):
            delivery.update(status=DeliveryStatus.IN_FLIGHT, attempts=1,
                            lease_owner=self._handoff.node_id,
                            lease_expires_at=now + timedelta(seconds=policy.lease))
        return delivery

    def _handed(
        self, outcomes: Sequence[_Outcome], deliveries: list[dict[str, Any]],
        delivery_ids: list[int], content_stage: dict[int, tuple[int, Any]],
    ) -> tuple[list[OutboundDelivery], set[tuple[str, str]]]:
        by_message = {o.row.id: o for o in outcomes}
        handed: list[OutboundDelivery] = []
        queued: set[tuple[str, str]] = set()
        for delivery, delivery_id in zip(deliveries, delivery_ids, strict=True):
            if delivery["status"] != DeliveryStatus.IN_FLIGHT:
                queued.add((delivery["channel"], delivery["destination"]))
                continue
            outcome = by_message[delivery["message_id"]]
            handed.append(_outbound(delivery_id, delivery, outcome,
                                    content_stage[outcome.row.id][1]))
        return handed, queued


def _outbound(delivery_id: int, delivery: Mapping[str, Any], outcome: _Outcome,
              stage: Any) -> OutboundDelivery:
    """What the local worker needs, from the rows just written (no read back)."""
    row, payload = outcome.row, outcome.payload
    if isinstance(stage, Mapping):  # the transformed stage's row
        in_blob, content, sha, size, ctype = (stage["in_blob"], stage["content"],
                                              stage["content_sha256"], stage["content_size"],
                                              stage["content_type"])
    else:  # the received stage, as read
        in_blob, content, sha, size, ctype = (row.in_blob, row.content, row.content_sha256,
                                              row.content_size, row.stage_content_type)
    return OutboundDelivery(
        delivery_id=delivery_id, message_id=row.id, message_uid=row.uid,
        channel=row.channel, destination=delivery["destination"],
        generation=row.generation, attempt=delivery["attempts"],
        idempotency_key=delivery["idempotency_key"],
        content_type=ctype or payload.content_type,
        content=None if in_blob else (content or b""),
        blob_sha256=sha if in_blob else None, size=size or 0,
        created_at=delivery["created_at"], received_at=row.received_at,
        patient_id=payload.patient_id, accession=payload.accession,
        study_uid=payload.study_uid, metadata=dict(payload.metadata),
    )


def _message_values(outcome: _Outcome, now: datetime) -> dict[str, Any]:
    payload = outcome.payload
    return {
        "id": outcome.row.id, "status": outcome.status,
        "error": outcome.detail[:2000] if outcome.status is MessageStatus.ERRORED
        and outcome.detail else None,
        "attempts": outcome.row.attempts + 1, "updated_at": now,
        "patient_id": payload.patient_id, "accession": payload.accession,
        "study_uid": payload.study_uid, "content_type": payload.content_type,
        "metadata": dict(payload.metadata),
    }


def _stage(row: Row[Any], kind: StageKind, now: datetime, *, destination: str | None = None,
           detail: str | None = None) -> dict[str, Any]:
    return {"message_id": row.id, "generation": row.generation, "stage": kind, "at": now,
            "destination": destination, "detail": None if detail is None else detail[:2000],
            "content_type": None, "content": None, "content_sha256": None,
            "content_size": None, "in_blob": False}


def _errored(row: Row[Any], payload: Payload, reason: str) -> _Outcome:
    return _Outcome(row, MessageStatus.ERRORED, payload,
                    _event(row, payload, "message.errored", "failure",
                           {"reason": reason[:500]}), detail=reason)


def _count(outcomes: Sequence[_Outcome]) -> None:
    for outcome in outcomes:
        if outcome.status is MessageStatus.ERRORED:
            metrics.MESSAGES_ERRORED.labels(outcome.row.channel).inc()
        elif outcome.status is MessageStatus.FILTERED:
            metrics.MESSAGES_FILTERED.labels(outcome.row.channel).inc()


def _event(row: Row[Any], payload: Payload, action: str, outcome: str,
           detail: dict[str, object]) -> audit.AuditRecord:
    return audit.AuditRecord(
        action=action, outcome=outcome, actor="engine", channel=row.channel,
        message_id=row.id, patient_id=payload.patient_id, accession=payload.accession,
        study_uid=payload.study_uid, detail=detail,
    )
