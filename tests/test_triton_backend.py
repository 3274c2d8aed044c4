"""The Triton backend against a real tritonserver (tests/peers/triton.py): models exported
with `--backend python` are served and inferred over HTTP and gRPC, agree with ONNX
Runtime in-process, are checked against their card at start-up, and every failure the
issue names (mismatch, server down, server slow, NaN outputs) becomes the right error.

Parity: Triton's Python backend runs the same ONNX graph with onnxruntime, so outputs
must agree with the in-process backend within PARITY_ATOL (absolute, on probabilities);
a float32 reduction in another order may differ in the last bits, never more.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from radbridge.inference.backends import (
    ROUTINE,
    STAT,
    BackendError,
    BackendMismatch,
    BackendUnavailable,
    OnnxRuntimeBackend,
    TritonTarget,
    open_backend,
)
from radbridge.inference.breaker import CircuitBreaker, CircuitOpen, State
from radbridge.inference.cards import ModelCard, load_cards
from radbridge.inference.findings import findings
from radbridge.inference.triton import (
    ModelNotReady,
    TritonBackend,
    TritonTimeout,
    _WorkerPool,
    shared_breaker,
)
from radbridge.inference.triton_export import export_repository
from tests.peers.triton import TritonServer, free_port
from tests.test_model_cards import card
from tests.test_onnx_backend import mean_sigmoid_model

PARITY_ATOL = 1e-6
"""Largest absolute difference allowed between Triton's and in-process probabilities."""
SHAPE = [1, 8, 16, 16]
SLOW_SECONDS = 1.5
"""The slow model's sleep; the client timeout in its test is well under it."""
PROTOCOLS = ("http", "grpc")

SLOW_MODEL = f'''\
"""Test-only: answers after {SLOW_SECONDS} s, longer than the client will wait."""
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep({SLOW_SECONDS})
        responses = []
        for request in requests:
            size = len(pb_utils.get_input_tensor_by_name(request, "volume").as_numpy())
            value = np.full((size, 1), 0.5, dtype=np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("probability",
                                                                         value)]))
        return responses
'''


@dataclass
class Deployed:
    server: TritonServer
    folder: Path
    ich: ModelCard
    nan: ModelCard
    slow: ModelCard

    def url(self, protocol: str) -> str:
        return self.server.http_url if protocol == "http" else self.server.grpc_url


def small_card(**changes: object) -> dict[str, object]:
    return card(inputs={"volume": SHAPE},
                preprocessing={"kind": "volume", "size": SHAPE[1:]}, **changes)


def nan_model(path: Path) -> Path:
    """probability = NaN * mean(volume): a model that misbehaves."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["volume"], ["mean"], keepdims=0, axes=[1, 2, 3, 4]),
         helper.make_node("Mul", ["mean", "nan"], ["flat"]),
         helper.make_node("Unsqueeze", ["flat", "axis"], ["probability"])],
        "nan",
        [helper.make_tensor_value_info("volume", TensorProto.FLOAT, ["batch", *SHAPE])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        initializer=[helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")]),
                     helper.make_tensor("axis", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def deployed(triton_server: TritonServer, tmp_path_factory: pytest.TempPathFactory
             ) -> Deployed:
    """ich-ct and nan-model exported with --backend python, slow-model written by hand,
    all loaded into the session's server."""
    folder = tmp_path_factory.mktemp("triton-cards")
    mean_sigmoid_model(folder / "ich-ct.onnx", SHAPE, scale=10.0)
    nan_model(folder / "nan.onnx")
    (folder / "ich.yaml").write_text(yaml.safe_dump(small_card()))
    (folder / "nan.yaml").write_text(yaml.safe_dump(small_card(
        name="nan-model", backend={"kind": "onnx", "path": "nan.onnx"})))
    cards = load_cards([folder])
    export_repository(cards, triton_server.repository, backend="python")
    slow = triton_server.repository / "slow-model"
    (slow / "1").mkdir(parents=True, exist_ok=True)
    (slow / "1" / "model.py").write_text(SLOW_MODEL)
    (slow / "config.pbtxt").write_text(
        'name: "slow-model"\nbackend: "python"\nmax_batch_size: 8\n'
        'input { name: "volume" data_type: TYPE_FP32 dims: [1, 8, 16, 16] }\n'
        'output { name: "probability" data_type: TYPE_FP32 dims: [1] }\n'
        "instance_group { kind: KIND_CPU count: 1 }\n")
    for name in ("ich-ct", "nan-model", "slow-model"):
        triton_server.load(name)
    by_name = {c.name: c for _, c in cards}
    slow_card = ModelCard.model_validate(small_card(name="slow-model"))
    return Deployed(triton_server, folder, by_name["ich-ct"], by_name["nan-model"],
                    slow_card)


def volumes(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((count, *SHAPE), dtype=np.float32)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_served_model_matches_onnxruntime_in_process(deployed, protocol):
    local = OnnxRuntimeBackend(deployed.ich, deployed.folder)
    remote = open_backend(deployed.ich, deployed.folder,
                          target=TritonTarget(deployed.url(protocol), protocol, timeout=10))
    try:
        batch = volumes(3) * np.asarray([0.2, 1.0, 1.8], np.float32)[:, None, None, None, None]
        expected = local.run({"volume": batch})["probability"]
        got = remote.run({"volume": batch})["probability"]
        assert got.shape == expected.shape == (3, 1)
        assert np.allclose(got, expected, rtol=0, atol=PARITY_ATOL)
        assert len({round(float(v), 3) for v in got[:, 0]}) == 3  # distinct, not constant
        for item in range(3):
            assert findings(deployed.ich, {"probability": got}, item) == findings(
                deployed.ich, {"probability": expected}, item)
    finally:
        remote.close()
        local.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_card_with_a_triton_section_and_stat_priority(deployed, protocol):
    document = small_card(backend={"kind": "triton", "model": "ich-ct", "protocol": protocol,
                                   "url": deployed.url(protocol), "timeout": 10})
    remote = open_backend(ModelCard.model_validate(document), deployed.folder)
    try:
        assert isinstance(remote, TritonBackend)
        batch = volumes(2, seed=4)
        stat = remote.run({"volume": batch}, priority=STAT)["probability"]
        routine = remote.run({"volume": batch}, priority=ROUTINE)["probability"]
        assert np.array_equal(stat, routine)
    finally:
        remote.close()


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(deployed):
    remote = TritonBackend(deployed.ich, model="ich-ct", url=deployed.server.grpc_url,
                           protocol="grpc", timeout=10, concurrency=4)
    local = OnnxRuntimeBackend(deployed.ich, deployed.folder)
    try:
        inputs = [volumes(1, seed=s) * s / 10 for s in range(1, 17)]
        futures = [remote.submit({"volume": v}, priority=STAT if s % 2 else ROUTINE)
                   for s, v in enumerate(inputs)]
        for future, volume in zip(futures, inputs, strict=True):
            expected = local.run({"volume": volume})["probability"]
            assert np.allclose(future.result(timeout=30)["probability"], expected,
                               rtol=0, atol=PARITY_ATOL)
    finally:
        remote.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_card_that_does_not_match_the_deployed_model_is_refused_at_start(deployed,
                                                                           protocol):
    url = deployed.url(protocol)
    wider = ModelCard.model_validate(card(inputs={"volume": [1, 16, 16, 16]}))
    with pytest.raises(BackendMismatch, match=r"input volume is \[1, 8, 16, 16\] in the "
                                              r"model, \[1, 16, 16, 16\] in the card"):
        TritonBackend(wider, model="ich-ct", url=url, protocol=protocol)
    renamed = ModelCard.model_validate(small_card(findings=[{
        "output": "score", "threshold": 0.5,
        "finding": {"code": "274100004", "system": "SCT", "display": "Cerebral hemorrhage"}}]))
    with pytest.raises(BackendMismatch, match="no output"):
        TritonBackend(renamed, model="ich-ct", url=url, protocol=protocol)
    newer = ModelCard.model_validate(small_card(version="0.2.0"))
    with pytest.raises(BackendMismatch, match=r"card version 0\.1\.0"):
        TritonBackend(newer, model="ich-ct", url=url, protocol=protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_model_that_is_not_deployed_is_unavailable(deployed, protocol):
    breaker = CircuitBreaker("absent", failures=1)
    with pytest.raises(ModelNotReady, match="model is not ready"):
        TritonBackend(deployed.ich, model="absent", url=deployed.url(protocol),
                      protocol=protocol, attempts=2, breaker=breaker)
    assert breaker.state is State.CLOSED  # the server itself answered


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_triton_down_fails_fast_and_opens_the_breaker(protocol):
    ich = ModelCard.model_validate(small_card())
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    breaker = CircuitBreaker("down", failures=3, reset_after=60)
    began = time.monotonic()
    with pytest.raises(BackendUnavailable, match="liveness failed") as caught:
        TritonBackend(ich, model="ich-ct", url=url, protocol=protocol, timeout=30,
                      breaker=breaker)
    assert not isinstance(caught.value, CircuitOpen)
    assert time.monotonic() - began < 10, "refused connections must not wait out timeouts"
    assert breaker.state is State.OPEN  # three attempts, three failures
    with pytest.raises(CircuitOpen):
        TritonBackend(ich, model="ich-ct", url=url, protocol=protocol, breaker=breaker)


def test_backends_for_one_server_share_its_breaker():
    """A card opened again after a failed start-up keeps counting, then fails fast."""
    ich = ModelCard.model_validate(small_card())
    url = f"127.0.0.1:{free_port()}"
    assert shared_breaker("grpc", url) is shared_breaker("grpc", f"grpc://{url}/")
    for _ in range(2):  # 3 attempts each; the shared breaker opens at 5 failures
        with pytest.raises(BackendUnavailable):
            TritonBackend(ich, model="ich-ct", url=url, protocol="grpc")
    assert shared_breaker("grpc", url).state is State.OPEN
    with pytest.raises(CircuitOpen):
        TritonBackend(ich, model="other", url=url, protocol="grpc")
    assert shared_breaker("http", url).state is State.CLOSED


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_triton_slower_than_the_timeout_is_unavailable(deployed, protocol):
    remote = TritonBackend(deployed.slow, model="slow-model", url=deployed.url(protocol),
                           protocol=protocol, timeout=SLOW_SECONDS / 5)
    try:
        with pytest.raises(TritonTimeout) as caught:
            remote.run({"volume": volumes(1)})
        assert isinstance(caught.value, BackendUnavailable)
        assert remote.breaker.state is State.CLOSED  # one failure, not retried
    finally:
        remote.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_model_that_returns_nan_gives_no_findings(deployed, protocol):
    remote = TritonBackend(deployed.nan, model="nan-model", url=deployed.url(protocol),
                           protocol=protocol)
    try:
        outputs = remote.run({"volume": volumes(1)})
        assert np.isnan(outputs["probability"]).all()
        with pytest.raises(BackendError, match="not a probability"):
            findings(deployed.nan, outputs)
    finally:
        remote.close()


def test_a_closed_backend_refuses_work(deployed):
    remote = TritonBackend(deployed.ich, model="ich-ct", url=deployed.server.http_url)
    remote.close()
    with pytest.raises(BackendError, match="closed"):
        remote.run({"volume": volumes(1)})


def test_queued_requests_are_taken_stat_first():
    pool = _WorkerPool(1, lambda: None)
    started, release, order = threading.Event(), threading.Event(), []

    def blocker(_client: object) -> None:
        started.set()
        release.wait(10)

    def job(label: str):
        return lambda _client: order.append(label)

    try:
        first = pool.submit(blocker, ROUTINE)
        started.wait(10)
        queued = [pool.submit(job("routine-1"), ROUTINE), pool.submit(job("stat-1"), STAT),
                  pool.submit(job("routine-2"), ROUTINE), pool.submit(job("stat-2"), STAT)]
        release.set()
        for future in [first, *queued]:
            future.result(timeout=10)
        assert order == ["stat-1", "stat-2", "routine-1", "routine-2"]
    finally:
        pool.close()
