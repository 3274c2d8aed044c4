"""Apply one parsed ADT or order message to the registry, once.

Everything happens in the caller's transaction, audit events included, so a message is
applied entirely or not at all. The message uid is recorded in `registry_applied`
first: a second application of the same message (a redelivery after a crash, a
reprocess) finds it and changes nothing. On PostgreSQL two nodes applying the same
message at once collide on that row's key; the loser's transaction fails and its
delivery is retried, and then finds the message applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from radbridge.engine import audit
from radbridge.engine.models import RegistryApplied, utcnow
from radbridge.engine.registry.changes import Changes, MessageRef
from radbridge.engine.registry.orders import apply_order
from radbridge.engine.registry.patients import apply_visit, merge, resolve_patient
from radbridge.mappings.hl7.inbound import AdtTrigger, OrderEvent, PatientEvent

__all__ = ["ApplyResult", "MessageRef", "apply_event"]


@dataclass(frozen=True)
class ApplyResult:
    applied: bool
    """False when the message had been applied before."""
    summary: str
    """What changed, by action; ids only, no PHI."""
    orders: tuple[int, ...] = ()
    """Ids of the orders the message created or changed."""
    patients: tuple[int, ...] = ()
    """Ids of the patients an ADT message created, updated or merged into."""


def apply_event(session: Session, event: PatientEvent | OrderEvent, ref: MessageRef,
                chain: str) -> ApplyResult:
    """Apply `event` in the caller's transaction and append its audit events to `chain`."""
    message_type = f"{event.header.message_type}^{event.header.trigger}"[:16]
    if session.get(RegistryApplied, ref.uid) is not None:
        return ApplyResult(False, f"{message_type} was applied to the registry before;"
                                  " nothing changed")
    session.add(RegistryApplied(message_uid=ref.uid, message_type=message_type,
                                applied_at=utcnow()))
    session.flush()
    changes = Changes(ref, message_type)
    orders: tuple[int, ...] = ()
    patients: tuple[int, ...] = ()
    if isinstance(event, PatientEvent):
        patients = (_apply_patient_event(session, event, changes),)
    else:
        orders = _apply_order_event(session, event, changes)
    audit.append(session, changes.records, chain)
    return ApplyResult(True, changes.summary(), orders, patients)


def _apply_patient_event(session: Session, event: PatientEvent, changes: Changes) -> int:
    patient = resolve_patient(session, event.patient, changes, update_demographics=True)
    if event.trigger is AdtTrigger.MERGE:
        merge(session, patient, event.prior_identifiers, changes)
    apply_visit(session, event, patient, changes)
    session.flush()
    return patient.id


def _apply_order_event(session: Session, event: OrderEvent, changes: Changes
                       ) -> tuple[int, ...]:
    # Orders carry copies of demographics that ADT owns: they create a patient, never
    # overwrite one.
    patient = resolve_patient(session, event.patient, changes, update_demographics=False)
    touched = [apply_order(session, details, patient, changes) for details in event.orders]
    session.flush()
    return tuple(order.id for order in touched)
