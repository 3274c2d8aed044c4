"""A thread that drains a queue in batches: the heart of every group commit here.

Whatever arrives while one batch is being committed goes into the next, so a busy
queue commits many items per transaction and an idle one commits each at once (or
after `linger`, for work whose caller is not waiting on the commit). `busy_linger`
waits a little for more only while batches have more than one item: several callers
each waiting for their commit (MLLP connections) otherwise settle into groups that take
turns, half of them per commit; a lone caller never waits. `quiet` ends a linger
early once nothing has arrived for that long: a steady stream fills batches up to the
whole linger, a trickle is committed after `quiet`, and `hurry` ends the linger of the
batch being gathered for a caller that cannot go on until it is handled.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")

_HURRY = object()
"""Queued by `hurry`: ends a linger; not an item."""


class BatchingThread(Generic[Item]):
    """Calls `handle(batch)` on its own thread for batches of up to `max_batch` items."""

    def __init__(
        self, name: str, handle: Callable[[list[Item]], None], *,
        max_batch: int = 256, linger: float = 0.0, busy_linger: float = 0.0,
        quiet: float = 0.0,
    ) -> None:
        self._busy_linger = busy_linger
        self._quiet = quiet
        self._last_size = 0
        self._name = name
        self._handle = handle
        self._max_batch = max_batch
        self._linger = linger
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Handle everything queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def put(self, item: Item) -> None:
        self._queue.put(item)

    def hurry(self) -> None:
        """Handle the batch being gathered now, without waiting out its linger."""
        self._queue.put(_HURRY)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            if first is _HURRY:  # nothing was being gathered
                continue
            batch = [first]
            linger = self._linger or (self._busy_linger if self._last_size > 1 else 0.0)
            deadline = time.monotonic() + linger
            while len(batch) < self._max_batch:
                wait = max(0.0, deadline - time.monotonic())
                if self._quiet:
                    wait = min(wait, self._quiet)
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                if item is _HURRY:
                    break
                batch.append(item)
            self._last_size = len(batch)
            self._handle(batch)
