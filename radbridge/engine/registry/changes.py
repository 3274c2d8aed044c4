"""What applying one message changed: audit records, a summary, and field assignment.

Audit details name rows by id and fields by name, never their values: a changed name or
birth date is PHI. The patient identifier goes in the event's `patient_id` column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String

from radbridge.engine.audit import AuditRecord
from radbridge.engine.models import Base, Patient
from radbridge.mappings.hl7.errors import Hl7ContentError

ACTOR = "registry"

FREE_TEXT = frozenset({"name", "location", "procedure_display", "ordering_provider_name"})
"""Columns whose over-long values are cut to fit; anything else over-long is an error."""


@dataclass(frozen=True)
class MessageRef:
    """The stored message being applied: its uid makes applying idempotent."""

    uid: str
    message_id: int | None = None
    channel: str | None = None
    default_issuer: str = ""
    """The issuer of identifiers whose assigning authority (CX.4) is empty."""


@dataclass
class Changes:
    """Collects the audit records of one message and the short summary of what it did."""

    ref: MessageRef
    message_type: str
    records: list[AuditRecord] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

    def add(self, action: str, patient: Patient, detail: Mapping[str, Any], *,
            accession: str | None = None, study_uid: str | None = None) -> None:
        """One audit event about `patient` (its identifier goes in `patient_id`)."""
        self.records.append(AuditRecord(
            action=action, actor=ACTOR, channel=self.ref.channel,
            message_id=self.ref.message_id, patient_id=patient.identifier,
            accession=accession, study_uid=study_uid,
            detail={"message_uid": self.ref.uid, "message_type": self.message_type,
                    "issuer": patient.issuer, **detail},
        ))
        self.done.append(action.removeprefix("registry."))

    def summary(self) -> str:
        what = ", ".join(dict.fromkeys(self.done)) or "nothing changed"
        return f"{self.message_type} applied to the registry: {what}"


def assign(row: Base, values: dict[str, Any]) -> list[str]:
    """Set the given (not None) values on `row`; the names of the fields that changed."""
    changed = []
    for name, value in values.items():
        if value is not None and getattr(row, name) != value:
            setattr(row, name, value)
            changed.append(name)
    fit(row)
    return changed


def fit(row: Base) -> None:
    """Cut free text to its column; refuse over-long identifiers and codes (content error)."""
    for column in row.__table__.columns:
        value = getattr(row, column.key, None)
        limit = column.type.length if isinstance(column.type, String) else None
        if isinstance(value, str) and limit is not None and len(value) > limit:
            if column.key not in FREE_TEXT:
                raise Hl7ContentError(f"{row.__tablename__}.{column.key}",
                                      f"is longer than {limit} characters")
            setattr(row, column.key, value[:limit])
