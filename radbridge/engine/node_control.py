"""Runtime control of one node (the `ChannelControl` the API holds): deploy, undeploy,
pause, resume and reload, one at a time, each change an audit event with who and the
unified diff of the channel's YAML (secrets masked, radbridge.engine.config_diff).

A YAML body is checked as `radbridge validate` checks a file, with the channels
deployed now standing in for the other files (so a `channel` destination may name a
deployed channel); a problem names the file, line and field. `reload` reads the
files the node started with again and makes the node match them: channels new in
the files are deployed, changed ones redeployed, ones gone from the files undeployed.
Channels deployed through the API are left alone by a reload unless a file now
defines the same name. Changes last until the node stops: a restart deploys the
files again (the audit ledger keeps what was changed, by whom).

Only a node that runs everything takes changes: a `--split` pair has a second process
this one cannot change (ControlUnavailable).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from radbridge.engine import audit, queries
from radbridge.engine.config import ChannelConfig
from radbridge.engine.config_diff import channel_diff, channel_texts
from radbridge.engine.config_loader import channel_files, load_channel_files, load_channel_text
from radbridge.engine.control import (
    Action,
    ChannelChange,
    ChannelExists,
    ChannelState,
    ControlFailed,
    ControlUnavailable,
    Origin,
)
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.runtime import Node, config_digest
from radbridge.errors import ConfigError, ConfigIssue

log = logging.getLogger(__name__)

REQUEST_FILE = "<request>"
"""The file name issues carry when the client gave none."""


@dataclass(frozen=True)
class _Text:
    """The YAML a deployed channel came from, and where."""

    yaml: str
    origin: Origin
    file: str


class NodeControl:
    """See the module docstring; `config_paths` are the files and folders of `run -c`."""

    def __init__(self, node: Node, config_paths: Sequence[Path | str]) -> None:
        self._node = node
        self._paths = [Path(p) for p in config_paths]
        self._lock = asyncio.Lock()
        self._texts: dict[str, _Text] = {}
        for file, texts in _file_texts(self._paths).items():
            for name, text in texts.items():
                if name in node.channels:
                    self._texts.setdefault(name, _Text(text, "file", file))

    # --- reading ---------------------------------------------------------------------

    def states(self) -> list[ChannelState]:
        node = self._node
        return [ChannelState(
            name=name, source=channel.source.type,
            destinations=tuple(d.name for d in channel.destinations),
            paused=name in node.paused, origin=self._text(name).origin,
            file=self._text(name).file) for name, channel in sorted(node.channels.items())]

    # --- changes ---------------------------------------------------------------------

    async def deploy(self, text: str, *, file: str = REQUEST_FILE, actor: str,
                     replace: bool = False) -> list[ChannelChange]:
        """Deploy every channel in `text`; with `replace`, redeploy those deployed."""
        async with self._lock:
            self._check_role()
            texts = channel_texts(text)
            taken = sorted(name for name in texts if name in self._node.channels)
            if taken and not replace:
                raise ChannelExists(f"channel {taken[0]!r} is deployed already; deploy with "
                                    "replace to change it")
            others = {n: c for n, c in self._node.channels.items() if n not in texts}
            configs = await asyncio.to_thread(_validate, text, file, others)
            return await self._apply(
                [(config, _Text(texts.get(config.name, ""), "api", file)) for config in configs],
                actor)

    async def undeploy(self, name: str, *, actor: str) -> ChannelChange:
        async with self._lock:
            self._check_role()
            return await self._undeploy(name, actor)

    async def pause(self, name: str, *, actor: str) -> ChannelChange:
        async with self._lock:
            self._check_role()
            changed = await self._node.pause_channel(name)
            return await self._record(name, "paused" if changed else "unchanged", actor)

    async def resume(self, name: str, *, actor: str) -> ChannelChange:
        async with self._lock:
            self._check_role()
            changed = await self._node.resume_channel(name)
            return await self._record(name, "resumed" if changed else "unchanged", actor)

    async def reload(self, *, actor: str) -> list[ChannelChange]:
        """Make the node match its config files again (see the module docstring)."""
        async with self._lock:
            self._check_role()
            loaded = await asyncio.to_thread(load_channel_files, self._paths)
            texts = await asyncio.to_thread(_file_texts, self._paths)
            wanted = [(item.config, _Text(texts.get(item.file, {}).get(item.config.name, ""),
                                          "file", item.file)) for item in loaded]
            present = {config.name for config, _ in wanted}
            changes: list[ChannelChange] = []
            try:
                for name in sorted(self._node.channels):
                    if self._text(name).origin == "file" and name not in present:
                        changes.append(await self._undeploy(name, actor))
                changes += await self._apply(wanted, actor, done=changes)
            finally:
                await self._audit([audit.AuditRecord(
                    action="config.reloaded", actor=actor,
                    detail={"files": [str(p) for p in self._paths],
                            "changes": {c.channel: c.action for c in changes}})])
            return changes

    # --- the work --------------------------------------------------------------------

    async def _apply(self, wanted: list[tuple[ChannelConfig, _Text]], actor: str,
                     done: Sequence[ChannelChange] = ()) -> list[ChannelChange]:
        changes: list[ChannelChange] = []
        for config, text in wanted:
            name = config.name
            current = self._node.channels.get(name)
            try:
                if not config.enabled:
                    changes.append(await self._undeploy(name, actor) if current is not None
                                   else ChannelChange(name, "unchanged", detail={"enabled": False}))
                    continue
                if current == config:
                    self._texts[name] = text
                    changes.append(ChannelChange(name, "unchanged"))
                    continue
                before = self._text(name).yaml if current is not None else ""
                previous = self._text(name)
                if current is not None:
                    await self._node.undeploy_channel(name)
                    self._texts.pop(name, None)
                await self._node.deploy_channel(config)
            except Exception as exc:
                await self._audit([audit.AuditRecord(
                    action=f"channel.{'redeployed' if current else 'deployed'}", actor=actor,
                    outcome="failure", channel=name, detail={"error": str(exc)[:500]})])
                if current is not None:
                    await self._restore(current, previous)
                raise ControlFailed(f"channel {name!r}: {exc}", [*done, *changes]) from exc
            self._texts[name] = text
            action: Action = "redeployed" if current is not None else "deployed"
            changes.append(await self._record(name, action, actor, before=before))
        return changes

    async def _restore(self, config: ChannelConfig, text: _Text) -> None:
        """A redeploy failed: put the channel back as it was, if it will start."""
        if config.name in self._node.channels:
            return
        try:
            await self._node.deploy_channel(config)
        except Exception as exc:  # what made the new one fail may stop the old one too
            log.error("channel %s could not be restored after a failed redeploy: %s",
                      config.name, type(exc).__name__)
            return
        self._texts[config.name] = text

    async def _undeploy(self, name: str, actor: str) -> ChannelChange:
        before = self._text(name).yaml
        await self._node.undeploy_channel(name)
        self._texts.pop(name, None)
        left = await asyncio.to_thread(self._pending, name)
        return await self._record(name, "undeployed", actor, before=before, after="",
                                  extra={"pending_deliveries": left})

    async def _record(self, name: str, action: Action, actor: str, *,
                      before: str | None = None, after: str | None = None,
                      extra: Mapping[str, Any] | None = None) -> ChannelChange:
        """The change, and (unless nothing changed) its audit event."""
        text = self._text(name)
        diff = ""
        if before is not None:
            diff = channel_diff(name, before, text.yaml if after is None else after)
        detail: dict[str, Any] = {"origin": text.origin, "file": text.file, **(extra or {})}
        channel = self._node.channels.get(name)
        if channel is not None:
            detail["sha256"] = config_digest(channel)
        change = ChannelChange(name, action, diff, detail)
        if action != "unchanged":
            await self._audit([audit.AuditRecord(
                action=f"channel.{action}", actor=actor, channel=name,
                detail={**detail, "diff": diff})])
            log.info("channel %s %s by %s", name, action, actor)
        return change

    async def _audit(self, records: list[audit.AuditRecord]) -> None:
        await asyncio.to_thread(audit.append_now, self._node.database, records,
                                f"{self._node.node_id}/control")

    def _pending(self, name: str) -> int:
        with self._node.database.read() as session:
            rows = queries.queue_depths(session, [name],
                                        statuses=[DeliveryStatus.PENDING,
                                                  DeliveryStatus.IN_FLIGHT])
        return sum(row.count for row in rows)

    def _text(self, name: str) -> _Text:
        return self._texts.get(name) or _Text("", "file", "")

    def _check_role(self) -> None:
        if self._node.role != "all":
            raise ControlUnavailable(
                f"this node runs role {self._node.role!r} (radbridge run --split): runtime "
                "changes need a node that runs everything; change the files and restart")


def _validate(text: str, file: str, deployed: Mapping[str, ChannelConfig]
              ) -> list[ChannelConfig]:
    """The channels of `text`, checked like `radbridge validate` checks a file, with a
    stand-in per deployed channel (its name and source) for the cross-channel checks."""
    own_lines = text.count("\n") + 1
    stand_ins = [_stand_in(channel) for channel in deployed.values()]
    combined = text if not stand_ins else (
        text.rstrip("\n") + "\n" + yaml.safe_dump_all(stand_ins, explicit_start=True))
    try:
        loaded = load_channel_text(combined, file)
    except ConfigError as exc:
        own = [i for i in exc.issues if i.line is None or i.line <= own_lines]
        raise ConfigError(own or exc.issues) from None
    configs = [config for config in loaded if config.name not in deployed]
    if not configs:
        raise ConfigError([ConfigIssue(file, "", "no channel in the body; expected a channel "
                                       "mapping (name, source, destinations)", 1)])
    return configs


def _stand_in(channel: ChannelConfig) -> dict[str, Any]:
    """A deployed channel as far as the cross-channel checks look: its name and source."""
    source = channel.source.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return {"name": channel.name, "source": _escaped(source),
            "destinations": [{"name": "stand-in", "type": "null"}]}


def _escaped(value: Any) -> Any:
    """Strings with '${' written so that substitution gives them back unchanged."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, dict):
        return {key: _escaped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    return value


def _file_texts(paths: Sequence[Path]) -> dict[str, dict[str, str]]:
    """File -> channel name -> its YAML, for the files `paths` name (unreadable: left out)."""
    files, _ = channel_files(list(paths))
    found: dict[str, dict[str, str]] = {}
    for path in files:
        try:
            found[str(path)] = channel_texts(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError):
            continue
    return found

