"""The engine's inference destination with `triton:` set runs a study's model on a real
tritonserver (the card's ONNX exported with --backend python) and records the same
findings as in-process; with the server gone, the run is failed-retryable, and the
delivery asks to be tried again."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from radbridge.engine.adapters import AdapterContext
from radbridge.engine.config import InferenceDestination
from radbridge.engine.inference_runs.destination import InferenceRunner
from radbridge.engine.models import InferenceRun
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.errors import TransientDeliveryError
from radbridge.inference.cards import load_cards
from radbridge.inference.triton_export import export_repository
from tests.engine_harness import channel, harness
from tests.inference_support import index_series, make_cards
from tests.peers.triton import TritonServer
from tests.test_triton_backend import PARITY_ATOL


@pytest.fixture
def h(database, tmp_path):
    with harness(database, tmp_path, [channel("dicom-in")]) as made:
        yield made


def ready(study_uid: str) -> OutboundDelivery:
    now = datetime.now(UTC)
    content = json.dumps({"study_uid": study_uid, "version": 1}).encode()
    return OutboundDelivery(1, 1, "m1", "study-ready", "infer", 1, 1, "k", "application/json",
                            content, None, len(content), now, now, study_uid=study_uid)


def runner(h, tmp_path: Path, cards: Path, triton: dict | None) -> InferenceRunner:
    async def receive(inbound: Inbound) -> Receipt:
        return Receipt(1, "u", False)

    document = {"name": "infer", "type": "inference", "cards": [str(cards)],
                "models": ["toy-ct"]}
    if triton is not None:
        document["triton"] = triton
    return InferenceRunner(InferenceDestination.model_validate(document),
                           AdapterContext(tmp_path, h.blobs, 1024, receive, h.database))


def findings_of(h, study_uid: str) -> tuple[str, list[dict]]:
    with h.database.read() as session:
        row = session.execute(select(InferenceRun).where(
            InferenceRun.study_uid == study_uid, InferenceRun.status == "done")).scalar_one()
        return row.backend, row.findings


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_study_runs_on_triton_like_in_process(h, tmp_path, triton_server: TritonServer,
                                                 protocol):
    cards = make_cards(tmp_path)
    export_repository(load_cards([cards]), triton_server.repository, backend="python")
    triton_server.load("toy-ct")
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    on_triton = index_series(h, tmp_path / "a", seed=21)
    in_process = index_series(h, tmp_path / "b", seed=21,
                              study_uid="1.2.826.0.1.3680043.10.1234.99")
    remote = runner(h, tmp_path, cards, {"url": url, "protocol": protocol, "timeout": 20})
    local = runner(h, tmp_path, cards, None)
    asyncio.run(remote.send(ready(on_triton)))
    asyncio.run(local.send(ready(in_process)))
    for made in (remote, local):
        asyncio.run(made.close())
    backend, remote_findings = findings_of(h, on_triton)
    _, local_findings = findings_of(h, in_process)
    assert backend == f"triton-{protocol}"
    assert remote_findings[0]["probability"] == pytest.approx(
        local_findings[0]["probability"], abs=PARITY_ATOL)
    assert remote_findings[0]["location"]["row"] == local_findings[0]["location"]["row"]


def test_triton_gone_makes_the_run_retryable(h, tmp_path):
    cards = make_cards(tmp_path)
    study_uid = index_series(h, tmp_path / "a")
    down = runner(h, tmp_path, cards, {"url": "127.0.0.1:9", "protocol": "http",
                                       "timeout": 2})
    with pytest.raises(TransientDeliveryError):
        asyncio.run(down.send(ready(study_uid)))
    asyncio.run(down.close())
    with h.database.read() as session:
        row = session.execute(select(InferenceRun)).scalar_one()
    assert row.status == "failed-retryable" and row.backend == "triton-http"
