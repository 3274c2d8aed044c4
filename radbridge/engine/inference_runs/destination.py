"""The `inference` destination: put it on the study-ready channel, and each complete
study runs through the models that apply to it (see service.py). When every model has
settled, one message per study version goes to `results_channel` for the renderers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import InferenceDestination
from radbridge.engine.inference_runs.gate import PriorityGate
from radbridge.engine.inference_runs.service import (
    InferenceService,
    Plan,
    RunOutcome,
    RunStatus,
)
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.receiver import Inbound
from radbridge.errors import AdapterSetupError, PermanentDeliveryError, TransientDeliveryError
from radbridge.inference.backends import Backend, TritonTarget, open_backend
from radbridge.inference.cards import ModelCard, find_card, load_cards, shipped_folder

RESULTS_CONTENT_TYPE = "application/vnd.radbridge.inference+json"


def chosen_cards(config: InferenceDestination, context: AdapterContext
                 ) -> list[tuple[Path, ModelCard]]:
    """The cards the destination runs; ConfigError for a bad card, AdapterSetupError for
    a model name that no card has."""
    folders = [context.resolve(p) for p in config.cards] or [shipped_folder()]
    cards = load_cards(folders)
    if not config.models:
        return cards
    chosen = []
    for wanted in config.models:
        found = find_card(cards, wanted)
        if found is None:
            raise AdapterSetupError(f"{config.name}: no model card {wanted}; known: "
                                    f"{', '.join(c.key for _, c in cards) or 'none'}")
        chosen.append(found)
    return chosen


class InferenceRunner:
    def __init__(self, channel_config: InferenceDestination, context: AdapterContext) -> None:
        self._config = channel_config
        self._context = context
        target = None
        label = "onnxruntime"
        if channel_config.triton is not None:
            triton = channel_config.triton
            target = TritonTarget(url=triton.url, protocol=triton.protocol,
                                  timeout=triton.timeout)
            label = f"triton-{triton.protocol}"

        def backend_for(card: ModelCard, folder: Path) -> Backend:
            return open_backend(card, folder, target=target)

        self._service = InferenceService(
            context.database, context.blobs, chosen_cards(channel_config, context),
            backend_for, backend_label=label,
            budget_bytes=channel_config.memory_budget_mb * 2**20,
            chain=f"{context.node_id}/inference/{channel_config.name}",
            actor=f"destination:{channel_config.name}", qa_strata=channel_config.qa_strata)
        self._gate = PriorityGate(channel_config.parallel)

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        study_uid, version = self._ready_study(delivery)
        plan = await asyncio.to_thread(self._service.plan, study_uid, version)
        async with self._gate.slot(plan.order.rank):
            outcomes = await asyncio.to_thread(self._run_all, plan)
        waiting = [o for o in outcomes if o.status == RunStatus.RETRYABLE]
        if waiting:
            raise TransientDeliveryError("; ".join(f"{o.model}: {o.reason}" for o in waiting))
        if self._config.results_channel is not None:
            await self._announce(plan, outcomes, delivery)
        summary = ", ".join(f"{o.model} {o.status.value}"
                            + (" positive" if o.positive else "") for o in outcomes)
        return SendResult(detail=summary or "no model card")

    async def close(self) -> None:
        await asyncio.to_thread(self._service.close)

    def _run_all(self, plan: Plan) -> list[RunOutcome]:
        outcomes = self._service.record_skipped(plan)
        for assignment in plan.routing.assignments:
            outcomes.append(self._service.run(plan, assignment))
        return outcomes

    async def _announce(self, plan: Plan, outcomes: list[RunOutcome],
                        delivery: OutboundDelivery) -> None:
        assert self._config.results_channel is not None
        document: dict[str, Any] = {
            "study_uid": plan.study_uid, "version": plan.version,
            "emergent": any(o.emergent for o in outcomes),
            "runs": [{"run_id": o.run_id, "model": o.model, "status": o.status.value,
                      "reason": o.reason, "positive": o.positive, "emergent": o.emergent}
                     for o in outcomes]}
        await self._context.receive(Inbound(
            channel=self._config.results_channel, content_type=RESULTS_CONTENT_TYPE,
            source=f"inference:{delivery.channel}/{self._config.name}",
            content=json.dumps(document).encode(),
            dedup_key=f"inference/{plan.study_uid}/{plan.version}",
            patient_id=plan.patient_id, accession=plan.accession, study_uid=plan.study_uid,
            metadata={"version": str(plan.version),
                      "emergent": "true" if document["emergent"] else "false"}))

    def _ready_study(self, delivery: OutboundDelivery) -> tuple[str, int]:
        content = b"".join(self._context.content_chunks(delivery))
        try:
            document = json.loads(content)
            study_uid, version = document["study_uid"], int(document.get("version", 1))
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentDeliveryError(
                "expected a study-ready message (JSON with study_uid and version)") from exc
        if not isinstance(study_uid, str) or not study_uid:
            raise PermanentDeliveryError("the study-ready message has no study_uid")
        return study_uid, version


@destination_type("inference")
def _inference(config: InferenceDestination, context: AdapterContext) -> Destination:
    return InferenceRunner(config, context)
