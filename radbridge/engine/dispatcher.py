"""Delivery workers: one async loop per destination, sending what the outbox leases.

Deliveries reach a worker two ways: the processor hands over fresh ones it leased to
this node (`reserve` + `offer`), and the worker claims due ones from the outbox (retries,
work other nodes queued, leases that expired). It sends with at most `concurrency`
sends at once. A delivery that waited locally for more than half its lease is released
instead of sent, so a slow peer never makes a lease expire under a send (which could
let another node send it too). At most `concurrency` x PREFETCH sends may be done but
not yet recorded (what a crash can make the peer see twice); and a delivery whose
outcome this node is still recording is never sent again if a claim returns it. A
failing send never blocks other deliveries: it is recorded for a retry later and the
worker moves on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable

from radbridge.engine import metrics
from radbridge.engine.adapters import Destination
from radbridge.engine.config import DestinationBase
from radbridge.engine.outbox import DeliveryResult, OutboundDelivery, Outbox, OutboxWriter, Outcome
from radbridge.engine.peers import PEERS, PeerTracker, is_connection_failure, peer_label
from radbridge.engine.retry import RetryPolicy
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError

log = logging.getLogger(__name__)

PREFETCH = 8
"""Sends done but not yet recorded, per unit of concurrency (bounds crash duplicates)."""
CLAIM_BATCH = 32
"""Deliveries leased per claim, per unit of concurrency (claimed but unsent ones are
simply released or expire: they add no duplicates)."""


class DeliveryWorker:
    """Sends one destination's deliveries until stopped, then drains."""

    def __init__(
        self,
        channel: str,
        config: DestinationBase,
        destination: Destination,
        outbox: Outbox,
        writer: OutboxWriter,
        *,
        poll_interval: float = 0.5,
        peers: PeerTracker = PEERS,
    ) -> None:
        self.channel = channel
        self.config = config
        self._destination = destination
        self._outbox = outbox
        self._writer = writer
        self._poll = poll_interval
        self._policy = RetryPolicy(config.queue)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(config.queue.concurrency)
        self._unrecorded = asyncio.Semaphore(config.queue.concurrency * PREFETCH)
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: deque[tuple[OutboundDelivery, float]] = deque()
        # As many handed over as one claim would lease: a fuller hand-over means fewer
        # claim transactions, each of which takes the store's writer (SQLite).
        self._capacity = config.queue.concurrency * CLAIM_BATCH
        self._reserved = 0
        self._reserve_lock = threading.Lock()
        self._held: set[int] = set()
        """Deliveries being sent or having their outcome recorded right now."""
        self._claim_due = True  # the outbox may hold due work: look at start-up
        self._peers = peers
        self._peer = peer_label(config)

    def wake(self) -> None:
        """Deliveries may be due in the outbox (called from the event loop)."""
        self._claim_due = True
        self._wake.set()

    def reserve(self) -> bool:
        """Room for one handed-over delivery? (called from the processor's thread)"""
        with self._reserve_lock:
            if self._stopping.is_set() or len(self._waiting) + self._reserved >= self._capacity:
                return False
            self._reserved += 1
            return True

    def offer(self, deliveries: Iterable[OutboundDelivery]) -> None:
        """Take deliveries leased to this node by the processor (event loop)."""
        now = time.monotonic()
        with self._reserve_lock:
            for delivery in deliveries:
                self._waiting.append((delivery, now))
                self._reserved = max(0, self._reserved - 1)
        self._wake.set()

    def cancel_reservations(self) -> None:
        """The processor's transaction failed: what it reserved will not come."""
        with self._reserve_lock:
            self._reserved = 0

    async def run(self) -> None:
        lease = self.config.queue.lease
        while not self._stopping.is_set():
            if not self._waiting and self._claim_due:
                # Only when told or on the poll timer: handed-over deliveries need no
                # look at the outbox, and retries become due by time.
                self._claim_due = False
                await self._claim()
            if not self._waiting:
                await self._sleep()
                continue
            if self._unrecorded.locked():
                # Waiting on outcomes the writer is still gathering: commit them now.
                self._writer.hurry()
            if not await self._acquire(self._unrecorded):
                break
            if not await self._acquire(self._slots):
                self._unrecorded.release()
                break
            if not self._waiting:
                self._release_both()
                continue
            delivery, since = self._waiting.popleft()
            if time.monotonic() - since > lease / 2:
                self._release_both()
                self._writer.record(DeliveryResult(delivery, Outcome.RELEASED))
                continue
            task = asyncio.create_task(self._deliver(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        while self._waiting:
            delivery, _ = self._waiting.popleft()
            self._writer.record(DeliveryResult(delivery, Outcome.RELEASED))

    async def _acquire(self, semaphore: asyncio.Semaphore) -> bool:
        """Take a permit, or give up when the worker is stopped (a stalled store or peer
        must not keep shutdown waiting)."""
        if self._stopping.is_set():
            return False
        if not semaphore.locked():
            await semaphore.acquire()
            return True
        permit = asyncio.ensure_future(semaphore.acquire())
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({permit, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not permit.done():
            permit.cancel()
            await asyncio.gather(permit, return_exceptions=True)
        got = permit.done() and not permit.cancelled()
        if got and self._stopping.is_set():
            semaphore.release()
            return False
        return got

    async def _claim(self) -> None:
        queue_policy = self.config.queue
        limit = queue_policy.concurrency * CLAIM_BATCH
        batch = await asyncio.to_thread(
            self._outbox.claim, self.channel, self.config.name,
            limit=limit, lease_seconds=queue_policy.lease,
            ordered=queue_policy.ordering_key is not None,
        )
        if len(batch) >= limit:
            self._claim_due = True  # a full batch: there is probably more
        now = time.monotonic()
        # A delivery still being sent, or whose outcome we are still committing, comes
        # back here if that outlasted its lease; it is settled by that send, not resent.
        self._waiting.extend(
            (delivery, now) for delivery in batch if delivery.delivery_id not in self._held)

    async def _sleep(self) -> None:
        self._wake.clear()
        waiters = [asyncio.create_task(self._wake.wait()),
                   asyncio.create_task(self._stopping.wait())]
        done, _ = await asyncio.wait(waiters, timeout=self._poll,
                                     return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if not done:
            self._claim_due = True

    def _release_both(self) -> None:
        self._slots.release()
        self._unrecorded.release()

    async def _deliver(self, delivery: OutboundDelivery) -> None:
        self._held.add(delivery.delivery_id)
        try:
            try:
                result = await self._send(delivery)
            finally:
                self._slots.release()
            await asyncio.shield(self._writer.recorded(result))
        finally:
            self._held.discard(delivery.delivery_id)
            self._unrecorded.release()

    async def _send(self, delivery: OutboundDelivery) -> DeliveryResult:
        started = time.perf_counter()
        try:
            sent = await self._destination.send(delivery)
            self._note_peer(None)
            return DeliveryResult(delivery, Outcome.SENT, response=sent.response,
                                  detail=sent.detail)
        except asyncio.CancelledError:
            self._writer.record(DeliveryResult(delivery, Outcome.RELEASED))
            raise
        except PermanentDeliveryError as exc:
            self._note_peer(exc)
            return self._failed(delivery, str(exc), permanent=True)
        except TransientDeliveryError as exc:
            self._note_peer(exc)
            return self._failed(delivery, str(exc), permanent=False)
        except Exception as exc:  # an adapter bug must fail this delivery, not the worker
            self._note_peer(exc)
            # Exception text may quote content: the type here, the text in the store.
            log.error("destination %s/%s raised %s on delivery %s", self.channel,
                      self.config.name, type(exc).__name__, delivery.delivery_id)
            log.debug("traceback of delivery %s", delivery.delivery_id, exc_info=exc)
            return self._failed(delivery, f"{type(exc).__name__}: {exc}", permanent=False)
        finally:
            metrics.DELIVERY_LATENCY.labels(self.channel, self.config.name).observe(
                time.perf_counter() - started)

    def _note_peer(self, failure: Exception | None) -> None:
        """Up when the peer answered (a success, or a refusal that retrying cannot
        change); down when the attempt could not connect; other failures say nothing."""
        if self._peer is None:
            return
        where = f"{self.channel}/{self.config.name}"
        if failure is not None and is_connection_failure(failure):
            self._peers.unreachable(self._peer, where)
        elif failure is None or isinstance(failure, PermanentDeliveryError):
            self._peers.reached(self._peer, where)

    def _failed(
        self, delivery: OutboundDelivery, reason: str, *, permanent: bool
    ) -> DeliveryResult:
        # Only the reason's head ("HTTP 503", "timeout after 30s"): a peer's error body
        # can echo patient data, so the full reason goes to the store (last_error) only.
        log.info("delivery %s to %s/%s failed (attempt %d): %s", delivery.delivery_id,
                 self.channel, self.config.name, delivery.attempt,
                 reason.split(":", 1)[0][:80])
        return DeliveryResult(delivery, Outcome.FAILED, policy=self._policy, detail=reason,
                              permanent=permanent)

    def stop(self) -> None:
        """Stop claiming; `run` returns after releasing what it had claimed but not sent."""
        self._stopping.set()
        self._wake.set()

    async def drain(self, drain_timeout: float) -> None:
        """After `run` returned: let sends in flight finish (up to the timeout), cancel the rest."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=drain_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._destination.close()
