"""The value every filter and transformer sees: content plus identifying metadata."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Payload:
    """One message as a mapping step sees it.

    `patient_id`, `accession` and `study_uid` are what a transformer extracts so that the
    audit ledger and per-key ordering can use them; `metadata` holds anything else a
    channel wants to route or order on.
    """

    content: bytes
    content_type: str = "application/octet-stream"
    source: str = ""
    patient_id: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not isinstance(self.content, bytes):
            raise TypeError(f"Payload.content must be bytes, got {type(self.content).__name__}")
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    def text(self, encoding: str = "utf-8") -> str:
        """The content decoded as text (replacement characters for bad bytes)."""
        return self.content.decode(encoding, errors="replace")

    def evolve(self, **changes: Any) -> Payload:
        """A copy with some fields changed; metadata given here is merged, not replaced."""
        if "metadata" in changes:
            changes["metadata"] = {**self.metadata, **changes["metadata"]}
        return replace(self, **changes)

    def field(self, name: str) -> str | None:
        """A field by the names filters and ordering keys use ('metadata.KEY' included)."""
        if name.startswith("metadata."):
            return self.metadata.get(name.removeprefix("metadata."))
        if name == "content":
            return self.text()
        value = getattr(self, name)
        return None if value is None else str(value)
