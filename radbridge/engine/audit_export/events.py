"""One audit event as the exporters see it: the ledger row with its detail parsed.

Every export format (CSV, JSON, FHIR AuditEvent, DICOM audit message) is a function of
this value alone, so a format never reads the store and a test builds one by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

COLUMNS = ("seq", "chain", "at", "actor", "action", "outcome", "channel", "message_id",
           "patient_id", "accession", "study_uid", "detail", "hash")
"""The order of the CSV columns and of the JSON keys."""


@dataclass(frozen=True)
class LedgerEvent:
    """An appended audit event (see `radbridge.engine.audit`)."""

    seq: int
    at: datetime
    action: str
    actor: str = "system"
    outcome: str = "success"
    chain: str = "default"
    channel: str | None = None
    message_id: int | None = None
    patient_id: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    hash: str = ""

    @classmethod
    def from_row(cls, row: Any) -> LedgerEvent:
        """From an `AuditEvent` or a Core row of `audit_events` (attribute access)."""
        raw = row.detail or "{}"
        try:
            detail = json.loads(raw) if isinstance(raw, str) else dict(raw)
        except ValueError:
            detail = {"unparsed": raw}
        at: datetime = row.at
        return cls(seq=row.seq, chain=row.chain, at=at if at.tzinfo else at.replace(tzinfo=UTC),
                   actor=row.actor, action=row.action, outcome=row.outcome,
                   channel=row.channel, message_id=row.message_id, patient_id=row.patient_id,
                   accession=row.accession, study_uid=row.study_uid,
                   detail=detail if isinstance(detail, dict) else {"value": detail},
                   hash=row.hash)

    @property
    def node(self) -> str | None:
        """The node that wrote it: chains are named "<node id>/<writer>"."""
        head, slash, _ = self.chain.rpartition("/")
        return head if slash and head else None

    def as_json(self) -> dict[str, Any]:
        """The JSON form (the same keys as `audit.event_as_dict`)."""
        return {
            "seq": self.seq, "chain": self.chain, "at": self.at.isoformat(),
            "actor": self.actor, "action": self.action, "outcome": self.outcome,
            "channel": self.channel, "message_id": self.message_id,
            "patient_id": self.patient_id, "accession": self.accession,
            "study_uid": self.study_uid, "detail": dict(self.detail), "hash": self.hash,
        }
