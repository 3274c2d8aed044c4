"""The ONNX Runtime backend runs a real ONNX graph, is checked against its card at load,
and findings refuse what is not a probability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from radbridge.inference.backends import BackendError, BackendMismatch, OnnxRuntimeBackend
from radbridge.inference.cards import ModelCard
from radbridge.inference.findings import findings
from tests.test_model_cards import card


def mean_sigmoid_model(path: Path, shape: list[int], *, output: str = "probability",
                       scale: float = 1.0) -> Path:
    """probability = sigmoid(scale * (mean(volume) - 0.5)), batch dimension dynamic."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["volume"], ["mean"], keepdims=0,
                          axes=list(range(1, len(shape) + 1))),
         helper.make_node("Sub", ["mean", "half"], ["centred"]),
         helper.make_node("Mul", ["centred", "scale"], ["scaled"]),
         helper.make_node("Sigmoid", ["scaled"], ["flat"]),
         helper.make_node("Unsqueeze", ["flat", "axis"], [output])],
        "demo",
        [helper.make_tensor_value_info("volume", TensorProto.FLOAT, ["batch", *shape])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", 1])],
        initializer=[helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
                     helper.make_tensor("scale", TensorProto.FLOAT, [], [scale]),
                     helper.make_tensor("axis", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def ich(tmp_path) -> ModelCard:
    mean_sigmoid_model(tmp_path / "ich-ct.onnx", [1, 32, 64, 64], scale=20.0)
    return ModelCard.model_validate(card())


def test_a_real_onnx_graph_gives_findings_by_the_card(ich, tmp_path):
    backend = OnnxRuntimeBackend(ich, tmp_path)
    bright = np.full((1, 1, 32, 64, 64), 0.9, dtype=np.float32)
    dark = np.full((1, 1, 32, 64, 64), 0.1, dtype=np.float32)
    outputs = backend.run({"volume": np.concatenate([bright, dark])})
    expected = 1 / (1 + np.exp(-20 * np.asarray([0.4, -0.4])))
    assert np.allclose(outputs["probability"][:, 0], expected, atol=1e-5)
    [positive] = findings(ich, outputs, 0)
    [negative] = findings(ich, outputs, 1)
    assert (positive.positive, positive.emergent, positive.code.code) == (True, True,
                                                                          "274100004")
    assert (negative.positive, negative.emergent) == (False, False)


def test_a_card_that_does_not_fit_the_model_is_refused_at_load(tmp_path):
    mean_sigmoid_model(tmp_path / "ich-ct.onnx", [1, 16, 64, 64])
    with pytest.raises(BackendMismatch, match=r"input volume is \[1, 16, 64, 64\]"):
        OnnxRuntimeBackend(ModelCard.model_validate(card()), tmp_path)
    mean_sigmoid_model(tmp_path / "ich-ct.onnx", [1, 32, 64, 64], output="score")
    with pytest.raises(BackendMismatch, match="no output"):
        OnnxRuntimeBackend(ModelCard.model_validate(card()), tmp_path)
    (tmp_path / "ich-ct.onnx").write_bytes(b"not a model")
    with pytest.raises(BackendError, match="cannot load"):
        OnnxRuntimeBackend(ModelCard.model_validate(card()), tmp_path)


def test_nan_or_out_of_range_outputs_are_errors_not_negatives(ich):
    for bad in (np.nan, 1.5, -0.1):
        with pytest.raises(BackendError, match="not a probability"):
            findings(ich, {"probability": np.asarray([[bad]], dtype=np.float32)})
