"""Status lifecycles of messages and deliveries, as enums with their transition tables.

A message is received, then processed once per generation (a reprocess starts a new
generation): it ends filtered, routed (deliveries queued) or errored. A message a source refused
(an HL7 message answered AE/AR) is stored as rejected and never processed. Each delivery
goes pending -> in_flight (leased) -> sent, or back to pending for a retry (or when a
lease is released or expires), or dead after the queue policy's bound; `retry` brings a
dead delivery back to pending. The outbox's guarded UPDATEs (status and lease owner in
the WHERE clause) are where these transitions are enforced.
"""

from __future__ import annotations

from enum import StrEnum


class MessageStatus(StrEnum):
    RECEIVED = "received"
    FILTERED = "filtered"
    ROUTED = "routed"
    ERRORED = "errored"
    REJECTED = "rejected"
    """Stored for inspection but refused at the door (e.g. NAKed HL7); never processed."""


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


OPEN_DELIVERY_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)
"""Deliveries still owed to a destination: retention never drops their messages."""
