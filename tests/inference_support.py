"""Model cards with tiny real ONNX models and studies indexed as a receiver would, for
the engine's inference and results tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pydicom
import yaml
from onnx import TensorProto, helper

from radbridge.engine.inference_runs.service import InferenceService
from radbridge.inference.backends import open_backend
from radbridge.inference.cards import load_cards
from radbridge.interfaces.dicom_inbound import instance_inbound
from radbridge.mappings.dicom.index import read_instance
from tests import dicom_data
from tests.engine_harness import Harness
from tests.test_model_cards import card

SIZE = [6, 16, 16]
CHAIN = "test/inference"


def heatmap_model(path: Path, *, scale: float) -> None:
    """probability = sigmoid(scale * (mean(volume) - 0.5)); heatmap = the volume itself."""
    spatial = ["batch", *SIZE]
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["volume"], ["mean"], keepdims=0, axes=[1, 2, 3, 4]),
         helper.make_node("Sub", ["mean", "half"], ["centred"]),
         helper.make_node("Mul", ["centred", "scale"], ["scaled"]),
         helper.make_node("Sigmoid", ["scaled"], ["flat"]),
         helper.make_node("Unsqueeze", ["flat", "axis"], ["probability"]),
         helper.make_node("Squeeze", ["volume", "axis"], ["heatmap"])],
        "test",
        [helper.make_tensor_value_info("volume", TensorProto.FLOAT, ["batch", 1, *SIZE])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, spatial)],
        initializer=[helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
                     helper.make_tensor("scale", TensorProto.FLOAT, [], [scale]),
                     helper.make_tensor("axis", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def write_card(folder: Path, name: str, *, scale: float = 1.0, **changes: Any) -> None:
    fields: dict[str, Any] = {
        "name": name, "backend": {"kind": "onnx", "path": f"{name}.onnx"},
        "inputs": {"volume": [1, *SIZE]}, "series": {"modalities": ["CT"], "min_instances": 4},
        "preprocessing": {"kind": "volume", "size": SIZE,
                          "window": {"min": -1000, "max": 1000}}}
    document = card(**{**fields, **changes})
    document["findings"][0]["heatmap"] = "heatmap"
    document["findings"][0]["threshold"] = 0.0001  # this toy model is always positive
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(document))
    heatmap_model(folder / f"{name}.onnx", scale=scale)


def index_series(h: Harness, folder: Path, count: int = 10, seed: int = 3,
                 **attributes: Any) -> str:
    """Write a CT series, store each file as a blob and index it as a receiver would."""
    paths = dicom_data.make_ct_series(folder, count, rows=32, columns=32, seed=seed,
                                      **attributes)
    for path in paths:
        dataset = pydicom.dcmread(path)
        ref = h.blobs.put_bytes(path.read_bytes())
        record = read_instance(dataset, str(dataset.file_meta.TransferSyntaxUID))
        h.receiver.receive_sync(instance_inbound(channel="dicom-in", source="test", blob=ref,
                                                 record=record))
    return str(pydicom.dcmread(paths[0]).StudyInstanceUID)


def service(h: Harness, cards_dir: Path, backend_for=open_backend, *,
            budget: int = 2**30, qa_strata: tuple[str, ...] = ()) -> InferenceService:
    return InferenceService(h.database, h.blobs, load_cards([cards_dir]), backend_for,
                            backend_label="onnxruntime", budget_bytes=budget, chain=CHAIN,
                            actor="test", qa_strata=qa_strata)


def make_cards(tmp_path: Path) -> Path:
    """toy-ct (CT, always positive, with a heat map) and toy-mr (MR only) in a folder."""
    folder = tmp_path / "cards"
    folder.mkdir()
    write_card(folder, "toy-ct")
    write_card(folder, "toy-mr", series={"modalities": ["MR"]})
    return folder
