"""A Triton model repository from model cards: `radbridge models export-triton DIR`.

Per card a folder named after the card, holding config.pbtxt and version `1/`:

    DIR/<card name>/config.pbtxt     name, backend, max_batch_size, inputs and outputs
                                     (from the card and the ONNX graph), dynamic batching
                                     with priority levels, the card's version and digest
    DIR/<card name>/1/model.onnx
    DIR/<card name>/1/model.py       backend "python" only: onnxruntime inside Triton's
                                     Python backend (what a CPU-only server can run)

The production default is Triton's own onnxruntime backend. STAT requests are sent at
priority level 1, routine ones at the default level 2 (see radbridge.inference.triton).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx
from google.protobuf import text_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from tritonclient.grpc import model_config_pb2 as mc  # type: ignore[import-untyped]

from radbridge.errors import RadbridgeError
from radbridge.inference.backends import check_signature
from radbridge.inference.cards import ModelCard, OnnxBackend

ExportBackend = Literal["onnxruntime", "python"]
PRIORITY_LEVELS = 2
"""Level 1 (highest) for STAT studies, level 2 (the default) for routine ones."""
STAT_LEVEL, ROUTINE_LEVEL = 1, 2

_DATA_TYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64", onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.BOOL: "TYPE_BOOL",
}


class TritonExportError(RadbridgeError):
    """A card cannot become a Triton model (no ONNX file, unsupported tensor, clash)."""


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    shape: list[int]
    """With the batch dimension first; -1 where the graph leaves a dimension open."""


def export_repository(cards: Sequence[tuple[Path, ModelCard]], out_dir: Path, *,
                      backend: ExportBackend = "onnxruntime", max_batch_size: int = 8,
                      max_queue_delay_us: int = 500, threads: int = 1) -> list[Path]:
    """Write one model folder per card (path of its card file, card) under `out_dir`;
    the folders written. An existing folder of the same name is replaced."""
    names: dict[str, str] = {}
    for _, card in cards:
        if card.name in names:
            raise TritonExportError(f"{card.key}: {names[card.name]} has the same name; "
                                    "a repository holds one version per card name")
        names[card.name] = card.key
    return [export_model(path, card, out_dir, backend=backend, max_batch_size=max_batch_size,
                         max_queue_delay_us=max_queue_delay_us, threads=threads)
            for path, card in cards]


def export_model(card_path: Path, card: ModelCard, out_dir: Path, *,
                 backend: ExportBackend = "onnxruntime", max_batch_size: int = 8,
                 max_queue_delay_us: int = 500, threads: int = 1) -> Path:
    """One card's model folder (see the module docstring); the card is checked against
    its ONNX graph first, as the in-process backend would."""
    if not isinstance(card.backend, OnnxBackend):
        raise TritonExportError(f"{card.key}: the card names no ONNX file to export")
    source = card_path.parent / card.backend.path
    inputs, outputs = read_signature(card, source)
    check_signature(card, {t.name: list(t.shape) for t in inputs}, {t.name for t in outputs})
    batching = all(t.shape and t.shape[0] == -1 for t in [*inputs, *outputs])
    config = model_config(card, inputs, outputs, backend=backend,
                          max_batch_size=max_batch_size if batching else 0,
                          max_queue_delay_us=max_queue_delay_us, threads=threads)
    folder = out_dir / card.name
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "1").mkdir(parents=True)
    shutil.copyfile(source, folder / "1" / "model.onnx")
    if backend == "python":
        (folder / "1" / "model.py").write_text(python_model(batching), encoding="utf-8")
    (folder / "config.pbtxt").write_text(config, encoding="utf-8")
    return folder


def read_signature(card: ModelCard, path: Path) -> tuple[list[Tensor], list[Tensor]]:
    """The graph's inputs (initializers excluded) and outputs."""
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except (OSError, DecodeError, ValueError) as exc:
        raise TritonExportError(f"{card.key}: cannot read {path}: {exc}") from exc
    constants = {init.name for init in graph.initializer}
    inputs = [_tensor(card, v) for v in graph.input if v.name not in constants]
    return inputs, [_tensor(card, v) for v in graph.output]


def _tensor(card: ModelCard, value: onnx.ValueInfoProto) -> Tensor:
    kind = value.type.tensor_type
    if kind.elem_type not in _DATA_TYPES:
        raise TritonExportError(f"{card.key}: tensor {value.name} has ONNX type "
                                f"{kind.elem_type}, which the export does not map")
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
             for d in kind.shape.dim]
    return Tensor(value.name, _DATA_TYPES[kind.elem_type], shape)


def model_config(card: ModelCard, inputs: Sequence[Tensor], outputs: Sequence[Tensor], *,
                 backend: ExportBackend, max_batch_size: int, max_queue_delay_us: int,
                 threads: int = 1) -> str:
    """config.pbtxt text; input dims come from the card (checked against the graph)."""
    config = mc.ModelConfig(name=card.name, backend=backend, max_batch_size=max_batch_size)
    skip = 1 if max_batch_size else 0
    for tensor in inputs:
        dims = card.inputs[tensor.name] if skip else tensor.shape
        config.input.add(name=tensor.name, data_type=mc.DataType.Value(tensor.data_type),
                         dims=dims)
    for tensor in outputs:
        config.output.add(name=tensor.name, data_type=mc.DataType.Value(tensor.data_type),
                          dims=tensor.shape[skip:])
    if max_batch_size:
        batcher = config.dynamic_batching
        batcher.max_queue_delay_microseconds = max_queue_delay_us
        batcher.priority_levels = PRIORITY_LEVELS
        batcher.default_priority_level = ROUTINE_LEVEL
    if backend == "python":
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
        config.parameters["threads"].string_value = str(threads)
    config.parameters["radbridge_card_version"].string_value = card.version
    config.parameters["radbridge_card_sha256"].string_value = card.digest()
    config.parameters["radbridge_demonstration"].string_value = str(card.demonstration)
    header = (f"# {card.key}: written by `radbridge models export-triton` from its model "
              "card; edit the card, not this file.\n")
    return header + str(text_format.MessageToString(config))


def python_model(batching: bool) -> str:
    """model.py for Triton's Python backend: onnxruntime on model.onnx beside it."""
    return _PYTHON_MODEL.replace("BATCHING = True", f"BATCHING = {batching}")


_PYTHON_MODEL = '''\
"""Written by `radbridge models export-triton --backend python`: runs model.onnx (in
this folder) with onnxruntime inside Triton's Python backend, one session run per batch
of requests that the dynamic batcher hands over."""

import json
from pathlib import Path

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils

BATCHING = True


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = int(config.get("parameters", {}).get("threads", {})
                      .get("string_value", "1"))
        folder = Path(args["model_repository"]) / args["model_version"]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        if not BATCHING:
            return [self._run([request])[0] for request in requests]
        return self._run(requests)

    def _run(self, requests):
        feeds = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy()
                        for r in requests] for name in self.inputs}
        sizes = [len(part) for part in feeds[self.inputs[0]]]
        try:
            batch = {name: np.concatenate(parts) for name, parts in feeds.items()}
            results = self.session.run(self.outputs, batch)
        except Exception as exc:  # the error goes back to each caller, not a crash
            error = pb_utils.TritonError(f"onnxruntime: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error)
                    for _ in requests]
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value[start:start + size]))
                       for name, value in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self):
        self.session = None
'''
