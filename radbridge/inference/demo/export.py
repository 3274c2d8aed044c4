"""The numpy network as an ONNX graph of standard operators (opset 17, IR version 8, a
dynamic "batch" dimension):

    input -> Conv 1x1 -> LeakyRelu -> Conv k ("same") -> LeakyRelu -> Conv 1x1 -> Sigmoid
          -> Squeeze(channel)                      = heatmap      [batch, *space]
          -> GlobalMaxPool -> Flatten              = probability  [batch, 1]

The heat map is the per-voxel probability, so its peak is where the evidence is strongest
and the study's probability is that peak.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from radbridge.inference.demo.network import SLOPE, Weights

OPSET, IR_VERSION = 17, 8


def build_model(weights: Weights, input_name: str, channels: int, space: list[int]
                ) -> onnx.ModelProto:
    kernel = list(weights.w2.shape[2:])
    ones = [1] * len(kernel)
    arrays = {
        "w1": weights.w1.reshape(*weights.w1.shape, *ones), "b1": weights.b1,
        "w2": weights.w2, "b2": weights.b2,
        "w3": weights.u.reshape(1, -1, *ones), "b3": weights.b3,
        "channel_axis": np.asarray([1], dtype=np.int64),
    }
    initializers = [numpy_helper.from_array(np.asarray(value), name)
                    for name, value in arrays.items()]
    nodes = [
        helper.make_node("Conv", [input_name, "w1", "b1"], ["pre1"], kernel_shape=ones),
        helper.make_node("LeakyRelu", ["pre1"], ["bands"], alpha=SLOPE),
        helper.make_node("Conv", ["bands", "w2", "b2"], ["pre2"], kernel_shape=kernel,
                         pads=[k // 2 for k in kernel] * 2),
        helper.make_node("LeakyRelu", ["pre2"], ["filters"], alpha=SLOPE),
        helper.make_node("Conv", ["filters", "w3", "b3"], ["logits"], kernel_shape=ones),
        helper.make_node("Sigmoid", ["logits"], ["voxel_probability"]),
        helper.make_node("Squeeze", ["voxel_probability", "channel_axis"], ["heatmap"]),
        helper.make_node("GlobalMaxPool", ["voxel_probability"], ["peak"]),
        helper.make_node("Flatten", ["peak"], ["probability"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "radbridge_demo",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                       ["batch", channels, *space])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["batch", *space])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="radbridge-demo")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def logits_model(weights: Weights, channels: int, space: list[int]) -> onnx.ModelProto:
    """The same graph with the detection logits as a third output (input "input"): what
    training runs to find hard places and score its own studies, at ONNX Runtime's
    speed (about 20 ms for a CTA volume where numpy's im2col takes 80-150 ms)."""
    model = build_model(weights, "input", channels, space)
    model.graph.output.append(helper.make_tensor_value_info(
        "logits", TensorProto.FLOAT, ["batch", 1, *space]))
    return model


def write_model(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
