"""The two small interfaces every protocol adapter implements, and their registries.

A destination sends one leased delivery and says how it went by returning or raising
(TransientDeliveryError: retry; PermanentDeliveryError: dead-letter). A source feeds
`receive` and acknowledges its peer only after `receive` returned. Wire formats live
in `radbridge.interfaces`, which registers its adapters here by type name (the `type`
of a channel file's source or destination); the engine itself provides `null` and
`channel`, which involve no wire at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from radbridge.engine.blobstore import BlobRef, BlobStore
from radbridge.engine.config import ChannelDestination, DestinationBase, NullDestination
from radbridge.engine.db import Database
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.errors import TransientDeliveryError, UnknownChannel

Receive = Callable[[Inbound], Awaitable[Receipt]]


@dataclass(frozen=True)
class SendResult:
    """What the peer answered, kept in the sent stage record (e.g. an HL7 ACK)."""

    response: bytes | None = None
    detail: str = ""


@dataclass(frozen=True)
class AdapterContext:
    """What adapters may use: the data directory, the blob store, `receive`, the store.

    `database` is for the engine's own destinations (the registry); wire adapters in
    `interfaces` have no business writing to the store except through `receive`.
    """

    data_dir: Path
    blobs: BlobStore
    inline_limit: int
    receive: Receive
    database: Database
    node_id: str = "local"

    def resolve(self, path: str) -> Path:
        """Relative paths in channel files are relative to the data directory."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.data_dir / candidate

    def content_chunks(self, delivery: OutboundDelivery) -> Iterator[bytes]:
        """The delivery's content in chunks, streamed from the blob store when large."""
        if delivery.blob_sha256 is not None:
            yield from self.blobs.iter_chunks(delivery.blob_sha256)
        else:
            yield delivery.content or b""


class Destination(Protocol):
    async def send(self, delivery: OutboundDelivery) -> SendResult: ...

    async def close(self) -> None: ...


class Source(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


DestinationFactory = Callable[[Any, AdapterContext], Destination]
SourceFactory = Callable[[str, Any, AdapterContext], Source]

_DESTINATIONS: dict[str, DestinationFactory] = {}
_SOURCES: dict[str, SourceFactory] = {}


def destination_type(name: str) -> Callable[[DestinationFactory], DestinationFactory]:
    """Register the factory that builds destinations of type `name` (decorator)."""

    def register(factory: DestinationFactory) -> DestinationFactory:
        _DESTINATIONS[name] = factory
        return factory

    return register


def source_type(name: str) -> Callable[[SourceFactory], SourceFactory]:
    """Register the factory that builds sources of type `name` (decorator)."""

    def register(factory: SourceFactory) -> SourceFactory:
        _SOURCES[name] = factory
        return factory

    return register


def build_destination(config: DestinationBase, context: AdapterContext) -> Destination:
    kind: str = config.type  # type: ignore[attr-defined]
    try:
        factory = _DESTINATIONS[kind]
    except KeyError:
        raise LookupError(f"no adapter registered for destination type {kind!r}") from None
    return factory(config, context)


def build_source(channel: str, config: Any, context: AdapterContext) -> Source | None:
    """The source adapter, or None for types fed from elsewhere (http, channel)."""
    factory = _SOURCES.get(config.type)
    return None if factory is None else factory(channel, config, context)


class NullSink:
    """Accepts everything and keeps nothing: benchmarks and archive-only channels."""

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        return SendResult(detail="discarded by null destination")

    async def close(self) -> None:
        return None


class ChannelHandOver:
    """Feeds another channel; the idempotency key dedups a hand-over repeated after a crash."""

    def __init__(self, target: str, context: AdapterContext) -> None:
        self._target = target
        self._context = context

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        content = delivery.content
        blob = None
        if delivery.blob_sha256 is not None:
            blob = BlobRef(delivery.blob_sha256, delivery.size)
        try:
            receipt = await self._context.receive(Inbound(
                channel=self._target, content_type=delivery.content_type,
                source=f"channel:{delivery.channel}", content=content, blob=blob,
                dedup_key=delivery.idempotency_key, patient_id=delivery.patient_id,
                accession=delivery.accession, study_uid=delivery.study_uid,
                metadata=delivery.metadata,
            ))
        except UnknownChannel as exc:  # undeployed at runtime: it waits for a redeploy
            raise TransientDeliveryError(f"channel {self._target} is not deployed: {exc}") \
                from exc
        return SendResult(
            detail=f"handed to channel {self._target} as message {receipt.message_id}")

    async def close(self) -> None:
        return None


@destination_type("null")
def _null(config: NullDestination, context: AdapterContext) -> Destination:
    return NullSink()


@destination_type("channel")
def _channel(config: ChannelDestination, context: AdapterContext) -> Destination:
    return ChannelHandOver(config.channel, context)
