"""Results from a batching thread back to their waiters: one wake-up per event loop.

A group-commit thread finishes many waiters' work at once. Handing each result over
through `asyncio.wrap_future` costs one `call_soon_threadsafe` per waiter (a write to
the loop's self-pipe and a loop iteration); at thousands of messages a second that is
as much CPU as the work. Waiters on an event loop register an asyncio future with its
loop; `settle` resolves a whole batch's futures on each loop in one call. Waiters on a
thread keep a `concurrent.futures.Future`, resolved at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Waiter(Generic[T]):
    """Who waits for one item's result: a thread's future, or a loop's and its loop."""

    future: Future[T] | asyncio.Future[T]
    loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_thread(cls) -> Waiter[T]:
        return cls(Future())

    @classmethod
    def for_loop(cls) -> Waiter[T]:
        """For the running loop; `await waiter.result()` there."""
        loop = asyncio.get_running_loop()
        return cls(loop.create_future(), loop)

    def thread_future(self) -> Future[T]:
        """The future of a waiter made `for_thread`."""
        assert isinstance(self.future, Future)
        return self.future

    async def result(self) -> T:
        """The result of a waiter made `for_loop`, on its loop."""
        assert isinstance(self.future, asyncio.Future)
        return await self.future


def settle(outcomes: Iterable[tuple[Waiter[T], T | BaseException]]) -> None:
    """Resolve each waiter with its result or exception (see the module docstring)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[T],
                                                        T | BaseException]]] = {}
    for waiter, outcome in outcomes:
        if waiter.loop is None:
            _resolve(waiter.future, outcome)
        else:
            assert isinstance(waiter.future, asyncio.Future)
            by_loop.setdefault(waiter.loop, []).append((waiter.future, outcome))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve_all, settled)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            log.debug("results for a closed event loop dropped")


def _resolve_all(settled: list[tuple[asyncio.Future[T], T | BaseException]]) -> None:
    for future, outcome in settled:
        if not future.done():  # a waiter that was cancelled has gone
            _resolve(future, outcome)


def _resolve(future: Future[T] | asyncio.Future[T], outcome: T | BaseException) -> None:
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
