"""Directory source: files dropped in a folder become messages.

A file is taken once it has not changed for `min_age` (so half-written files wait),
streamed into the store, and moved aside or deleted only after the store committed it.
The dedup key (file name + content hash) makes a file that a crash left in place
after its commit a recognised duplicate, not a second message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path

from radbridge.engine.adapters import AdapterContext, Source, source_type
from radbridge.engine.blobstore import BlobRef
from radbridge.engine.config import DirectorySource
from radbridge.engine.receiver import Inbound
from radbridge.errors import RadbridgeError

log = logging.getLogger(__name__)


class DirectoryReader:
    def __init__(self, channel: str, config: DirectorySource, context: AdapterContext) -> None:
        self._channel = channel
        self._config = config
        self._context = context
        self._folder = context.resolve(config.path)
        self._done = (context.resolve(config.move_to) if config.move_to
                      else self._folder / ".processed")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._poll(), name=f"directory:{self._channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            try:
                for path in await asyncio.to_thread(self._ready_files):
                    await self._take(path)
            except RadbridgeError as exc:
                log.warning("channel %s: directory source paused: %s", self._channel, exc)
            await asyncio.sleep(self._config.poll_interval)

    def _ready_files(self) -> list[Path]:
        cutoff = time.time() - self._config.min_age
        files = [p for p in self._folder.glob(self._config.pattern)
                 if p.is_file() and not p.name.startswith(".") and p.stat().st_mtime <= cutoff]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    async def _take(self, path: Path) -> None:
        size = path.stat().st_size
        content: bytes | None = None
        ref: BlobRef | None = None
        if size <= self._context.inline_limit:
            content = await asyncio.to_thread(path.read_bytes)
            digest = hashlib.sha256(content).hexdigest()
        else:
            with path.open("rb") as handle:
                ref = await asyncio.to_thread(self._context.blobs.put_file, handle)
            digest = ref.sha256
        receipt = await self._context.receive(Inbound(
            channel=self._channel, content_type=self._config.content_type,
            source=f"file:{path.name}"[:255], content=content, blob=ref,
            dedup_key=f"{path.name[:180]}:{digest}",
        ))
        await asyncio.to_thread(self._finish, path)
        log.info("channel %s: file stored as message %s%s", self._channel, receipt.message_id,
                 " (duplicate)" if receipt.duplicate else "")

    def _finish(self, path: Path) -> None:
        if self._config.after == "delete":
            path.unlink(missing_ok=True)
            return
        self._done.mkdir(parents=True, exist_ok=True)
        path.replace(self._done / path.name)


@source_type("directory")
def _build(channel: str, config: DirectorySource, context: AdapterContext) -> Source:
    return DirectoryReader(channel, config, context)
