"""Delivery workers: one async loop per destination, sending what the outbox leases.

A worker claims a small batch (at most `concurrency` x PREFETCH) and sends with at
most `concurrency` sends at once. A delivery that waited locally for more than half its
lease is released instead of sent, so a slow peer never makes a lease expire under a
send (which could let another node send it too). A failing send never blocks other
deliveries: it is recorded for a retry later and the worker moves on.
"""

from __future__ import annotations

import asyncio
import logging
import time

from radbridge.engine import metrics
from radbridge.engine.adapters import Destination
from radbridge.engine.config import DestinationBase
from radbridge.engine.outbox import DeliveryResult, OutboundDelivery, Outbox, OutboxWriter
from radbridge.engine.outbox import Outcome as Result
from radbridge.engine.retry import RetryPolicy
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError

log = logging.getLogger(__name__)

PREFETCH = 8


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: list[OutboundDelivery] = []

    def wake(self) -> None:
        """New deliveries may be due (called from the event loop)."""
        self._wake.set()

    async def run(self) -> None:
        queue_policy = self.config.queue
        while not self._stopping.is_set():
            batch = await asyncio.to_thread(
                self._outbox.claim, self.channel, self.config.name,
                limit=queue_policy.concurrency * PREFETCH, lease_seconds=queue_policy.lease,
                ordered=queue_policy.ordering_key is not None,
            )
            claimed_at = time.monotonic()
            self._waiting = list(batch)
            while self._waiting and not self._stopping.is_set():
                await self._slots.acquire()
                if self._stopping.is_set():
                    self._slots.release()
                    break
                delivery = self._waiting.pop(0)
                if time.monotonic() - claimed_at > queue_policy.lease / 2:
                    self._slots.release()
                    self._writer.record(DeliveryResult(delivery, Result.RELEASED))
                    continue
                task = asyncio.create_task(self._deliver(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if not batch:
                await self._sleep()
        for delivery in self._waiting:
            self._writer.record(DeliveryResult(delivery, Result.RELEASED))
        self._waiting = []

    async def _sleep(self) -> None:
        self._wake.clear()
        waiters = [asyncio.create_task(self._wake.wait()),
                   asyncio.create_task(self._stopping.wait())]
        await asyncio.wait(waiters, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()

    async def _deliver(self, delivery: OutboundDelivery) -> None:
        started = time.perf_counter()
        try:
            sent = await self._destination.send(delivery)
            result = DeliveryResult(delivery, Result.SENT, response=sent.response,
                                    detail=sent.detail)
        except asyncio.CancelledError:
            self._writer.record(DeliveryResult(delivery, Result.RELEASED))
            raise
        except PermanentDeliveryError as exc:
            result = self._failed(delivery, str(exc), permanent=True)
        except TransientDeliveryError as exc:
            result = self._failed(delivery, str(exc), permanent=False)
        except Exception as exc:  # an adapter bug must fail this delivery, not the worker
            log.exception("destination %s/%s raised on delivery %s",
                          self.channel, self.config.name, delivery.delivery_id)
            result = self._failed(delivery, f"{type(exc).__name__}: {exc}", permanent=False)
        finally:
            self._slots.release()
        metrics.DELIVERY_LATENCY.labels(self.channel, self.config.name).observe(
            time.perf_counter() - started)
        self._writer.record(result)

    def _failed(
        self, delivery: OutboundDelivery, reason: str, *, permanent: bool
    ) -> DeliveryResult:
        log.info("delivery %s to %s/%s failed (attempt %d): %s", delivery.delivery_id,
                 self.channel, self.config.name, delivery.attempt, reason[:200])
        return DeliveryResult(delivery, Result.FAILED, policy=self._policy, detail=reason,
                              permanent=permanent)

    def stop(self) -> None:
        """Stop claiming; `run` returns after releasing what it had claimed but not sent."""
        self._stopping.set()

    async def drain(self, drain_timeout: float) -> None:
        """After `run` returned: let sends in flight finish (up to the timeout), cancel the rest."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=drain_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._destination.close()
