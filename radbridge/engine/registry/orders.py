"""Orders: the rules for applying ORM^O01 and OMI^O23 order groups.

An order is found by its placer number, else its filler number, else its accession;
a message about an order not seen yet creates it, whatever its control code, so that
messages arriving out of order still leave a complete record. Every message applied
to an order adds a history row (status before and after, control code, message uid).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import InstrumentedAttribute

from radbridge.engine.models import Order, OrderStatusHistory, Patient, utcnow
from radbridge.engine.registry.changes import Changes, assign
from radbridge.engine.registry.patients import follow_merges
from radbridge.engine.registry.status import OrderStatus, order_status_after
from radbridge.mappings.hl7.errors import Hl7ContentError
from radbridge.mappings.hl7.inbound import OrderDetails


def find_order(session: Session, details: OrderDetails) -> Order | None:
    """The order these numbers name, or None for a new one.

    Tried in turn: placer number, filler number, accession. An order whose placer or
    filler number differs from one the message gives is another order, even under the
    same accession; several orders left under one key is an error, not a guess.
    """
    keys: list[tuple[InstrumentedAttribute[str | None], str | None, str]] = [
        (Order.placer_number, details.placer_number, "ORC-2 (placer order number)"),
        (Order.filler_number, details.filler_number, "ORC-3 (filler order number)"),
        (Order.accession, details.accession, "OBR-18/IPC-1 (accession)"),
    ]
    for column, value, label in keys:
        if value is None:
            continue
        found = [order for order in session.execute(
            select(Order).where(column == value).order_by(Order.id)).scalars()
            if _same_numbers(order, details)]
        if len(found) > 1:
            raise Hl7ContentError(label, "matches several orders; give the placer number")
        if found:
            return found[0]
    return None


def _same_numbers(order: Order, details: OrderDetails) -> bool:
    given = ((order.placer_number, details.placer_number),
             (order.filler_number, details.filler_number))
    return all(mine is None or theirs is None or mine == theirs for mine, theirs in given)


def apply_order(session: Session, details: OrderDetails, patient: Patient,
                changes: Changes) -> Order:
    """Create or update one order, move its status along ORC-1/ORC-5, and record it."""
    now = utcnow()
    order = find_order(session, details)
    created = order is None
    previous_patient: int | None = None
    if order is None:
        order = Order(patient_id=patient.id, status=OrderStatus.ORDERED, created_at=now)
        session.add(order)
    else:
        owner = session.get(Patient, order.patient_id)
        if owner is None or follow_merges(session, owner) is not patient:
            previous_patient, order.patient_id = order.patient_id, patient.id
    before = None if created else OrderStatus(order.status)
    changed = assign(order, _order_values(details))
    after = order_status_after(details.control, details.status_code, before)
    order.status = after
    order.last_message_uid, order.updated_at = changes.ref.uid, now
    session.flush()
    session.add(OrderStatusHistory(
        order_id=order.id, from_status=before, to_status=after,
        control_code=details.control, message_uid=changes.ref.uid, at=now))
    tags = {"accession": order.accession, "study_uid": order.study_uid}
    ids: dict[str, object] = {"order": order.id, "patient": patient.id,
                              "control": str(details.control)}
    if created:
        changes.add("registry.order.created", patient, {**ids, "status": after}, **tags)
        return order
    if after != before:
        changes.add("registry.order.status", patient, {**ids, "from": before, "to": after},
                    **tags)
    if previous_patient is not None:
        changed.append("patient")
        ids["previous_patient"] = previous_patient
    if changed:
        changes.add("registry.order.updated", patient, {**ids, "fields": changed}, **tags)
    return order


def _order_values(details: OrderDetails) -> dict[str, object]:
    return {
        "placer_number": details.placer_number,
        "filler_number": details.filler_number,
        "accession": details.accession,
        "accession_issuer": details.accession_issuer,
        "study_uid": details.study_uid,
        "procedure_code": details.procedure_code,
        "procedure_system": details.procedure_system,
        "procedure_display": details.procedure_display,
        "modality": details.modality,
        "priority": details.priority,
        "ordering_provider_id": details.provider_id,
        "ordering_provider_name": details.provider_name,
        "scheduled_at": details.scheduled_at,
    }
