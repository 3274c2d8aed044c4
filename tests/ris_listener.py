"""A test RIS: python-hl7's own asyncio MLLP server that records what it receives.

It is an independent MLLP implementation (python-hl7's `start_hl7_server`), run on its
own event loop thread on 127.0.0.1, so Radbridge's sender is tested against a real peer
over a real socket. `answer` decides what it says to each message: "AA", "AE", "AR",
"silent" (no ACK at all) or "wrong-id" (an ACK that names another message).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import hl7
import hl7.mllp


class TestRis:
    """Start with `with TestRis() as ris:`; `ris.port`, `ris.received` (raw texts)."""

    __test__ = False  # not a pytest test class

    def __init__(self, answer: str | Callable[[str], str] = "AA") -> None:
        self.answer = answer
        self.received: list[str] = []
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._lock = threading.Lock()
        self._clients: set[asyncio.Task[None]] = set()

    def __enter__(self) -> TestRis:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def control_ids(self) -> list[str]:
        with self._lock:
            return [str(hl7.parse(text).segment("MSH")(10)) for text in self.received]

    async def _start(self) -> None:
        self._server = await hl7.mllp.start_hl7_server(self._client, host="127.0.0.1", port=0,
                                                       encoding="utf-8")
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        for task in self._clients:
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await self._server.wait_closed()

    async def _client(self, reader: hl7.mllp.HL7StreamReader,
                      writer: hl7.mllp.HL7StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                text = str(message)
                with self._lock:
                    self.received.append(text)
                answer = self.answer(text) if callable(self.answer) else self.answer
                if answer == "silent":
                    continue
                if answer == "wrong-id":
                    ack = message.create_ack("AA")
                    ack.segment("MSA")[2] = "SOMETHING-ELSE"
                else:
                    ack = message.create_ack(answer)
                writer.writemessage(ack)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
