"""Operator replay: reprocess messages from the start, retry dead-lettered deliveries.

Each change commits together with the audit events that describe it. A reprocess
starts a new generation, so the pipeline's new stages and deliveries (whose
idempotency keys include the generation) never collide with the earlier ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from radbridge.engine import audit
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus, MessageStatus
from radbridge.engine.models import Delivery, Message, utcnow
from radbridge.errors import NotFound

RETRY_BATCH = 500
"""Dead deliveries moved back per transaction by `retry_dead`."""


def _ids_of(message: Message) -> dict[str, Any]:
    return {
        "channel": message.channel,
        "message_id": message.id,
        "patient_id": message.patient_id,
        "accession": message.accession,
        "study_uid": message.study_uid,
    }


def reprocess(database: Database, message_ids: Iterable[int], *, actor: str) -> list[int]:
    """Put messages back to received for a new generation; returns their ids in order.

    All or nothing: an unknown id raises NotFound and no message is changed.
    """
    ids = list(dict.fromkeys(message_ids))
    if not ids:
        return []
    with database.write() as session:
        found = {
            message.id: message
            for message in session.execute(
                select(Message).where(Message.id.in_(ids)).order_by(Message.id).with_for_update()
            ).scalars()
        }
        missing = [message_id for message_id in ids if message_id not in found]
        if missing:
            raise NotFound(f"no message {', '.join(map(str, missing))}")
        now = utcnow()
        records = []
        for message_id in ids:
            message = found[message_id]
            previous = (message.status, message.generation)
            message.status = MessageStatus.RECEIVED
            message.generation += 1
            message.attempts = 0
            message.error = None
            message.updated_at = now
            records.append(audit.AuditRecord(
                action="message.reprocessed", actor=actor, **_ids_of(message),
                detail={"previous_status": previous[0], "previous_generation": previous[1],
                        "generation": message.generation},
            ))
        session.flush()
        audit.append(session, records)
    return ids


def retry_dead(
    database: Database,
    *,
    message_id: int | None = None,
    channel: str | None = None,
    destination: str | None = None,
    all: bool = False,  # named as the operator's "--all"; shadows the builtin here only
    actor: str,
) -> int:
    """Move dead deliveries matching every given filter back to pending; returns how many.

    Only deliveries of each message's current generation are retried: those of earlier
    generations were superseded by a reprocess. Without any filter, `all=True` is
    required so that a bare call cannot resend everything by accident.
    """
    if message_id is None and channel is None and destination is None and not all:
        raise ValueError("retry_dead needs message_id, channel or destination, or all=True")
    total = 0
    after_id = 0
    while True:
        with database.write() as session:
            moved, after_id = _retry_batch(
                session, after_id, message_id=message_id, channel=channel,
                destination=destination, actor=actor,
            )
        total += moved
        if moved < RETRY_BATCH:
            return total


def _retry_batch(
    session: Session,
    after_id: int,
    *,
    message_id: int | None,
    channel: str | None,
    destination: str | None,
    actor: str,
) -> tuple[int, int]:
    """Retry up to RETRY_BATCH dead deliveries with id > after_id: (moved, last id)."""
    statement = (
        select(Delivery, Message)
        .join(Message, Message.id == Delivery.message_id)
        .where(Delivery.status == DeliveryStatus.DEAD, Delivery.id > after_id,
               Delivery.generation == Message.generation)
    )
    if message_id is not None:
        statement = statement.where(Delivery.message_id == message_id)
    if channel is not None:
        statement = statement.where(Delivery.channel == channel)
    if destination is not None:
        statement = statement.where(Delivery.destination == destination)
    rows = session.execute(
        statement.order_by(Delivery.id).limit(RETRY_BATCH).with_for_update(of=Delivery)
    ).all()
    now = utcnow()
    records = []
    for delivery, message in rows:
        delivery.status = DeliveryStatus.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = now
        delivery.lease_owner = None
        delivery.lease_expires_at = None
        delivery.updated_at = now
        records.append(audit.AuditRecord(
            action="delivery.retried", actor=actor, **_ids_of(message),
            detail={"delivery_id": delivery.id, "destination": delivery.destination,
                    "generation": delivery.generation},
        ))
    session.flush()
    audit.append(session, records)
    return len(rows), rows[-1][0].id if rows else after_id
