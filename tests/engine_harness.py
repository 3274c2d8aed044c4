"""Builds the engine's parts on a test store without a running node, for exact control."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import ChannelConfig
from radbridge.engine.db import Database
from radbridge.engine.models import Delivery, Message
from radbridge.engine.outbox import Outbox, OutboxWriter
from radbridge.engine.pipeline import ChannelPipeline
from radbridge.engine.processor import Processor
from radbridge.engine.receiver import GroupCommitter, Inbound, Receipt


def channel(name: str = "lab", **overrides: Any) -> ChannelConfig:
    document: dict[str, Any] = {
        "name": name,
        "source": {"type": "channel"},
        "destinations": [{"name": "out", "type": "null"}],
    }
    document.update(overrides)
    return ChannelConfig.model_validate(document)


class Harness:
    """A receiver, a processor and an outbox over one store."""

    def __init__(self, database: Database, blob_dir: Path, channels: list[ChannelConfig],
                 *, inline_limit: int = 1024, node_id: str = "node-a") -> None:
        self.database = database
        self.blobs = BlobStore(blob_dir)
        self.channels = {c.name: c for c in channels}
        self.receiver = GroupCommitter(database, self.blobs, inline_limit=inline_limit)
        self.processor = Processor(database, self.blobs,
                                   {c.name: ChannelPipeline(c) for c in channels},
                                   inline_limit=inline_limit)
        self.outbox = Outbox(database, node_id)
        self.writer = OutboxWriter(database, node_id)

    def receive(self, content: bytes, channel: str | None = None, **fields: Any) -> Receipt:
        name = channel or next(iter(self.channels))
        return self.receiver.receive_sync(Inbound(
            channel=name, content_type=fields.pop("content_type", "text/plain"),
            source="test", content=content, **fields))

    def process_all(self) -> int:
        total = 0
        while handled := self.processor.process_batch().count:
            total += handled
        return total

    def message(self, message_id: int) -> Message:
        with self.database.read() as session:
            found = session.get(Message, message_id)
            assert found is not None
            return found

    def deliveries(self, message_id: int | None = None) -> list[Delivery]:
        with self.database.read() as session:
            statement = select(Delivery).order_by(Delivery.id)
            if message_id is not None:
                statement = statement.where(Delivery.message_id == message_id)
            return list(session.execute(statement).scalars())


@contextmanager
def harness(database: Database, tmp_path: Path, channels: list[ChannelConfig],
            **options: Any) -> Iterator[Harness]:
    made = Harness(database, tmp_path / "blobs", channels, **options)
    made.receiver.start()
    made.writer.start()
    try:
        yield made
    finally:
        made.receiver.stop()
        made.writer.stop()
