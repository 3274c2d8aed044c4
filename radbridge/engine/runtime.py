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
process cannot; `radbridge run --split` starts them as a pair. The `alerts` source runs
beside the delivery workers (its peer-down rule judges the peers this process sends to).

Channels change at runtime (radbridge.engine.node_control audits each change):
`deploy_channel`, `undeploy_channel` (its source stops, its workers finish the sends in
flight, what is still queued stays in the outbox), `pause_channel` and
`resume_channel`. Paused, a channel takes nothing in and sends nothing: its workers
stop like at shutdown, and its source stops, except that MLLP and DICOM listeners
keep listening and answer each message "not now" (ChannelPaused: AR, C-STORE 0xA700),
and http and STOW-RS channels answer 503 / 0xA700. A channel fed by other channels
(source `channel`) still stores what they hand over: refusing would only make their
deliveries retry and, in the end, dead-letter. Its deliveries wait like the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Literal

from radbridge.engine import audit, metrics
from radbridge.engine.adapters import AdapterContext, Source, build_destination, build_source
from radbridge.engine.alerts import source as alerts_source
from radbridge.engine.assembly import StudyAssembler
from radbridge.engine.audit_export.forwarder import start_forwarding
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import ChannelConfig
from radbridge.engine.control import ChannelExists, ChannelPaused
from radbridge.engine.db import Database
from radbridge.engine.dispatcher import DeliveryWorker
from radbridge.engine.migrate import upgrade
from radbridge.engine.outbox import DeliveryResult, OutboundDelivery, Outbox, OutboxWriter, Outcome
from radbridge.engine.peers import PEERS
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

BESIDE_WORKERS = frozenset({alerts_source.SOURCE_TYPE})
"""Source types started where the delivery workers run (roles all and process)."""
LISTENING_WHILE_PAUSED = frozenset({"mllp", "dimse"})
"""Sources that keep listening while their channel is paused and refuse each message,
so a peer sees a paused channel, not a server that is gone."""
ACCEPTING_WHILE_PAUSED = frozenset({"channel"})
"""Sources whose messages a paused channel still stores (hand-overs between channels)."""


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
        self.assembler = self._assembler()
        self._by_destination: dict[tuple[str, str], DeliveryWorker] = {}
        self._delivery: dict[str, list[tuple[DeliveryWorker, asyncio.Task[None]]]] = {}
        self._sources: dict[str, Source] = {}
        self.paused: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._batch_turn = asyncio.Lock()
        """Held around each processing batch and each change to the deployed channels,
        which the processor's thread reads."""
        self.ready = False

    @property
    def sources(self) -> list[Source]:
        """The sources running now."""
        return list(self._sources.values())

    @property
    def workers(self) -> list[DeliveryWorker]:
        """The delivery workers running now."""
        return [worker for pairs in self._delivery.values() for worker, _ in pairs]

    async def receive(self, inbound: Inbound) -> Receipt:
        """Store a message for a deployed channel; the caller acknowledges afterwards."""
        channel = self.channels.get(inbound.channel)
        if channel is None:
            raise UnknownChannel(f"no deployed channel named {inbound.channel!r}")
        if (inbound.channel in self.paused
                and channel.source.type not in ACCEPTING_WHILE_PAUSED):
            raise ChannelPaused(inbound.channel)
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
        for channel in self.channels.values():
            metrics.CHANNEL_PAUSED.labels(channel.name).set(0)
            if self._runs_source(channel):
                await self._start_source(channel)
        if self.settings.audit_syslog is not None:
            self._tasks.append(start_forwarding(self.database, self.settings.audit_syslog,
                                                self.node_id, self._stopping))
        self.ready = True
        log.info("node %s started (%s): %d channel(s), %d destination worker(s)",
                 self.settings.node_id, self.role, len(self.channels), len(self.workers))

    async def _start_processing(self) -> None:
        released = await asyncio.to_thread(self.outbox.release_own_leases)
        if released:
            log.info("released %d deliveries this node had in flight before it stopped", released)
        self.writer.start()
        for channel in self.channels.values():
            self._start_workers(channel)
        self._tasks.append(asyncio.create_task(self._process_loop(), name="processor"))
        self._start_loops()

    def _start_loops(self) -> None:
        """Study assembly and result revisions, once a deployed channel needs them."""
        wanted = {
            "assembly": (self.assembler.active, self._assembly_loop),
            "revisions": (any(d.type == "results" for c in self.channels.values()
                              for d in c.destinations), self._revisions_loop),
        }
        for name, (needed, loop) in wanted.items():
            if needed and name not in self._loops:
                self._loops[name] = asyncio.create_task(loop(), name=name)

    def _start_workers(self, channel: ChannelConfig) -> None:
        adapters = [(d, build_destination(d, self.context)) for d in channel.destinations]
        pairs = []
        for destination, adapter in adapters:
            worker = DeliveryWorker(channel.name, destination, adapter, self.outbox,
                                    self.writer, poll_interval=self._poll)
            self._by_destination[(channel.name, destination.name)] = worker
            task = asyncio.create_task(worker.run(),
                                       name=f"deliver:{channel.name}/{destination.name}")
            pairs.append((worker, task))
        self._delivery[channel.name] = pairs

    async def _stop_workers(self, name: str) -> None:
        """Stop claiming, release what was claimed and unsent, let sends in flight end."""
        pairs = self._delivery.pop(name, [])
        for worker, _ in pairs:
            self._by_destination.pop((name, worker.config.name), None)
            worker.stop()
        await asyncio.gather(*(task for _, task in pairs), return_exceptions=True)
        await asyncio.gather(*(worker.drain(self._drain_timeout) for worker, _ in pairs))

    def _runs_source(self, channel: ChannelConfig) -> bool:
        if channel.source.type in BESIDE_WORKERS:
            return self.role != "ingest"
        return self.role != "process"

    async def _start_source(self, channel: ChannelConfig) -> None:
        source = build_source(channel.name, channel.source, self.context)
        if source is not None:
            await source.start()
            self._sources[channel.name] = source

    async def _stop_source(self, name: str) -> None:
        source = self._sources.pop(name, None)
        if source is not None:
            await source.stop()

    async def stop(self) -> None:
        """Graceful shutdown; see the module docstring for the order."""
        self.ready = False
        for source in self.sources:
            await source.stop()
        self._stopping.set()
        workers = self.workers
        for worker in workers:
            worker.stop()
        await asyncio.gather(*self._tasks, *self._loops.values(),
                             *(task for pairs in self._delivery.values() for _, task in pairs),
                             return_exceptions=True)
        await asyncio.gather(*(w.drain(self._drain_timeout) for w in workers))
        await asyncio.to_thread(self.receiver.stop)
        await asyncio.to_thread(self.writer.stop)
        self.database.dispose()
        log.info("node %s stopped", self.settings.node_id)

    # --- runtime changes (radbridge.engine.node_control audits them) ---------------------

    async def deploy_channel(self, channel: ChannelConfig) -> None:
        """Start a channel not deployed yet: pipeline, workers and source, as at start-up
        (a paused name stays paused). Whatever fails to start is taken down again."""
        if channel.name in self.channels:
            raise ChannelExists(f"channel {channel.name!r} is deployed already")
        async with self._batch_turn:
            self.channels[channel.name] = channel
            self.pipelines[channel.name] = ChannelPipeline(channel)
            self.assembler = self._assembler()
        try:
            if self.role != "ingest" and channel.name not in self.paused:
                self._start_workers(channel)
                self._start_loops()
            if self._runs_source(channel) and (
                    channel.name not in self.paused
                    or channel.source.type in LISTENING_WHILE_PAUSED):
                await self._start_source(channel)
        except BaseException:
            await self.undeploy_channel(channel.name)
            raise
        metrics.CHANNEL_PAUSED.labels(channel.name).set(1 if channel.name in self.paused else 0)
        log.info("channel %s deployed on node %s", channel.name, self.node_id)

    async def undeploy_channel(self, name: str) -> None:
        """Stop the channel's source, stop processing its messages, let its workers finish
        the sends in flight, and forget it. Queued deliveries and unprocessed messages
        stay in the store (a later deploy of the same name picks them up)."""
        channel = self._deployed(name)
        await self._stop_source(name)
        async with self._batch_turn:
            del self.channels[name]
            del self.pipelines[name]
            self.assembler = self._assembler()
        await self._stop_workers(name)
        self.paused.discard(name)
        for destination in channel.destinations:
            PEERS.forget(f"{name}/{destination.name}")
        with contextlib.suppress(KeyError):
            metrics.CHANNEL_PAUSED.remove(name)
        log.info("channel %s undeployed from node %s", name, self.node_id)

    async def pause_channel(self, name: str) -> bool:
        """Take nothing in and send nothing (see the module docstring); False when the
        channel was paused already."""
        channel = self._deployed(name)
        if name in self.paused:
            return False
        self.paused.add(name)
        metrics.CHANNEL_PAUSED.labels(name).set(1)
        if channel.source.type not in LISTENING_WHILE_PAUSED:
            await self._stop_source(name)
        await self._stop_workers(name)
        log.info("channel %s paused on node %s", name, self.node_id)
        return True

    async def resume_channel(self, name: str) -> bool:
        """Undo `pause_channel`: workers first, then the source; False when not paused."""
        channel = self._deployed(name)
        if name not in self.paused:
            return False
        if self.role != "ingest" and name not in self._delivery:
            self._start_workers(channel)
        if self._runs_source(channel) and name not in self._sources:
            await self._start_source(channel)
        self.paused.discard(name)
        metrics.CHANNEL_PAUSED.labels(name).set(0)
        log.info("channel %s resumed on node %s", name, self.node_id)
        return True

    def _deployed(self, name: str) -> ChannelConfig:
        channel = self.channels.get(name)
        if channel is None:
            raise UnknownChannel(f"no channel {name!r} is deployed")
        return channel

    def _assembler(self) -> StudyAssembler:
        return StudyAssembler(self.database, self.channels, self.receiver.receive_sync,
                              audit_chain=f"{self.node_id}/assembly")

    def reserve(self, channel: str, destination: str) -> bool:
        """The processor asks whether a local worker can take a fresh delivery directly."""
        worker = self._by_destination.get((channel, destination))
        return worker is not None and worker.reserve()

    async def _process_loop(self) -> None:
        while not self._stopping.is_set():
            # Cleared before the batch, so a commit during it is not missed.
            self._processed.clear()
            try:
                async with self._batch_turn:
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
        while not self._stopping.is_set():
            assembler = self.assembler  # replaced when channels change
            try:
                await asyncio.to_thread(assembler.run_once)
            except Exception:  # the store is down or a bug: keep the node alive, try again
                log.exception("study assembly failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=assembler.interval())

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
            worker = self._by_destination.get(key)
            if worker is not None:
                worker.offer(group)
                continue
            for delivery in group:  # paused or undeployed meanwhile: due again at once
                self.writer.record(DeliveryResult(delivery, Outcome.RELEASED))

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
        self._wake_workers({key for key, worker in tuple(self._by_destination.items())
                            if worker.config.queue.ordering_key is not None})

    def _wake_workers(self, which: set[tuple[str, str]] | None) -> None:
        """Tell workers (all, or those of `which`) that the outbox may hold due work."""
        if self._loop is None or self._loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for key, worker in tuple(self._by_destination.items()):  # changes on the loop
            if which is not None and key not in which:
                continue
            if running is self._loop:
                worker.wake()
            else:
                self._loop.call_soon_threadsafe(worker.wake)

    def _config_events(self) -> list[audit.AuditRecord]:
        events = []
        for name, channel in self.channels.items():
            events.append(audit.AuditRecord(
                action="config.loaded", actor=f"node:{self.settings.node_id}", channel=name,
                detail={"sha256": config_digest(channel),
                        "destinations": [d.name for d in channel.destinations]},
            ))
        return events


def config_digest(channel: ChannelConfig) -> str:
    """SHA-256 of the channel's canonical JSON: what the audit says was deployed."""
    document = json.dumps(channel.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(document.encode()).hexdigest()
