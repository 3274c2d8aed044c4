"""BatchingThread: how items are grouped into the batches handed to its handler."""

from __future__ import annotations

import threading
import time

from radbridge.engine.batching import BatchingThread


def _collecting() -> tuple[list[list[int]], threading.Event, BatchingThread[int]]:
    batches: list[list[int]] = []
    done = threading.Event()

    def handle(batch: list[int]) -> None:
        batches.append(batch)
        if -1 in batch:
            done.set()

    return batches, done, BatchingThread("test", handle, linger=1.0, quiet=0.1)


def test_a_steady_stream_is_gathered_for_the_whole_linger_into_one_batch() -> None:
    batches, done, thread = _collecting()
    thread.start()
    try:
        for item in range(10):  # 10 items 20 ms apart: never quiet for 100 ms
            thread.put(item)
            time.sleep(0.02)
        thread.put(-1)
        assert done.wait(5)
    finally:
        thread.stop()
    assert batches == [[*range(10), -1]]


def _first_batch_after(puts: list[int | None]) -> tuple[list[list[int]], float]:
    """Queue `puts` (None: a hurry) at once; the batches, and seconds to the first."""
    batches, done, thread = _collecting()
    thread.start()
    try:
        began = time.monotonic()
        for item in puts:
            thread.hurry() if item is None else thread.put(item)
        while not batches and time.monotonic() - began < 5:
            time.sleep(0.002)
        waited = time.monotonic() - began
        thread.put(-1)
        assert done.wait(5)
    finally:
        thread.stop()
    return batches, waited


def test_a_quiet_spell_ends_the_linger_early() -> None:
    batches, waited = _first_batch_after([1, 2])
    assert batches == [[1, 2], [-1]]
    assert waited < 0.9, f"the batch waited {waited:.2f}s, the whole linger, not the quiet"


def test_hurry_ends_the_linger_of_the_batch_being_gathered() -> None:
    # The first hurry comes with nothing gathered: it makes no empty batch.
    batches, waited = _first_batch_after([None, 1, 2, None])
    assert batches == [[1, 2], [-1]]
    assert waited < 0.08, f"the batch waited {waited:.3f}s; quiet is 0.1s"
