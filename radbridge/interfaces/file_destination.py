"""File writer destination: one file per delivery, written atomically.

The file is named from the delivery's idempotency key by default, so a delivery sent
again after a crash rewrites the same file with the same bytes instead of adding one.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import FileDestination
from radbridge.engine.outbox import OutboundDelivery
from radbridge.errors import TransientDeliveryError


class FileWriter:
    def __init__(self, config: FileDestination, context: AdapterContext) -> None:
        self._config = config
        self._context = context
        self._directory = context.resolve(config.directory)

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        name = self._config.filename.format(
            idempotency_key=delivery.idempotency_key, message_id=delivery.message_id,
            channel=delivery.channel, destination=delivery.destination,
            generation=delivery.generation,
        )
        try:
            path = await asyncio.to_thread(self._write, name, delivery)
        except OSError as exc:
            raise TransientDeliveryError(
                f"cannot write {name} in {self._directory}: {exc}") from exc
        return SendResult(detail=f"wrote {path.name}")

    def _write(self, name: str, delivery: OutboundDelivery) -> Path:
        self._directory.mkdir(parents=True, exist_ok=True)
        final = self._directory / name
        fd, temp = tempfile.mkstemp(dir=self._directory, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self._context.content_chunks(delivery):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return final

    async def close(self) -> None:
        return None


@destination_type("file")
def _build(config: FileDestination, context: AdapterContext) -> Destination:
    return FileWriter(config, context)
