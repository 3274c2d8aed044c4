"""One channel's filter -> transform -> route, as a pure function of a Payload.

Compiled once per channel when it is deployed, so each message costs only the calls
themselves. Storing what it decided is the processor's job (`processor.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from radbridge.engine.config import ChannelConfig
from radbridge.engine.filters import Predicate, compile_filter, import_callable
from radbridge.errors import PipelineError
from radbridge.mappings.payload import Payload
from radbridge.mappings.registry import Transformer, call_mapping, get_mapping

Step = Callable[[Payload], Payload]


@dataclass(frozen=True)
class Routing:
    """What the pipeline decided for one message."""

    accepted: bool
    payload: Payload
    destinations: tuple[str, ...] = ()
    transformed: bool = False
    steps: tuple[str, ...] = field(default_factory=tuple)


class ChannelPipeline:
    """The compiled filter, transformers and destination filters of one channel."""

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config
        self._filter = compile_filter(config.filter)
        self._steps: list[tuple[str, Step]] = []
        for transformer in config.transformers:
            function: Transformer = (
                get_mapping(transformer.name) if transformer.name
                else cast(Transformer, import_callable(transformer.function or ""))
            )
            step: Step = partial(_apply, function, dict(transformer.options))
            self._steps.append((transformer.label, step))
        self._routes: list[tuple[str, Predicate]] = [
            (d.name, compile_filter(d.filter)) for d in config.destinations
        ]

    @property
    def needs_content(self) -> bool:
        """False when nothing reads the content, so large blobs need not be loaded."""
        return bool(self._steps) or _filters_read_content(self.config)

    def run(self, payload: Payload) -> Routing:
        """Filter, transform and route; PipelineError names the step that failed."""
        if not _safely("filter", "channel", self._filter, payload):
            return Routing(accepted=False, payload=payload)
        for label, step in self._steps:
            try:
                payload = step(payload)
            except Exception as exc:  # a user's mapping: any failure errors this message
                raise PipelineError("transformer", label, f"{type(exc).__name__}: {exc}") from exc
        destinations = tuple(
            name for name, accepts in self._routes
            if _safely("destination filter", name, accepts, payload)
        )
        return Routing(
            accepted=True, payload=payload, destinations=destinations,
            transformed=bool(self._steps), steps=tuple(label for label, _ in self._steps),
        )


def _apply(function: Transformer, options: dict[str, Any], payload: Payload) -> Payload:
    return call_mapping(function, payload, options)


def _safely(stage: str, step: str, predicate: Predicate, payload: Payload) -> bool:
    try:
        return predicate(payload)
    except Exception as exc:  # a user's filter function: a failure errors this message
        raise PipelineError(stage, step, f"{type(exc).__name__}: {exc}") from exc


def _filters_read_content(config: ChannelConfig) -> bool:
    filters = [config.filter, *(d.filter for d in config.destinations)]
    for item in filters:
        if item is None:
            continue
        if item.function is not None or any(rule.field == "content" for rule in item.rules):
            return True
    return False
