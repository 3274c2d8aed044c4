"""The `registry` destination: applies each delivered ADT or order message to the registry.

What the message changes about results already sent (a cancelled order, a patient
updated or merged) is marked in the same transaction (results.ledger) and the
corrections and withdrawals it owes are handed on after the commit (results.revisions);
a failure there fails the delivery, which is retried and finds the marks still set.

Content the registry cannot read (an unknown trigger, no PID) is rejected with
PermanentDeliveryError, so the delivery is dead-lettered and kept for a person to look
at; store failures propagate as they are and the delivery is retried. Messages of
other types (ORU, ACK, ...) are accepted and ignored, with a detail saying so.
"""

from __future__ import annotations

import asyncio
import logging

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import RegistryDestination
from radbridge.engine.correlation.service import retry_for_orders
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.registry.apply import apply_event
from radbridge.engine.registry.changes import MessageRef
from radbridge.engine.results import ledger
from radbridge.engine.results.revisions import send_pending
from radbridge.errors import PermanentDeliveryError
from radbridge.mappings.correlation import Outcome
from radbridge.mappings.hl7.errors import Hl7ContentError
from radbridge.mappings.hl7.inbound import (
    AdtTrigger,
    OrderEvent,
    PatientEvent,
    Unhandled,
    parse_message,
)
from radbridge.mappings.hl7.reading import decode

log = logging.getLogger(__name__)


class RegistrySink:
    """Parses the delivery's HL7 and applies it in one write transaction (on a thread)."""

    def __init__(self, config: RegistryDestination, context: AdapterContext) -> None:
        self._config = config
        self._context = context

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        applied = await asyncio.to_thread(self.apply, delivery)
        revised = await send_pending(
            self._context, origin=f"registry:{delivery.channel}/{delivery.destination}")
        if not revised:
            return applied
        return SendResult(detail=f"{applied.detail}; {revised} result revision(s) sent")

    async def close(self) -> None:
        return None

    def apply(self, delivery: OutboundDelivery) -> SendResult:
        """The blocking part of `send`: read the content, parse, apply, commit."""
        content = b"".join(self._context.content_chunks(delivery))
        try:
            event = parse_message(decode(content))
        except Hl7ContentError as exc:
            raise PermanentDeliveryError(f"HL7 content rejected by the registry: {exc}") \
                from exc
        if isinstance(event, Unhandled):
            kind = f"{event.header.message_type}^{event.header.trigger}".rstrip("^")
            return SendResult(detail=f"{kind} is not a message the registry keeps; ignored")
        ref = MessageRef(uid=delivery.message_uid, message_id=delivery.message_id,
                         channel=delivery.channel,
                         default_issuer=self._config.default_issuer or "")
        chain = f"{self._context.node_id}/registry/{delivery.channel}/{delivery.destination}"
        try:
            with self._context.database.write() as session:
                result = apply_event(session, event, ref, chain)
                marked = ledger.mark_changes(
                    session, orders=result.orders, patients=result.patients,
                    reason=_patient_change(event))
                # Studies queued for want of this order are tried again, in this commit.
                retried = retry_for_orders(session, result.orders,
                                           actor=f"channel:{delivery.channel}", chain=chain)
        except Hl7ContentError as exc:  # content the registry cannot apply, e.g. a bad merge
            raise PermanentDeliveryError(f"HL7 content rejected by the registry: {exc}") \
                from exc
        log.debug("delivery %s applied to the registry (applied=%s)", delivery.delivery_id,
                  result.applied)
        linked = sum(1 for _, decision in retried if decision.outcome is Outcome.LINKED)
        detail = result.summary + (f"; {linked} queued study(ies) linked" if linked else "") \
            + (f"; {marked} result(s) to revise" if marked else "")
        return SendResult(detail=detail)


def _patient_change(event: PatientEvent | OrderEvent) -> str:
    """Why a result of this patient is corrected (the text the receivers read)."""
    if isinstance(event, PatientEvent) and event.trigger is AdtTrigger.MERGE:
        return "patient merged (ADT A40)"
    return f"patient demographics updated (ADT {event.header.trigger})"


@destination_type("registry")
def _registry(config: RegistryDestination, context: AdapterContext) -> Destination:
    return RegistrySink(config, context)
