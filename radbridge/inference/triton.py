"""A model card's model on an NVIDIA Triton server, over HTTP or gRPC (tritonclient).

Before it serves, the backend asks the server whether it is live and ready, whether the
model is ready, and for the model's metadata, which must match the card (names, shapes,
outputs; Triton writes -1 for a dynamic dimension) and, where the export recorded one,
the card version. Every network call runs in one of `concurrency` worker threads, each
with its own client (the HTTP client is not thread-safe), taking queued requests STAT
first; `run` blocks its caller, `submit` returns a Future for asyncio.wrap_future.

Failures are translated at this boundary: server down, overloaded or too slow is a
BackendUnavailable (retried here with tenacity when the request never started, never
after a timeout, since the server may still be working on it), counted by a circuit
breaker that then fails fast; anything else the server answers is a final BackendError.
A request carries tensors and an opaque request id only: no names, MRNs or UIDs.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Literal, TypeVar

import numpy as np
import tenacity
import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]
import tritonclient.http as httpclient  # type: ignore[import-untyped]
from tritonclient.utils import (  # type: ignore[import-untyped]
    InferenceServerException,
    np_to_triton_dtype,
    triton_to_np_dtype,
)

from radbridge.inference.backends import (
    ROUTINE,
    BackendError,
    BackendMismatch,
    BackendUnavailable,
    Tensors,
    check_signature,
)
from radbridge.inference.breaker import CircuitBreaker, CircuitOpen
from radbridge.inference.cards import ModelCard
from radbridge.inference.cards import TritonBackend as TritonSection

T = TypeVar("T")
Protocol = Literal["http", "grpc"]
STAT_LEVEL = 1
"""Triton's highest priority level (the export configures 2; routine is the default)."""

_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED",
                "429", "502", "503", "504"}
_TIMED_OUT = {"StatusCode.DEADLINE_EXCEEDED", "408"}


class TritonTimeout(BackendUnavailable):
    """Triton did not answer within the timeout; not retried at once (it may be busy)."""


class ModelNotReady(BackendUnavailable):
    """The server is up but the model is not ready (not deployed, loading, failed)."""

    server_answered = True


@dataclass(frozen=True)
class _Model:
    """What the start-up check learnt: input data types and whether priorities exist."""

    dtypes: dict[str, np.dtype[Any]]
    outputs: list[str]
    priorities: bool


class TritonBackend:
    """`card`'s model served by Triton as `model` (version "" = the server's latest)."""

    def __init__(self, card: ModelCard, *, model: str, url: str, protocol: Protocol = "http",
                 timeout: float = 30.0, version: str = "", concurrency: int = 4,
                 attempts: int = 3, breaker: CircuitBreaker | None = None) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be http or grpc, not {protocol!r}")
        self.card, self.model, self.version = card, model, version
        self.protocol, self.timeout = protocol, timeout
        self.where = f"{card.key} on triton {protocol}://{_address(url)}/{model}"
        self.breaker = breaker or shared_breaker(protocol, url)
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=(tenacity.wait_exponential(multiplier=0.05, max=1.0)
                  + tenacity.wait_random(0, 0.05)),
            retry=tenacity.retry_if_exception(_worth_retrying), reraise=True)
        self._pool = _WorkerPool(concurrency, lambda: _client(protocol, url, timeout))
        try:
            self._model = self._call(self._check)
        except BaseException:
            self._pool.close()
            raise

    @classmethod
    def from_card(cls, card: ModelCard, **options: Any) -> TritonBackend:
        """The server, model and protocol named in the card's `backend: {kind: triton}`."""
        section = card.backend
        if not isinstance(section, TritonSection):
            raise BackendMismatch(f"{card.key}: the card names a {section.kind} backend")
        return cls(card, model=section.model, url=section.url, protocol=section.protocol,
                   timeout=section.timeout, version=section.version, **options)

    def run(self, inputs: Tensors, *, priority: int = ROUTINE) -> dict[str, np.ndarray]:
        """Outputs by name; blocks until a worker has run the request (STAT first)."""
        return self.submit(inputs, priority=priority).result()

    def submit(self, inputs: Tensors, *, priority: int = ROUTINE
               ) -> Future[dict[str, np.ndarray]]:
        """As `run`, without blocking: a Future (asyncio.wrap_future awaits it)."""
        arrays = {name: np.ascontiguousarray(value) for name, value in inputs.items()}
        return self._pool.submit(lambda client: self._infer(client, arrays, priority),
                                 priority)

    def close(self) -> None:
        self._pool.close()

    # -- in a worker thread ----------------------------------------------------------

    def _call(self, action: Callable[[Any], T]) -> T:
        """`action(client)` in a worker ahead of queued requests, with retries."""
        def attempt(client: Any) -> T:
            result: T = self._retrying.copy()(self.breaker.call, lambda: action(client))
            return result

        return self._pool.submit(attempt, sys.maxsize).result()

    def _check(self, client: Any) -> _Model:
        """Live, ready, model ready, metadata and config against the card."""
        version, options = self.version, self._options()
        live = self._ask(lambda: client.is_server_live(**options), "liveness")
        if not (live and self._ask(lambda: client.is_server_ready(**options), "readiness")):
            raise BackendUnavailable(f"{self.where}: the server is not ready")
        if not self._ask(lambda: client.is_model_ready(self.model, version, **options),
                         "model readiness"):
            raise ModelNotReady(f"{self.where}: the model is not ready (not deployed, "
                                "still loading, or failed to load)")
        metadata = self._json(self._ask(
            lambda: client.get_model_metadata(self.model, version, **self._json_options()),
            "model metadata"))
        config = self._json(self._ask(
            lambda: client.get_model_config(self.model, version, **self._json_options()),
            "model config"))
        config = config.get("config", config)  # gRPC wraps it
        inputs: dict[str, list[object]] = {
            i["name"]: [int(d) if int(d) >= 0 else None for d in i["shape"]]
            for i in metadata.get("inputs", [])}
        outputs = [o["name"] for o in metadata.get("outputs", [])]
        check_signature(self.card, inputs, set(outputs))
        deployed = (config.get("parameters", {}).get("radbridge_card_version", {})
                    .get("string_value"))
        if deployed is not None and deployed != self.card.version:
            raise BackendMismatch(f"{self.where}: the server runs the export of card version "
                                  f"{deployed}, this card is {self.card.version}")
        dtypes = {i["name"]: np.dtype(triton_to_np_dtype(i["datatype"]))
                  for i in metadata["inputs"]}
        levels = int(config.get("dynamic_batching", {}).get("priority_levels", 0))
        return _Model(dtypes, outputs, levels >= 2)

    def _infer(self, client: Any, inputs: Mapping[str, np.ndarray], priority: int
               ) -> dict[str, np.ndarray]:
        library = grpcclient if self.protocol == "grpc" else httpclient
        tensors = []
        for name, value in inputs.items():
            if name not in self._model.dtypes:
                raise BackendError(f"{self.where}: the model has no input {name}")
            array = value.astype(self._model.dtypes[name], copy=False)
            tensor = library.InferInput(name, list(array.shape),
                                        _triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = [library.InferRequestedOutput(name) for name in self._model.outputs]
        level = STAT_LEVEL if priority > ROUTINE and self._model.priorities else 0
        request_id = uuid.uuid4().hex  # opaque: Triton logs it, so it carries nothing
        result = self._retrying.copy()(self.breaker.call, lambda: self._ask(
            lambda: client.infer(self.model, tensors, model_version=self.version,
                                 outputs=wanted, request_id=request_id, priority=level,
                                 **self._options()), "inference"))
        return {name: np.asarray(result.as_numpy(name)) for name in self._model.outputs}

    def _ask(self, request: Callable[[], T], what: str) -> T:
        try:
            return request()
        except InferenceServerException as exc:
            status = str(exc.status())
            message = f"{self.where}: {what} failed ({status}): {exc.message()}"
            if status in _TIMED_OUT:
                raise TritonTimeout(message) from exc
            if status in _UNAVAILABLE:
                raise BackendUnavailable(message) from exc
            raise BackendError(message) from exc
        except TimeoutError as exc:
            raise TritonTimeout(f"{self.where}: no {what} answer within {self.timeout} s"
                                ) from exc
        except (OSError, HTTPException) as exc:  # refused, reset, closed mid-answer
            raise BackendUnavailable(f"{self.where}: {what} failed: {exc!r}") from exc

    def _options(self) -> dict[str, Any]:
        return {"client_timeout": self.timeout} if self.protocol == "grpc" else {}

    def _json_options(self) -> dict[str, Any]:
        return {**self._options(), "as_json": True} if self.protocol == "grpc" else {}

    @staticmethod
    def _json(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise BackendError(f"unexpected answer from Triton: {type(value).__name__}")
        return value


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def shared_breaker(protocol: Protocol, url: str) -> CircuitBreaker:
    """One breaker per server and protocol in this process: when Triton is down it is
    down for every card, and a backend opened again after a failed start-up must still
    fail fast instead of starting a fresh count."""
    key = f"{protocol}://{_address(url)}"
    with _BREAKERS_LOCK:
        if key not in _BREAKERS:
            _BREAKERS[key] = CircuitBreaker(f"triton {key}")
        return _BREAKERS[key]


def _worth_retrying(exc: BaseException) -> bool:
    return (isinstance(exc, BackendUnavailable)
            and not isinstance(exc, CircuitOpen | TritonTimeout))


def _address(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def _client(protocol: Protocol, url: str, timeout: float) -> Any:
    if protocol == "grpc":
        return grpcclient.InferenceServerClient(_address(url))
    return httpclient.InferenceServerClient(
        _address(url), ssl=url.startswith("https://"), connection_timeout=timeout,
        network_timeout=timeout)


def _triton_dtype(dtype: np.dtype[Any]) -> str:
    return str(np_to_triton_dtype(dtype))


_Job = tuple[Callable[[Any], Any], "Future[Any]"]


class _WorkerPool:
    """`size` threads, each with its own client, taking jobs highest priority first."""

    def __init__(self, size: int, make_client: Callable[[], Any]) -> None:
        if size < 1:
            raise ValueError("concurrency must be at least 1")
        self._make_client = make_client
        self._jobs: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name=f"triton-{i}", daemon=True)
                         for i in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Callable[[Any], T], priority: int) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise BackendError("the Triton backend is closed")
            self._jobs.put((-priority, next(self._order), (job, future)))
        return future

    def close(self) -> None:
        """Finish queued jobs, then stop every worker (each closes its own client)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._jobs.put((sys.maxsize, next(self._order), None))
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=30)

    def _work(self) -> None:
        client = None
        try:
            while True:
                _, _, item = self._jobs.get()
                if item is None:
                    return
                job, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    if client is None:
                        client = self._make_client()
                    future.set_result(job(client))
                except BaseException as exc:  # handed to the caller through the Future
                    future.set_exception(exc)
        finally:
            if client is not None:
                _quietly_close(client)


def _quietly_close(client: Any) -> None:
    try:
        client.close()
    except Exception:  # closing a broken connection: nothing left to do
        return
