"""Arbitrary bytes at the real listener: it neither crashes nor leaks connections."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radbridge.interfaces.mllp.listener import MllpListener
from tests.hl7_support import adt_a01, exchange, frame, mllp_channel, msa, running_node

FRAGMENTS = st.one_of(
    st.binary(max_size=400),
    st.sampled_from([b"\x0b", b"\x1c", b"\x0d", b"\x1c\x0d", b"MSH|^~\\&|", b"\xff\xfe"]),
    st.builds(lambda c: frame(adt_a01(c)), st.text("ABC123", min_size=1, max_size=8)),
)


class BackgroundNode:
    """A node on its own event loop thread, so synchronous hypothesis tests can use it."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self.listener: MllpListener | None = None
        self._thread = threading.Thread(target=self.loop.run_until_complete,
                                        args=(self._main(tmp_path),), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "node did not start"

    async def _main(self, tmp_path: Path) -> None:
        self._stop = asyncio.Event()
        url = f"sqlite:///{tmp_path / 'fuzz.db'}"
        channel = mllp_channel(max_message_size="4KiB", idle_timeout="2s")
        async with running_node(tmp_path, url, [channel]) as (node, port):
            self.port = port
            self.listener = next(s for s in node.sources if isinstance(s, MllpListener))
            self._ready.set()
            await self._stop.wait()

    def close(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def background_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundNode]:
    node = BackgroundNode(tmp_path_factory.mktemp("fuzz"))
    yield node
    node.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(FRAGMENTS, max_size=6))
def test_arbitrary_bytes_then_close(background_node, fragments):
    with socket.create_connection(("127.0.0.1", background_node.port), timeout=5) as sock:
        for fragment in fragments:
            sock.sendall(fragment)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        while sock.recv(65536):  # answers, if any, then the server's close
            pass


def test_after_the_fuzzing_the_listener_still_answers_and_holds_no_connections(
        background_node):
    deadline = time.monotonic() + 10
    while background_node.listener.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert background_node.listener.connections == 0
    assert msa(exchange(background_node.port, frame(adt_a01("STILL-OK")))[0])[1] == "AA"
