"""Runtime control of a running node: what the API asks of it, and the errors it answers.

The HTTP API runs in the node's process and holds a `ChannelControl` (the node's
`NodeControl`, radbridge.engine.node_control) to deploy, undeploy, pause and resume
channels and to reload the config files the node started with. Every change is an
audit event naming who asked and the unified diff of the channel's YAML.

Errors, beside ConfigError (a YAML body or file that does not validate)::

    RadbridgeError
    ├── ControlError              a change that cannot be made as asked
    │   ├── ChannelExists         deploying a name already deployed, without `replace`
    │   ├── ControlUnavailable    this node cannot change at runtime (a --split half)
    │   └── ControlFailed         a change stopped half-way (a port in use): what was done
    └── StoreUnavailable
        └── ChannelPaused         a message for a paused channel: not stored, try later
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from radbridge.errors import RadbridgeError, StoreUnavailable

Action = Literal["deployed", "redeployed", "undeployed", "paused", "resumed", "unchanged"]
Origin = Literal["file", "api"]


class ControlError(RadbridgeError):
    """A runtime change that cannot be made as asked."""


class ChannelExists(ControlError):
    """The channel is deployed already; deploy it with replace to change it."""


class ControlUnavailable(ControlError):
    """This node does not take runtime changes (it runs half of a --split pair)."""


class ControlFailed(ControlError):
    """A change failed part-way; `changes` were made before it (and stay)."""

    def __init__(self, reason: str, changes: Sequence[ChannelChange]) -> None:
        super().__init__(reason)
        self.changes = list(changes)


class ChannelPaused(StoreUnavailable):
    """A message for a paused channel: nothing was stored, so nothing may be acknowledged.

    A StoreUnavailable on purpose: every source already answers that with its
    protocol's "not now, send again" (MLLP AR, C-STORE 0xA700, HTTP 503 with
    Retry-After, STOW-RS failure 0xA700), which is what a paused channel means.
    """

    def __init__(self, channel: str) -> None:
        super().__init__(f"channel {channel!r} is paused; send again after it is resumed")
        self.channel = channel


@dataclass(frozen=True)
class ChannelChange:
    """One change made to one channel, as the API answers and the audit records it."""

    channel: str
    action: Action
    diff: str = ""
    """Unified diff of the channel's YAML, secrets masked ('' when the YAML is the same)."""
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "action": self.action, "diff": self.diff,
                **self.detail}


@dataclass(frozen=True)
class ChannelState:
    """A deployed channel as runtime control sees it."""

    name: str
    source: str
    destinations: tuple[str, ...]
    paused: bool
    origin: Origin
    file: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source,
                "destinations": list(self.destinations), "paused": self.paused,
                "origin": self.origin, "file": self.file}


class ChannelControl(Protocol):
    """What the API may change on the node it runs in; `actor` names who asked."""

    def states(self) -> list[ChannelState]: ...

    async def deploy(self, text: str, *, file: str, actor: str,
                     replace: bool = False) -> list[ChannelChange]: ...

    async def undeploy(self, name: str, *, actor: str) -> ChannelChange: ...

    async def pause(self, name: str, *, actor: str) -> ChannelChange: ...

    async def resume(self, name: str, *, actor: str) -> ChannelChange: ...

    async def reload(self, *, actor: str) -> list[ChannelChange]: ...
