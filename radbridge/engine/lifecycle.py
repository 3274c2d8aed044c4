"""Status lifecycles of messages and deliveries, as enums with their transition tables.

A message is received, then processed once per generation (a reprocess starts a new
generation): it ends filtered, routed (deliveries queued) or errored. Each delivery
goes pending -> in_flight -> sent, or back to pending for a retry, or dead after the
queue policy's bound; `retry` brings a dead delivery back to pending.
"""

from __future__ import annotations

from enum import StrEnum


class MessageStatus(StrEnum):
    RECEIVED = "received"
    FILTERED = "filtered"
    ROUTED = "routed"
    ERRORED = "errored"


class StageKind(StrEnum):
    """What a stage record of a message says happened, with the content at that point."""

    RECEIVED = "received"
    FILTERED = "filtered"
    TRANSFORMED = "transformed"
    QUEUED = "queued"
    SENT = "sent"
    ERRORED = "errored"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    DEAD = "dead"


MESSAGE_TRANSITIONS: dict[MessageStatus, frozenset[MessageStatus]] = {
    MessageStatus.RECEIVED: frozenset(
        {MessageStatus.FILTERED, MessageStatus.ROUTED, MessageStatus.ERRORED}
    ),
    # A reprocess puts any finished message back to received for a new generation.
    MessageStatus.FILTERED: frozenset({MessageStatus.RECEIVED}),
    MessageStatus.ROUTED: frozenset({MessageStatus.RECEIVED}),
    MessageStatus.ERRORED: frozenset({MessageStatus.RECEIVED}),
}

DELIVERY_TRANSITIONS: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    DeliveryStatus.PENDING: frozenset({DeliveryStatus.IN_FLIGHT, DeliveryStatus.DEAD}),
    DeliveryStatus.IN_FLIGHT: frozenset(
        # back to pending: a retry, or a lease released at shutdown or expired
        {DeliveryStatus.SENT, DeliveryStatus.PENDING, DeliveryStatus.DEAD}
    ),
    DeliveryStatus.SENT: frozenset(),
    DeliveryStatus.DEAD: frozenset({DeliveryStatus.PENDING}),
}

OPEN_DELIVERY_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)
"""Deliveries still owed to a destination: retention never drops their messages."""


def can_move(table: dict[StrEnum, frozenset[StrEnum]], old: StrEnum, new: StrEnum) -> bool:
    """Whether `old -> new` is a transition the table allows."""
    return new in table.get(old, frozenset())
