"""Built-in text transformers that need no knowledge of a message standard."""

from __future__ import annotations

import json
import re

from radbridge.mappings.payload import Payload
from radbridge.mappings.registry import mapping

_LINE_BREAKS = re.compile(rb"\r\n|\n|\r")


@mapping("text.normalize_newlines")
def normalize_newlines(payload: Payload, newline: str = "\r") -> Payload:
    """Make every line break `newline` (HL7 v2 wants CR between segments)."""
    content = _LINE_BREAKS.sub(newline.encode(), payload.content)
    return payload.evolve(content=content)


@mapping("text.strip")
def strip(payload: Payload) -> Payload:
    """Remove leading and trailing whitespace (stray newlines around a file's content)."""
    return payload.evolve(content=payload.content.strip())


@mapping("json.extract")
def json_extract(payload: Payload, **fields: str) -> Payload:
    """Copy top-level JSON members into the payload's identifying fields or metadata.

    Options map a target to a JSON member name, e.g. `patient_id: mrn` or
    `metadata.event: type`. The content itself is left unchanged.
    """
    try:
        document = json.loads(payload.content)
    except ValueError as exc:
        raise ValueError(f"content is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object at the top level")
    changes: dict[str, object] = {}
    metadata: dict[str, str] = {}
    for target, member in fields.items():
        value = document.get(member)
        if value is None:
            continue
        if target.startswith("metadata."):
            metadata[target.removeprefix("metadata.")] = str(value)
        elif target in ("patient_id", "accession", "study_uid"):
            changes[target] = str(value)
        else:
            raise ValueError(
                f"unknown target {target!r}; expected patient_id, accession, study_uid "
                "or metadata.KEY"
            )
    return payload.evolve(**changes, metadata=metadata)
