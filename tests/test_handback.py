"""Results handed from a worker thread to waiters: thread futures and asyncio futures."""

from __future__ import annotations

import asyncio
import threading

import pytest

from radbridge.engine.handback import Waiter, settle


async def test_a_batch_for_one_loop_wakes_it_once_and_each_waiter_gets_its_own():
    loop = asyncio.get_running_loop()
    waiters: list[Waiter[int]] = [Waiter.for_loop() for _ in range(5)]
    on_thread: Waiter[int] = Waiter.for_thread()
    calls = 0
    original = loop.call_soon_threadsafe

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        failure = RuntimeError("store down")
        outcomes = [(w, n) for n, w in enumerate(waiters[:4])] + [(waiters[4], failure)]
        worker = threading.Thread(target=settle, args=([*outcomes, (on_thread, 7)],))
        worker.start()
        worker.join()
        results = await asyncio.gather(*(w.result() for w in waiters),
                                       return_exceptions=True)
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
    assert results[:4] == [0, 1, 2, 3]
    assert results[4] is failure
    assert on_thread.thread_future().result(timeout=1) == 7
    assert calls == 1


async def test_a_cancelled_waiter_is_skipped_and_the_others_still_resolve():
    gone: Waiter[str] = Waiter.for_loop()
    kept: Waiter[str] = Waiter.for_loop()
    gone.future.cancel()
    settle([(gone, "late"), (kept, "ok")])
    assert await kept.result() == "ok"
    with pytest.raises(asyncio.CancelledError):
        await gone.result()


def test_results_for_a_closed_loop_are_dropped_without_error():
    loop = asyncio.new_event_loop()
    waiter: Waiter[int] = Waiter(loop.create_future(), loop)
    loop.close()
    settle([(waiter, 1)])  # must not raise
    assert not waiter.future.done()
