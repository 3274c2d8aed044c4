"""The processor: runs each received message through its channel's pipeline.

It claims a batch of received messages in one transaction (`FOR UPDATE SKIP LOCKED`
on PostgreSQL, so several nodes take different messages; SQLite has one writer), runs
filter -> transform -> route in memory, and in the same transaction writes the stage
records, the outbox deliveries, the new status and the audit events. A crash before
the commit leaves the messages received, to be processed again; after it, the
deliveries exist. Either way nothing acknowledged is lost.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from radbridge.engine import audit, metrics
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus, MessageStatus, StageKind
from radbridge.engine.models import Delivery, Message, MessageStage, utcnow
from radbridge.engine.outbox import OutboundDelivery, outbound
from radbridge.engine.pipeline import ChannelPipeline, Routing
from radbridge.errors import PipelineError
from radbridge.mappings.payload import Payload

log = logging.getLogger(__name__)


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
        with self._database.write(redoable=True) as session:
            messages = self._claim(session)
            if not messages:
                return Processed()
            stages = _received_stages(session, [m.id for m in messages])
            records: list[audit.AuditRecord] = []
            leased: list[tuple[Delivery, Message, MessageStage]] = []
            queued: set[tuple[str, str]] = set()
            now = utcnow()
            for message in messages:
                records.append(self._process(
                    session, message, stages[message.id], now, leased, queued))
            audit.append(session, records, self._audit_chain)
            session.flush()
            handed = [outbound(d, m, s) for d, m, s in leased]
        return Processed(len(messages), handed, queued)

    def _claim(self, session: Session) -> Sequence[Message]:
        statement = (
            select(Message)
            .where(Message.status == MessageStatus.RECEIVED,
                   Message.channel.in_(list(self._pipelines)))
            .order_by(Message.id)
            .limit(self.batch)
        )
        if self._database.is_postgres:
            statement = statement.with_for_update(skip_locked=True)
        return session.execute(statement).scalars().all()

    def _process(
        self, session: Session, message: Message, received: MessageStage, now: datetime,
        leased: list[tuple[Delivery, Message, MessageStage]],
        queued: set[tuple[str, str]],
    ) -> audit.AuditRecord:
        pipeline = self._pipelines[message.channel]
        message.attempts += 1
        message.updated_at = now
        try:
            outcome = pipeline.run(self._payload(message, received, pipeline))
        except PipelineError as exc:
            return _errored(session, message, str(exc), now)
        except Exception as exc:  # a bug or a lost blob: error this message, keep the rest
            # The exception text may quote content: its type in the log, the text in the
            # message's error (access-controlled and audited when read).
            log.error("processing message %s failed: %s", message.id, type(exc).__name__)
            log.debug("traceback of message %s", message.id, exc_info=exc)
            return _errored(session, message, f"internal error: {type(exc).__name__}: {exc}", now)
        _copy_identifiers(message, outcome.payload)
        if not outcome.accepted or not outcome.destinations:
            return _filtered(session, message, outcome, now)
        content_stage = received
        if outcome.transformed:
            content_stage = self._transformed_stage(message, outcome.payload, now)
            session.add(content_stage)
            session.flush()
        for name in outcome.destinations:
            delivery = _delivery(message, pipeline, name, outcome.payload, content_stage.id, now)
            if self._lease_locally(delivery, pipeline, now):
                leased.append((delivery, message, content_stage))
            else:
                queued.add((delivery.channel, delivery.destination))
            session.add(delivery)
            session.add(MessageStage(
                message_id=message.id, generation=message.generation, stage=StageKind.QUEUED,
                destination=name, at=now,
            ))
        message.status = MessageStatus.ROUTED
        message.error = None
        return _event(message, "message.transformed", "success",
                      {"steps": list(outcome.steps), "destinations": list(outcome.destinations),
                       "generation": message.generation})

    def _lease_locally(self, delivery: Delivery, pipeline: ChannelPipeline, now: datetime) -> bool:
        policy = pipeline.config.destination(delivery.destination).queue
        if self._handoff is None or policy.ordering_key is not None:
            return False
        if not self._handoff.reserve(delivery.channel, delivery.destination):
            return False
        delivery.status = DeliveryStatus.IN_FLIGHT
        delivery.attempts = 1
        delivery.lease_owner = self._handoff.node_id
        delivery.lease_expires_at = now + timedelta(seconds=policy.lease)
        return True

    def _payload(
        self, message: Message, received: MessageStage, pipeline: ChannelPipeline
    ) -> Payload:
        if received.in_blob:
            needed = pipeline.needs_content and received.content_sha256
            content = self._blobs.read_bytes(received.content_sha256 or "") if needed else b""
        else:
            content = received.content or b""
        return Payload(
            content=content, content_type=message.content_type, source=message.source,
            patient_id=message.patient_id, accession=message.accession,
            study_uid=message.study_uid, metadata=message.meta or {},
        )

    def _transformed_stage(self, message: Message, payload: Payload, now: datetime) -> MessageStage:
        stage = MessageStage(
            message_id=message.id, generation=message.generation, stage=StageKind.TRANSFORMED,
            at=now, content_type=payload.content_type, content_size=len(payload.content),
        )
        if len(payload.content) > self._inline_limit:
            ref = self._blobs.put_bytes(payload.content)
            stage.in_blob, stage.content_sha256 = True, ref.sha256
        else:
            stage.in_blob, stage.content = False, payload.content
            stage.content_sha256 = hashlib.sha256(payload.content).hexdigest()
        return stage


def _received_stages(session: Session, message_ids: list[int]) -> dict[int, MessageStage]:
    rows = session.execute(
        select(MessageStage).where(
            MessageStage.message_id.in_(message_ids), MessageStage.stage == StageKind.RECEIVED
        )
    ).scalars()
    return {stage.message_id: stage for stage in rows}


def _copy_identifiers(message: Message, payload: Payload) -> None:
    message.patient_id = payload.patient_id
    message.accession = payload.accession
    message.study_uid = payload.study_uid
    message.meta = dict(payload.metadata)
    message.content_type = payload.content_type


def _delivery(
    message: Message, pipeline: ChannelPipeline, name: str, payload: Payload,
    content_stage_id: int, now: datetime,
) -> Delivery:
    policy = pipeline.config.destination(name).queue
    key = payload.field(policy.ordering_key) if policy.ordering_key else None
    return Delivery(
        message_id=message.id, channel=message.channel, destination=name,
        generation=message.generation, status=DeliveryStatus.PENDING, attempts=0,
        created_at=now, updated_at=now, next_attempt_at=now,
        ordering_key=None if key is None else key[:255],
        idempotency_key=idempotency_key(message.uid, message.generation, name),
        content_stage_id=content_stage_id,
    )


def _errored(session: Session, message: Message, reason: str, now: datetime) -> audit.AuditRecord:
    message.status = MessageStatus.ERRORED
    message.error = reason[:2000]
    session.add(MessageStage(
        message_id=message.id, generation=message.generation, stage=StageKind.ERRORED,
        at=now, detail=reason[:2000],
    ))
    metrics.MESSAGES_ERRORED.labels(message.channel).inc()
    return _event(message, "message.errored", "failure", {"reason": reason[:500]})


def _filtered(
    session: Session, message: Message, outcome: Routing, now: datetime
) -> audit.AuditRecord:
    reason = "channel filter" if not outcome.accepted else "no destination filter accepted it"
    message.status = MessageStatus.FILTERED
    message.error = None
    session.add(MessageStage(
        message_id=message.id, generation=message.generation, stage=StageKind.FILTERED,
        at=now, detail=reason,
    ))
    metrics.MESSAGES_FILTERED.labels(message.channel).inc()
    return _event(message, "message.filtered", "success", {"reason": reason})


def _event(
    message: Message, action: str, outcome: str, detail: dict[str, object]
) -> audit.AuditRecord:
    return audit.AuditRecord(
        action=action, outcome=outcome, actor="engine", channel=message.channel,
        message_id=message.id, patient_id=message.patient_id, accession=message.accession,
        study_uid=message.study_uid, detail=detail,
    )
