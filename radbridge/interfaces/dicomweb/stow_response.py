"""The STOW-RS response (PS3.18 10.5.3) in the DICOM JSON model, built and parsed.

Our endpoint builds one per request; our client and the stow-rs destination parse the
peer's, so both directions share one reading of which instance was stored and why one
was not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

MEDIA_TYPE = "application/dicom+json"

RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
REFERENCED_SOP_CLASS = "00081150"
REFERENCED_SOP_INSTANCE = "00081155"


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) values a STOW-RS response uses."""

    PROCESSING_FAILURE = 0x0110
    OUT_OF_RESOURCES = 0xA700
    SOP_CLASS_MISMATCH = 0xA900
    """The data set does not match what it claims (e.g. pixel data of the wrong length)."""
    CANNOT_UNDERSTAND = 0xC000
    STUDY_UID_MISMATCH = 0xA900
    """The instance's Study Instance UID is not the one in the request URL: a data set that
    does not match the request (0xC122 is 'transfer syntax not supported')."""


@dataclass(frozen=True)
class StoredInstance:
    sop_class_uid: str
    sop_instance_uid: str
    retrieve_url: str | None = None


@dataclass(frozen=True)
class FailedInstance:
    sop_class_uid: str | None
    sop_instance_uid: str | None
    reason: int


@dataclass
class StowResponse:
    """What a STOW-RS request achieved, instance by instance."""

    retrieve_url: str | None = None
    stored: list[StoredInstance] = field(default_factory=list)
    failed: list[FailedInstance] = field(default_factory=list)

    @property
    def status_code(self) -> int:
        """200 all stored, 202 some failed, 409 none stored."""
        if not self.failed:
            return 200
        return 202 if self.stored else 409

    def stored_uids(self) -> set[str]:
        return {instance.sop_instance_uid for instance in self.stored}

    def failure_for(self, sop_instance_uid: str) -> int | None:
        """The failure reason given for that instance, if it failed."""
        for instance in self.failed:
            if instance.sop_instance_uid == sop_instance_uid:
                return instance.reason
        return None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.retrieve_url is not None:
            body[RETRIEVE_URL] = _value("UR", self.retrieve_url)
        body[FAILED_SOP_SEQUENCE] = _sequence([_failed_item(f) for f in self.failed])
        body[REFERENCED_SOP_SEQUENCE] = _sequence([_stored_item(s) for s in self.stored])
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StowResponse:
        """Parse a peer's response; missing or odd attributes read as absent."""
        return cls(
            retrieve_url=_first(body, RETRIEVE_URL),
            stored=[StoredInstance(str(_first(item, REFERENCED_SOP_CLASS) or ""),
                                   str(_first(item, REFERENCED_SOP_INSTANCE) or ""),
                                   _first(item, RETRIEVE_URL))
                    for item in _items(body, REFERENCED_SOP_SEQUENCE)],
            failed=[FailedInstance(_first(item, REFERENCED_SOP_CLASS),
                                   _first(item, REFERENCED_SOP_INSTANCE),
                                   _reason(_first(item, FAILURE_REASON)))
                    for item in _items(body, FAILED_SOP_SEQUENCE)],
        )


def _value(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]}


def _sequence(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}


def _stored_item(instance: StoredInstance) -> dict[str, Any]:
    item = {REFERENCED_SOP_CLASS: _value("UI", instance.sop_class_uid),
            REFERENCED_SOP_INSTANCE: _value("UI", instance.sop_instance_uid)}
    if instance.retrieve_url is not None:
        item[RETRIEVE_URL] = _value("UR", instance.retrieve_url)
    return item


def _failed_item(instance: FailedInstance) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if instance.sop_class_uid:
        item[REFERENCED_SOP_CLASS] = _value("UI", instance.sop_class_uid)
    if instance.sop_instance_uid:
        item[REFERENCED_SOP_INSTANCE] = _value("UI", instance.sop_instance_uid)
    item[FAILURE_REASON] = _value("US", int(instance.reason))
    return item


def _first(item: Mapping[str, Any], tag: str) -> Any:
    element = item.get(tag)
    if not isinstance(element, Mapping):
        return None
    values = element.get("Value")
    return values[0] if isinstance(values, list) and values else None


def _items(body: Mapping[str, Any], tag: str) -> list[Mapping[str, Any]]:
    element = body.get(tag)
    values = element.get("Value") if isinstance(element, Mapping) else None
    return [v for v in values if isinstance(v, Mapping)] if isinstance(values, list) else []


def _reason(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return int(FailureReason.PROCESSING_FAILURE)
