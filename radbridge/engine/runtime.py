"""A Radbridge node: the channels deployed in one process, and their workers.

Start-up order: migrate the store, release what this node's previous run left in
flight, record the config load in the audit ledger, then start the receiver, the
processor, one delivery worker per destination, and the sources. Shutdown runs the
other way: sources stop first (nothing new is acknowledged), the processor finishes its
batch, workers stop claiming and let sends in flight finish, unsent claims are
released, and the writers commit what they hold. Whatever a crash interrupts instead
is picked up on restart (or by another node when leases expire).

A node may also run half of this: role "ingest" (sources and receiving only) or
"process" (pipelines and deliveries only, finding received messages by polling the
store). Two such processes on one store use both cores of a machine, which one Python
process cannot; `radbridge run --split` starts them as a pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Literal

from radbridge.engine import audit
from radbridge.engine.adapters import AdapterContext, Source, build_destination, build_source
from radbridge.engine.assembly import StudyAssembler
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import ChannelConfig
from radbridge.engine.db import Database
from radbridge.engine.dispatcher import DeliveryWorker
from radbridge.engine.migrate import upgrade
from radbridge.engine.outbox import OutboundDelivery, Outbox, OutboxWriter
from radbridge.engine.pipeline import ChannelPipeline
from radbridge.engine.processor import Processor
from radbridge.engine.receiver import GroupCommitter, Inbound, Receipt
from radbridge.engine.results.revisions import send_pending
from radbridge.engine.settings import Settings
from radbridge.errors import UnknownChannel

log = logging.getLogger(__name__)


REVISIONS_INTERVAL = 2.0
"""Seconds between passes over the result revisions still pending."""

Role = Literal["all", "ingest", "process"]
"""What a node runs; `radbridge run --split` runs "ingest" and "process" side by side."""


class Node:
    """Runs a set of channels against one store; several nodes may share PostgreSQL."""

    def __init__(
        self,
        settings: Settings,
        channels: Sequence[ChannelConfig],
        *,
        poll_interval: float = 0.5,
        drain_timeout: float = 30.0,
        linger: float = 0.005,
        role: Role = "all",
    ) -> None:
        """`role`: "all" runs everything; "ingest" only the sources (and receiving);
        "process" only pipelines and deliveries, finding work by polling the store."""
        self.role = role
        self._linger = linger
        self.settings = settings
        self.channels = {c.name: c for c in channels if c.enabled}
        self.database = Database(settings.database_url)
        self.blobs = BlobStore(settings.blob_dir)
        self.pipelines = {name: ChannelPipeline(c) for name, c in self.channels.items()}
        self._poll = poll_interval
        self._drain_timeout = drain_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._processed = asyncio.Event()
        self._stopping = asyncio.Event()
        node = settings.node_id
        self.receiver = GroupCommitter(self.database, self.blobs,
                                       inline_limit=settings.inline_limit,
                                       on_commit=self._wake_processor,
                                       audit_chain=f"{node}/receiver")
        self.outbox = Outbox(self.database, settings.node_id)
        self.writer = OutboxWriter(self.database, node, on_commit=self._after_outcomes,
                                   audit_chain=f"{node}/outbox")
        self.node_id = settings.node_id
        self.processor = Processor(self.database, self.blobs, self.pipelines,
                                   inline_limit=settings.inline_limit, handoff=self,
                                   audit_chain=f"{node}/processor")
        self.context = AdapterContext(settings.data_dir, self.blobs, settings.inline_limit,
                                      self.receive, self.database, settings.node_id)
        self.assembler = StudyAssembler(self.database, self.channels,
                                        self.receiver.receive_sync,
                                        audit_chain=f"{node}/assembly")
        self.workers: list[DeliveryWorker] = []
        self._by_destination: dict[tuple[str, str], DeliveryWorker] = {}
        self.sources: list[Source] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False

    async def receive(self, inbound: Inbound) -> Receipt:
        """Store a message for a deployed channel; the caller acknowledges afterwards."""
        if inbound.channel not in self.pipelines:
            raise UnknownChannel(f"no deployed channel named {inbound.channel!r}")
        return await self.receiver.receive(inbound)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(upgrade, self.database)
        await asyncio.to_thread(audit.append_now, self.database, self._config_events(),
                                f"{self.node_id}/node")
        self.receiver.start()
        if self.role != "ingest":
            await self._start_processing()
        if self.role != "process":
            for name, channel in self.channels.items():
                source = build_source(name, channel.source, self.context)
                if source is not None:
                    await source.start()
                    self.sources.append(source)
        self.ready = True
        log.info("node %s started (%s): %d channel(s), %d destination worker(s)",
                 self.settings.node_id, self.role, len(self.channels), len(self.workers))

    async def _start_processing(self) -> None:
        released = await asyncio.to_thread(self.outbox.release_own_leases)
        if released:
            log.info("released %d deliveries this node had in flight before it stopped", released)
        self.writer.start()
        for channel in self.channels.values():
            for destination in channel.destinations:
                adapter = build_destination(destination, self.context)
                worker = DeliveryWorker(channel.name, destination, adapter, self.outbox,
                                        self.writer, poll_interval=self._poll)
                self.workers.append(worker)
                self._by_destination[(channel.name, destination.name)] = worker
        self._tasks.append(asyncio.create_task(self._process_loop(), name="processor"))
        if self.assembler.active:
            self._tasks.append(asyncio.create_task(self._assembly_loop(), name="assembly"))
        if any(d.type == "results" for c in self.channels.values() for d in c.destinations):
            self._tasks.append(asyncio.create_task(self._revisions_loop(), name="revisions"))
        self._tasks += [asyncio.create_task(w.run(), name=f"deliver:{w.channel}/{w.config.name}")
                        for w in self.workers]

    async def stop(self) -> None:
        """Graceful shutdown; see the module docstring for the order."""
        self.ready = False
        for source in self.sources:
            await source.stop()
        self._stopping.set()
        for worker in self.workers:
            worker.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(w.drain(self._drain_timeout) for w in self.workers))
        await asyncio.to_thread(self.receiver.stop)
        await asyncio.to_thread(self.writer.stop)
        self.database.dispose()
        log.info("node %s stopped", self.settings.node_id)

    def reserve(self, channel: str, destination: str) -> bool:
        """The processor asks whether a local worker can take a fresh delivery directly."""
        worker = self._by_destination.get((channel, destination))
        return worker is not None and worker.reserve()

    async def _process_loop(self) -> None:
        while not self._stopping.is_set():
            # Cleared before the batch, so a commit during it is not missed.
            self._processed.clear()
            try:
                processed = await asyncio.to_thread(self.processor.process_batch)
            except Exception:  # the store is down or a bug: keep the node alive, try again
                log.exception("processing a batch failed; retrying")
                for worker in self.workers:
                    worker.cancel_reservations()
                await asyncio.sleep(1.0)
                continue
            if processed.count:
                self._hand_over(processed.handed)
                self._wake_workers(processed.queued)
                if processed.count >= self.processor.batch:
                    continue  # a backlog: no waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._processed.wait(), timeout=self._poll)
            if self._processed.is_set() and self._linger:
                # Woken by a commit: let a few more arrive so that one transaction
                # processes several (the source was acknowledged already).
                await asyncio.sleep(self._linger)

    async def _assembly_loop(self) -> None:
        """Announce complete studies; see radbridge.engine.assembly."""
        interval = self.assembler.interval()
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self.assembler.run_once)
            except Exception:  # the store is down or a bug: keep the node alive, try again
                log.exception("study assembly failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)

    async def _revisions_loop(self) -> None:
        """Hand on the result revisions that decisions outside a delivery owe (a study
        linked by hand through the API or CLI), and any a crash left pending."""
        origin = f"node:{self.node_id}/revisions"
        while not self._stopping.is_set():
            try:
                await send_pending(self.context, origin=origin)
            except Exception:  # the store is down or a channel missing: log, try again
                log.exception("handing on result revisions failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=REVISIONS_INTERVAL)

    def _hand_over(self, deliveries: list[OutboundDelivery]) -> None:
        grouped: dict[tuple[str, str], list[OutboundDelivery]] = {}
        for delivery in deliveries:
            grouped.setdefault((delivery.channel, delivery.destination), []).append(delivery)
        for key, group in grouped.items():
            self._by_destination[key].offer(group)

    def _wake_processor(self) -> None:
        """Called from the receiver's thread after each commit."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._processed.set)

    def wake(self) -> None:
        """Look for work now (after a reprocess or retry through the API)."""
        self._wake_processor()
        self._wake_workers(None)

    def _after_outcomes(self) -> None:
        """From the writer's thread: an outcome on an ordered destination may make the
        next delivery of its key due; unordered ones become due only by time."""
        self._wake_workers({key for key, worker in self._by_destination.items()
                            if worker.config.queue.ordering_key is not None})

    def _wake_workers(self, which: set[tuple[str, str]] | None) -> None:
        """Tell workers (all, or those of `which`) that the outbox may hold due work."""
        if self._loop is None or self._loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for key, worker in self._by_destination.items():
            if which is not None and key not in which:
                continue
            if running is self._loop:
                worker.wake()
            else:
                self._loop.call_soon_threadsafe(worker.wake)

    def _config_events(self) -> list[audit.AuditRecord]:
        events = []
        for name, channel in self.channels.items():
            document = json.dumps(channel.model_dump(mode="json", by_alias=True), sort_keys=True)
            events.append(audit.AuditRecord(
                action="config.loaded", actor=f"node:{self.settings.node_id}", channel=name,
                detail={"sha256": hashlib.sha256(document.encode()).hexdigest(),
                        "destinations": [d.name for d in channel.destinations]},
            ))
        return events
