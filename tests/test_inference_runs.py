"""Inference in the engine, on the real store and blob store: routing records what is
skipped and why, each run is kept once with findings and provenance, failures are
retryable or final with a reason, only the tensor reaches the backend, and the study-ready
destination announces settled studies and asks for a retry while a backend is down."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from radbridge.engine import audit
from radbridge.engine.adapters import AdapterContext
from radbridge.engine.config import InferenceDestination
from radbridge.engine.config_loader import load_channel_files
from radbridge.engine.inference_runs import queries
from radbridge.engine.inference_runs.destination import InferenceRunner
from radbridge.engine.inference_runs.gate import PriorityGate
from radbridge.engine.inference_runs.service import RunStatus
from radbridge.engine.models import DicomInstance, InferenceRun
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.errors import ConfigError, TransientDeliveryError
from radbridge.inference.backends import BackendUnavailable, open_backend
from radbridge.inference.cards import ModelCard, load_cards
from tests.engine_harness import Harness, channel, harness
from tests.inference_support import SIZE, index_series, make_cards, service


@pytest.fixture
def cards_dir(tmp_path) -> Path:
    return make_cards(tmp_path)


@pytest.fixture
def h(database, tmp_path):
    with harness(database, tmp_path, [channel("dicom-in")]) as made:
        yield made


def runs(h: Harness) -> list[InferenceRun]:
    with h.database.read() as session:
        return list(session.execute(select(InferenceRun).order_by(InferenceRun.id)).scalars())


def test_a_study_runs_the_models_that_fit_and_records_the_rest_as_skipped(h, cards_dir,
                                                                          tmp_path):
    study_uid = index_series(h, tmp_path / "study")
    runner = service(h, cards_dir)
    plan = runner.plan(study_uid, 1)
    skipped = runner.record_skipped(plan)
    [assignment] = plan.routing.assignments
    done = runner.run(plan, assignment)
    assert [s.status for s in skipped] == [RunStatus.SKIPPED]
    assert "modality CT is not MR" in (skipped[0].reason or "")
    assert done.status == RunStatus.DONE and done.positive and done.emergent
    row = next(r for r in runs(h) if r.model_name == "toy-ct")
    card_ = next(c for _, c in load_cards([cards_dir]) if c.name == "toy-ct")
    assert (row.card_sha256, row.device_identifier, row.demonstration) == (
        card_.digest(), card_.device_identifier, True)
    assert row.instances == 10 and row.series_uid == assignment.series_uid
    [finding] = row.findings
    assert finding["code"] == "274100004" and finding["location"]["sop_instance_uid"]
    assert finding["measurements"][0]["unit"] == "mL"
    heatmap = np.load(h.blobs.path(row.heatmap_sha256))
    assert heatmap.shape == tuple(SIZE)
    assert row.grid["tensor_shape"] == SIZE and len(row.grid["planes"]) == 10
    assert row.grid["planes"][0]["sop_instance_uid"] != row.grid["planes"][-1]["sop_instance_uid"]
    # tried again (a delivery retried after a crash): nothing runs twice
    again = runner.run(plan, assignment)
    assert again == done and len(runs(h)) == 2 and runs(h)[-1].attempts == 1
    with h.database.read() as session:
        actions = [e.action for e in audit.query(session, audit.AuditQuery(limit=50))]
    assert actions.count("inference.run") == 1 and actions.count("inference.skipped") == 1
    with h.database.read() as session:
        [view] = queries.list_runs(session, queries.RunFilter(study_uid=study_uid,
                                                              positive=True))
    assert view["model_name"] == "toy-ct"


def test_a_series_with_a_missing_slice_or_over_budget_fails_for_good_with_the_reason(
        h, cards_dir, tmp_path):
    study_uid = index_series(h, tmp_path / "study")
    gap_study = index_series(h, tmp_path / "gap", seed=4)
    with h.database.write() as session:  # a slice in the middle replaced, not yet back
        middle = session.execute(select(DicomInstance).where(
            DicomInstance.study_uid == gap_study).order_by(DicomInstance.instance_number)
        ).scalars().all()[5]
        middle.current = False
    runner = service(h, cards_dir)
    plan = runner.plan(gap_study, 1)
    outcome = runner.run(plan, plan.routing.assignments[0])
    assert outcome.status == RunStatus.FINAL and "slices are missing" in (outcome.reason or "")
    tight = service(h, cards_dir, budget=1024)
    plan = tight.plan(study_uid, 1)
    outcome = tight.run(plan, plan.routing.assignments[0])
    assert outcome.status == RunStatus.FINAL and "over the budget" in (outcome.reason or "")


def test_a_card_that_does_not_fit_its_model_fails_for_good(h, cards_dir, tmp_path):
    document = yaml.safe_load((cards_dir / "toy-ct.yaml").read_text())
    document["inputs"] = {"volume": [1, 8, 16, 16]}
    (cards_dir / "toy-ct.yaml").write_text(yaml.safe_dump(document))
    (cards_dir / "toy-mr.yaml").unlink()
    study_uid = index_series(h, tmp_path / "study")
    runner = service(h, cards_dir)
    plan = runner.plan(study_uid, 1)
    outcome = runner.run(plan, plan.routing.assignments[0])
    assert outcome.status == RunStatus.FINAL and "input volume is" in (outcome.reason or "")


class Flaky:
    """Unavailable for the first `down` calls, then the real backend; records inputs."""

    def __init__(self, card_: ModelCard, folder: Path, down: int) -> None:
        self.real = open_backend(card_, folder)
        self.down = down
        self.seen: list[dict[str, Any]] = []

    def run(self, inputs, *, priority: int = 0):
        self.seen.append(dict(inputs))
        if self.down > 0:
            self.down -= 1
            raise BackendUnavailable("triton: connection refused")
        return self.real.run(inputs, priority=priority)

    def close(self) -> None:
        self.real.close()


def test_an_unavailable_backend_is_retryable_and_only_the_tensor_reaches_it(h, cards_dir,
                                                                            tmp_path):
    study_uid = index_series(h, tmp_path / "study", PatientName="SECRET^NAME")
    made: list[Flaky] = []

    def flaky(card_: ModelCard, folder: Path) -> Flaky:
        made.append(Flaky(card_, folder, down=1))
        return made[-1]

    runner = service(h, cards_dir, flaky)
    plan = runner.plan(study_uid, 1)
    first = runner.run(plan, plan.routing.assignments[0])
    assert first.status == RunStatus.RETRYABLE and "connection refused" in (first.reason or "")
    second = runner.run(plan, plan.routing.assignments[0])
    assert second.status == RunStatus.DONE and second.run_id == first.run_id
    assert runs(h)[0].attempts == 2
    [backend] = made
    for inputs in backend.seen:  # de-identification: a float tensor, nothing else
        assert list(inputs) == ["volume"]
        assert isinstance(inputs["volume"], np.ndarray)
        assert inputs["volume"].dtype == np.float32
        assert inputs["volume"].shape == (1, 1, *SIZE)


def ready(study_uid: str, version: int = 1) -> OutboundDelivery:
    now = datetime.now(UTC)
    content = json.dumps({"study_uid": study_uid, "version": version}).encode()
    return OutboundDelivery(1, 1, "m1", "study-ready", "infer", 1, 1, "k", "application/json",
                            content, None, len(content), now, now, study_uid=study_uid)


def test_the_destination_announces_settled_studies_and_retries_while_a_backend_is_down(
        h, cards_dir, tmp_path, monkeypatch):
    study_uid = index_series(h, tmp_path / "study")
    announced: list[Inbound] = []

    async def receive(inbound: Inbound) -> Receipt:
        announced.append(inbound)
        return Receipt(len(announced), f"u{len(announced)}", False)

    context = AdapterContext(tmp_path, h.blobs, 1024, receive, h.database)
    config = InferenceDestination.model_validate({
        "name": "infer", "type": "inference", "cards": [str(cards_dir)],
        "results_channel": "inference-done"})
    down = {"left": 1}
    real_open = open_backend

    def opener(card_: ModelCard, folder: Path, *, target=None):
        if down["left"]:
            down["left"] -= 1
            raise BackendUnavailable("triton: not ready")
        return real_open(card_, folder, target=target)

    monkeypatch.setattr("radbridge.engine.inference_runs.destination.open_backend", opener)
    runner = InferenceRunner(config, context)
    with pytest.raises(TransientDeliveryError, match="not ready"):
        asyncio.run(runner.send(ready(study_uid)))
    assert announced == []
    result = asyncio.run(runner.send(ready(study_uid)))
    asyncio.run(runner.close())
    assert "toy-ct:0.1.0 done positive" in result.detail
    [message] = announced
    document = json.loads(message.content or b"")
    assert (message.channel, message.dedup_key) == ("inference-done",
                                                    f"inference/{study_uid}/1")
    assert document["emergent"] is True
    assert sorted(r["status"] for r in document["runs"]) == ["done", "skipped"]


def test_stat_studies_overtake_routine_ones_waiting_for_the_model_slot():
    async def scenario() -> list[str]:
        gate = PriorityGate(1)
        order: list[str] = []
        release = asyncio.Event()

        async def job(name: str, rank: int, hold: asyncio.Event | None = None) -> None:
            async with gate.slot(rank):
                order.append(name)
                if hold is not None:
                    await hold.wait()

        first = asyncio.create_task(job("running", 2, release))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(job("routine-1", 2)),
                   asyncio.create_task(job("routine-2", 2))]
        await asyncio.sleep(0)
        waiting.append(asyncio.create_task(job("stat", 0)))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, *waiting)
        return order

    assert asyncio.run(scenario()) == ["running", "stat", "routine-1", "routine-2"]


def test_validate_names_a_broken_model_card_and_an_unknown_model(cards_dir, tmp_path):
    document = yaml.safe_load((cards_dir / "toy-mr.yaml").read_text())
    document["findings"][0]["treshold"] = 0.5
    (cards_dir / "toy-mr.yaml").write_text(yaml.safe_dump(document))
    channels = tmp_path / "channels"
    channels.mkdir()
    (channels / "ready.yaml").write_text(
        "name: ready\nsource: {type: channel}\ndestinations:\n"
        f"  - {{name: infer, type: inference, cards: [{cards_dir}]}}\n"
        "  - name: infer2\n    type: inference\n    models: [no-such-model]\n")
    with pytest.raises(ConfigError) as caught:
        load_channel_files([channels])
    found = {(issue.path, issue.message.split(":")[0]) for issue in caught.value.issues}
    assert ("destinations[0].cards", f"model card {cards_dir / 'toy-mr.yaml'}") in found
    assert any(issue.path == "destinations[1].models[0]" and "no-such-model" in issue.message
               for issue in caught.value.issues)
