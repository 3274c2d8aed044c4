"""`export_repository` writes a Triton model repository from model cards: one folder per
card, config.pbtxt from the card and its ONNX graph, version 1/ with the model.

The CPU test server cannot load Triton's onnxruntime backend, so for that backend only
the files are checked here; the python backend is served for real in
test_triton_backend.py."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import yaml
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc

from radbridge.inference.backends import BackendMismatch
from radbridge.inference.cards import ModelCard, load_cards
from radbridge.inference.triton_export import TritonExportError, export_repository
from tests.test_model_cards import card
from tests.test_onnx_backend import mean_sigmoid_model


def parse(folder: Path) -> mc.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())


@pytest.fixture
def cards(tmp_path) -> list[tuple[Path, ModelCard]]:
    folder = tmp_path / "cards"
    folder.mkdir()
    mean_sigmoid_model(folder / "ich-ct.onnx", [1, 32, 64, 64])
    (folder / "ich.yaml").write_text(yaml.safe_dump(card()))
    return load_cards([folder])


def test_onnxruntime_export_writes_config_and_model(cards, tmp_path):
    [folder] = export_repository(cards, tmp_path / "repo")
    assert folder == tmp_path / "repo" / "ich-ct"
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.onnx"]
    assert (folder / "1" / "model.onnx").read_bytes() == (
        tmp_path / "cards" / "ich-ct.onnx").read_bytes()
    config = parse(folder)
    assert (config.name, config.backend, config.max_batch_size) == ("ich-ct", "onnxruntime", 8)
    [volume] = config.input
    assert (volume.name, volume.data_type, list(volume.dims)) == (
        "volume", mc.TYPE_FP32, [1, 32, 64, 64])
    [probability] = config.output
    assert (probability.name, list(probability.dims)) == ("probability", [1])
    batcher = config.dynamic_batching
    assert 0 < batcher.max_queue_delay_microseconds <= 1000
    assert (batcher.priority_levels, batcher.default_priority_level) == (2, 2)
    assert config.parameters["radbridge_card_version"].string_value == "0.1.0"
    assert config.parameters["radbridge_card_sha256"].string_value == cards[0][1].digest()
    assert not config.instance_group  # Triton places it (GPU where there is one)


def test_python_export_adds_a_model_py_that_wraps_onnxruntime(cards, tmp_path):
    [folder] = export_repository(cards, tmp_path / "repo", backend="python",
                                 max_batch_size=4)
    config = parse(folder)
    assert (config.backend, config.max_batch_size) == ("python", 4)
    [group] = config.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_CPU
    source = (folder / "1" / "model.py").read_text()
    compile(source, "model.py", "exec")
    assert "class TritonPythonModel" in source and "onnxruntime.InferenceSession" in source
    assert "BATCHING = True" in source
    # exporting again replaces the folder instead of mixing old and new files
    export_repository(cards, tmp_path / "repo", backend="onnxruntime")
    assert not (folder / "1" / "model.py").exists()


def test_a_model_without_a_batch_dimension_gets_no_batching(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["volume"], ["probability"], keepdims=0,
                          axes=[2, 3, 4])],
        "fixed",
        [helper.make_tensor_value_info("volume", TensorProto.FLOAT, [1, 1, 32, 64, 64])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "ich-ct.onnx")
    (tmp_path / "ich.yaml").write_text(yaml.safe_dump(card()))
    [folder] = export_repository(load_cards([tmp_path]), tmp_path / "repo", backend="python")
    config = parse(folder)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 1, 32, 64, 64]
    assert list(config.output[0].dims) == [1, 1]
    assert "BATCHING = False" in (folder / "1" / "model.py").read_text()


def test_cards_that_cannot_be_exported_are_refused(cards, tmp_path):
    path, ich = cards[0]
    mismatched = ModelCard.model_validate(card(inputs={"volume": [1, 16, 64, 64]}))
    with pytest.raises(BackendMismatch, match="input volume"):
        export_repository([(path, mismatched)], tmp_path / "repo")
    newer = ModelCard.model_validate(card(version="0.2.0"))
    with pytest.raises(TritonExportError, match="same name"):
        export_repository([(path, ich), (path, newer)], tmp_path / "repo")
    remote = ModelCard.model_validate(card(backend={"kind": "triton", "model": "ich"}))
    with pytest.raises(TritonExportError, match="no ONNX file"):
        export_repository([(path, remote)], tmp_path / "repo")
    (tmp_path / "cards" / "ich-ct.onnx").write_bytes(b"not a model")
    with pytest.raises(TritonExportError, match="cannot read"):
        export_repository(cards, tmp_path / "repo")
