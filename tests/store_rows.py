"""Builders of store rows for tests of the read side (queries, replay, API, CLI).

They write rows the way the pipeline leaves them, directly with the ORM, so these
tests do not depend on the pipeline itself.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from radbridge.engine.lifecycle import DeliveryStatus, MessageStatus, StageKind
from radbridge.engine.models import Delivery, Message, MessageStage


def add_message(
    session: Session,
    *,
    channel: str = "orders",
    status: str = MessageStatus.ROUTED,
    generation: int = 0,
    content: bytes = b"MSH|^~\\&|RIS|||",
    patient_id: str | None = "P1",
    accession: str | None = "A1",
    study_uid: str | None = None,
    error: str | None = None,
) -> Message:
    """A message with its received stage (content inline)."""
    message = Message(
        uid=uuid.uuid4().hex, channel=channel, status=status, generation=generation,
        source="test", content_type="x-application/hl7-v2+er7", patient_id=patient_id,
        accession=accession, study_uid=study_uid, meta={}, attempts=0, error=error,
    )
    session.add(message)
    session.flush()
    session.add(MessageStage(
        message_id=message.id, generation=0, stage=StageKind.RECEIVED,
        content_type=message.content_type, content=content, in_blob=False,
        content_sha256=hashlib.sha256(content).hexdigest(), content_size=len(content),
    ))
    session.flush()
    return message


def add_delivery(
    session: Session,
    message: Message,
    destination: str,
    status: str = DeliveryStatus.PENDING,
    *,
    generation: int | None = None,
    attempts: int = 0,
    created_at: datetime | None = None,
    last_error: str | None = None,
) -> Delivery:
    """A delivery of `message` (its current generation unless given) to `destination`."""
    stage_id = session.execute(
        select(MessageStage.id).where(MessageStage.message_id == message.id)
        .order_by(MessageStage.id).limit(1)
    ).scalar_one()
    generation = message.generation if generation is None else generation
    delivery = Delivery(
        message_id=message.id, channel=message.channel, destination=destination,
        generation=generation, status=status, attempts=attempts,
        idempotency_key=f"{message.uid}-{destination}-{generation}",
        content_stage_id=stage_id, last_error=last_error,
    )
    if created_at is not None:
        delivery.created_at = created_at
    session.add(delivery)
    session.flush()
    return delivery
