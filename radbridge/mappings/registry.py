"""Named mapping functions that channel files may use as transformers.

A transformer is a pure function `(payload, **options) -> Payload`. Built-ins register
here under a dotted name ("text.normalize_newlines"); anything else is referenced in
a channel file by its Python path ("package.module:function").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from radbridge.mappings.payload import Payload

Transformer = Callable[..., Payload]

_REGISTRY: dict[str, Transformer] = {}


def mapping(name: str) -> Callable[[Transformer], Transformer]:
    """Register a transformer under `name` (decorator)."""

    def register(function: Transformer) -> Transformer:
        if name in _REGISTRY and _REGISTRY[name] is not function:
            raise ValueError(f"mapping {name!r} is registered twice")
        _REGISTRY[name] = function
        return function

    return register


def get_mapping(name: str) -> Transformer:
    """The transformer registered as `name`; KeyError naming the known ones otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"no mapping named {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None


def mapping_names() -> list[str]:
    """Every registered mapping name, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    # Imported for their @mapping side effect; late so that this module stays importable
    # from the built-in modules themselves.
    from radbridge.mappings import text  # noqa: F401
    from radbridge.mappings.dicom import transforms as dicom_transforms  # noqa: F401
    from radbridge.mappings.fhir import transforms as fhir_transforms  # noqa: F401
    from radbridge.mappings.hl7 import transforms  # noqa: F401


def call_mapping(function: Transformer, payload: Payload, options: dict[str, Any]) -> Payload:
    """Run one transformer and check that it returned a Payload."""
    result = function(payload, **options)
    if not isinstance(result, Payload):
        raise TypeError(f"a transformer must return a Payload, got {type(result).__name__}")
    return result
