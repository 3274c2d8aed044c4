"""Inference backends behind one interface: the same card runs on ONNX Runtime
in-process (the embedded default) or on Triton (production; issue 6 adds it).

A backend is checked against the card before it serves: input names and shapes must be
what the card declares, and every output a finding reads must exist; a mismatch is a
BackendMismatch naming both sides, found at start-up rather than on the first study.
Running is blocking: callers put it in a worker thread, so the event loop never waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime

from radbridge.errors import RadbridgeError
from radbridge.inference.cards import ModelCard, OnnxBackend

Tensors = Mapping[str, np.ndarray]


class BackendError(RadbridgeError):
    """The backend could not run the model (it failed, or gave unusable outputs)."""


class BackendMismatch(BackendError):
    """The deployed model does not take or give what its card says."""


class Backend(Protocol):
    def run(self, inputs: Tensors) -> dict[str, np.ndarray]:
        """Outputs by name for a batch of inputs (first dimension: the batch)."""
        ...


class OnnxRuntimeBackend:
    """The card's ONNX file in an onnxruntime session on the CPU."""

    def __init__(self, card: ModelCard, folder: Path, *, threads: int = 1) -> None:
        if not isinstance(card.backend, OnnxBackend):
            raise BackendMismatch(f"{card.key}: the card names a {card.backend.kind} backend")
        path = folder / card.backend.path
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own unrelated types
            raise BackendError(f"{card.key}: cannot load {path}: {exc}") from exc
        self.card = card
        check_signature(card, {i.name: list(i.shape) for i in self._session.get_inputs()},
                        {o.name for o in self._session.get_outputs()})

    def run(self, inputs: Tensors) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(None, {k: v.astype(np.float32)
                                               for k, v in inputs.items()})
        except Exception as exc:
            raise BackendError(f"{self.card.key}: inference failed: {exc}") from exc
        names = [o.name for o in self._session.get_outputs()]
        return {name: np.asarray(value) for name, value in zip(names, outputs, strict=True)}


def check_signature(card: ModelCard, inputs: Mapping[str, list[object]],
                    outputs: set[str]) -> None:
    """The model's inputs (name -> shape with the batch dimension first, symbolic where
    dynamic) and output names against the card; BackendMismatch says what differs."""
    if set(inputs) != set(card.inputs):
        raise BackendMismatch(f"{card.key}: the model takes {sorted(inputs)}, the card "
                              f"says {sorted(card.inputs)}")
    for name, shape in card.inputs.items():
        declared = inputs[name][1:]  # without the batch dimension
        if len(declared) != len(shape) or any(
                isinstance(d, int) and d != s for d, s in zip(declared, shape, strict=True)):
            raise BackendMismatch(f"{card.key}: input {name} is {declared} in the model, "
                                  f"{shape} in the card")
    missing = {f.output for f in card.findings} - outputs
    if missing:
        raise BackendMismatch(f"{card.key}: the model has no output {sorted(missing)}")
