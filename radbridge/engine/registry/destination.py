"""The `registry` destination: applies each delivered ADT or order message to the registry.

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
from radbridge.errors import PermanentDeliveryError
from radbridge.mappings.correlation import Outcome
from radbridge.mappings.hl7.errors import Hl7ContentError
from radbridge.mappings.hl7.inbound import Unhandled, parse_message
from radbridge.mappings.hl7.reading import decode

log = logging.getLogger(__name__)


class RegistrySink:
    """Parses the delivery's HL7 and applies it in one write transaction (on a thread)."""

    def __init__(self, config: RegistryDestination, context: AdapterContext) -> None:
        self._config = config
        self._context = context

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        return await asyncio.to_thread(self.apply, delivery)

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
                # Studies queued for want of this order are tried again, in this commit.
                retried = retry_for_orders(session, result.orders,
                                           actor=f"channel:{delivery.channel}", chain=chain)
        except Hl7ContentError as exc:  # content the registry cannot apply, e.g. a bad merge
            raise PermanentDeliveryError(f"HL7 content rejected by the registry: {exc}") \
                from exc
        log.debug("delivery %s applied to the registry (applied=%s)", delivery.delivery_id,
                  result.applied)
        linked = sum(1 for _, decision in retried if decision.outcome is Outcome.LINKED)
        detail = result.summary + (f"; {linked} queued study(ies) linked" if linked else "")
        return SendResult(detail=detail)


@destination_type("registry")
def _registry(config: RegistryDestination, context: AdapterContext) -> Destination:
    return RegistrySink(config, context)
