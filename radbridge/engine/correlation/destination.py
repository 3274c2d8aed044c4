"""The `correlation` destination: put it on the study-ready channel, and each complete
study is linked to its order(s) or queued for reconciliation as it is announced."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import CorrelationDestination
from radbridge.engine.correlation.service import (
    CorrelationError,
    Settings,
    correlate_study,
)
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.results.revisions import send_pending
from radbridge.errors import PermanentDeliveryError
from radbridge.mappings.correlation import Rule


class Correlator:
    """Correlates in one write transaction per delivery (on a thread)."""

    def __init__(self, config: CorrelationDestination, context: AdapterContext) -> None:
        self._context = context
        self._settings = Settings(tuple(Rule(r) for r in config.rules),
                                  timedelta(seconds=config.window))
        self._name = config.name

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        decided = await asyncio.to_thread(self.apply, delivery)
        # a link may have adopted study-only results: their corrections go out now
        await send_pending(self._context,
                           origin=f"correlation:{delivery.channel}/{delivery.destination}")
        return decided

    async def close(self) -> None:
        return None

    def apply(self, delivery: OutboundDelivery) -> SendResult:
        study_uid = delivery.study_uid or self._study_of(delivery)
        chain = f"{self._context.node_id}/correlation/{delivery.channel}/{self._name}"
        try:
            with self._context.database.write() as session:
                decision = correlate_study(session, study_uid, self._settings,
                                           actor=f"channel:{delivery.channel}", chain=chain)
        except CorrelationError as exc:
            raise PermanentDeliveryError(str(exc)) from exc
        orders = ", ".join(map(str, decision.order_ids)) or "none"
        return SendResult(detail=f"{decision.outcome.value}: {decision.reason} (orders {orders})")

    def _study_of(self, delivery: OutboundDelivery) -> str:
        content = b"".join(self._context.content_chunks(delivery))
        try:
            study_uid = json.loads(content)["study_uid"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentDeliveryError(
                "expected a study-ready message (JSON with study_uid)") from exc
        if not isinstance(study_uid, str) or not study_uid:
            raise PermanentDeliveryError("the study-ready message has no study_uid")
        return study_uid


@destination_type("correlation")
def _correlation(config: CorrelationDestination, context: AdapterContext) -> Destination:
    return Correlator(config, context)
