"""Inference backends behind one interface: the same card runs on ONNX Runtime
in-process (the embedded default) or on NVIDIA Triton over HTTP or gRPC (production).

A backend is checked against the card before it serves: input names and shapes must be
what the card declares, and every output a finding reads must exist; a mismatch is a
BackendMismatch naming both sides, found at start-up rather than on the first study.
Running is blocking: callers put it in a worker thread, so the event loop never waits.

    BackendError             the model could not run, or gave unusable outputs: final
    ├── BackendMismatch      the deployed model does not take or give what the card says
    └── BackendUnavailable   transient: server down, timeout, circuit open; retry later
        ├── CircuitOpen      (inference.breaker) failing fast, nothing was sent
        ├── TritonTimeout    (inference.triton) no answer within the timeout
        └── ModelNotReady    (inference.triton) the server is up, the model is not
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import onnxruntime

from radbridge.errors import RadbridgeError
from radbridge.inference.cards import ModelCard, OnnxBackend

Tensors = Mapping[str, np.ndarray]

ROUTINE = 0
STAT = 1
"""Request priorities: higher runs first. Triton serves STAT at its top priority level."""


class BackendError(RadbridgeError):
    """The backend could not run the model (it failed, or gave unusable outputs)."""


class BackendMismatch(BackendError):
    """The deployed model does not take or give what its card says."""


class BackendUnavailable(BackendError):
    """The backend cannot answer now (down, too slow, circuit open): the same request
    may succeed later, so the engine retries it; every other BackendError is final."""

    server_answered = False
    """True where the server is up but the model is not (still loading): a circuit
    breaker counts only failures of the server itself."""


class Backend(Protocol):
    def run(self, inputs: Tensors, *, priority: int = ROUTINE) -> dict[str, np.ndarray]:
        """Outputs by name for a batch of inputs (first dimension: the batch); a higher
        `priority` (STAT) is served before routine work where the backend queues."""
        ...

    def close(self) -> None:
        """Release sessions, connections and threads; the backend is unusable after."""
        ...


@dataclass(frozen=True)
class TritonTarget:
    """A Triton server to run a card's model on, under the card's name (for trying a
    model deployed with `radbridge models export-triton` without editing its card)."""

    url: str
    protocol: Literal["http", "grpc"] = "http"
    timeout: float = 30.0


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

    def run(self, inputs: Tensors, *, priority: int = ROUTINE) -> dict[str, np.ndarray]:
        """In-process there is no queue to jump: `priority` is accepted and ignored."""
        try:
            outputs = self._session.run(None, {k: v.astype(np.float32)
                                               for k, v in inputs.items()})
        except Exception as exc:
            raise BackendError(f"{self.card.key}: inference failed: {exc}") from exc
        names = [o.name for o in self._session.get_outputs()]
        return {name: np.asarray(value) for name, value in zip(names, outputs, strict=True)}

    def close(self) -> None:
        self._session = None


def open_backend(card: ModelCard, folder: Path, *, target: TritonTarget | None = None
                 ) -> Backend:
    """The backend a card runs on, checked against the card. `target` None: the card's
    own backend (its ONNX file under `folder`, or its Triton section); a target: the
    card's model on that Triton server, under the card's name."""
    if target is None and isinstance(card.backend, OnnxBackend):
        return OnnxRuntimeBackend(card, folder)
    from radbridge.inference.triton import TritonBackend  # tritonclient only when asked

    if target is not None:
        return TritonBackend(card, model=card.name, url=target.url,
                             protocol=target.protocol, timeout=target.timeout)
    return TritonBackend.from_card(card)


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
    missing = card.output_names() - outputs
    if missing:
        raise BackendMismatch(f"{card.key}: the model has no output {sorted(missing)}")
