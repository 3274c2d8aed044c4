"""Status lifecycles of registry orders and encounters, as enums and transition tables.

An order's status follows its messages' ORC-1 order control code and ORC-5 order status
(HL7 tables 0119 and 0038); an encounter's follows the ADT trigger event (table 0003).
"""

from __future__ import annotations

from enum import StrEnum

from radbridge.mappings.hl7.inbound import AdtTrigger, OrderControl


class OrderStatus(StrEnum):
    ORDERED = "ordered"
    """Placed (NW) without an ORC-5 status yet."""
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DISCONTINUED = "discontinued"
    ON_HOLD = "on_hold"
    REPLACED = "replaced"
    ERROR = "error"


BY_ORDER_STATUS_CODE = {
    "SC": OrderStatus.SCHEDULED,
    "IP": OrderStatus.IN_PROGRESS,
    "A": OrderStatus.IN_PROGRESS,  # some, not all, results available
    "CM": OrderStatus.COMPLETED,
    "CA": OrderStatus.CANCELLED,
    "DC": OrderStatus.DISCONTINUED,
    "HD": OrderStatus.ON_HOLD,
    "RP": OrderStatus.REPLACED,
    "ER": OrderStatus.ERROR,
}
"""ORC-5 (HL7 table 0038) to the registry's order status."""

BY_ORDER_CONTROL: dict[OrderControl, OrderStatus | None] = {
    OrderControl.NEW: OrderStatus.ORDERED,
    OrderControl.CHANGE: None,
    OrderControl.CANCEL: OrderStatus.CANCELLED,
    OrderControl.DISCONTINUE: OrderStatus.DISCONTINUED,
    OrderControl.STATUS_CHANGED: None,
}
"""What ORC-1 sets when ORC-5 is empty (None: the status stays as it is)."""

OVERRIDES_STATUS_CODE = frozenset({OrderControl.CANCEL, OrderControl.DISCONTINUE})
"""Control codes whose own meaning wins over an ORC-5 that says otherwise."""


def order_status_after(
    control: OrderControl, status_code: str | None, current: OrderStatus | None
) -> OrderStatus:
    """The order's status once a message with this ORC-1 and ORC-5 is applied."""
    by_control = BY_ORDER_CONTROL[control]
    if control in OVERRIDES_STATUS_CODE and by_control is not None:
        return by_control
    if status_code is not None:
        return BY_ORDER_STATUS_CODE[status_code]
    return by_control or current or OrderStatus.ORDERED


class EncounterStatus(StrEnum):
    REGISTERED = "registered"
    ADMITTED = "admitted"
    DISCHARGED = "discharged"
    CANCELLED = "cancelled"


BY_TRIGGER: dict[AdtTrigger, EncounterStatus | None] = {
    AdtTrigger.ADMIT: EncounterStatus.ADMITTED,
    AdtTrigger.REGISTER: EncounterStatus.REGISTERED,
    AdtTrigger.TRANSFER: None,
    AdtTrigger.DISCHARGE: EncounterStatus.DISCHARGED,
    AdtTrigger.UPDATE: None,
    AdtTrigger.CANCEL_ADMIT: EncounterStatus.CANCELLED,
    AdtTrigger.CANCEL_DISCHARGE: EncounterStatus.ADMITTED,
    AdtTrigger.MERGE: None,
}
"""The encounter status an ADT trigger sets (None: as it is, or admitted when new)."""

NEEDS_ENCOUNTER = frozenset({AdtTrigger.TRANSFER, AdtTrigger.DISCHARGE,
                             AdtTrigger.CANCEL_ADMIT, AdtTrigger.CANCEL_DISCHARGE})
"""Triggers that are about an encounter, so PV1-19 (visit number) must be given."""
