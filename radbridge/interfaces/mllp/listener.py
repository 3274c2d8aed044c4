"""The MLLP source: an asyncio server that stores each message, then acknowledges it.

Each connection reads whatever TCP gives it, lets the frame decoder cut frames, stores
every frame's record through the group committer, and writes the acknowledgements in
the order the frames came. Frames that arrive together (a sender that does not wait
for each ACK) are stored together, in one commit. A connection idle for `idle_timeout`
is closed; more than `max_connections` at once are refused at accept. Nothing here
raises into the event loop: a connection's failure closes that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from radbridge.engine import metrics
from radbridge.engine.adapters import AdapterContext, source_type
from radbridge.engine.config import MllpSource
from radbridge.engine.control import ChannelPaused
from radbridge.errors import AdapterSetupError, StoreError
from radbridge.interfaces.mllp.framing import Event, FrameDecoder, frame
from radbridge.interfaces.mllp.intake import Examined, Hl7Intake
from radbridge.interfaces.tls import server_context

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024


class MllpListener:
    """One channel's MLLP server; `port` is the bound port once started (0 picks one)."""

    def __init__(self, channel: str, config: MllpSource, context: AdapterContext) -> None:
        self._channel = channel
        self._config = config
        self._context = context
        self._intake = Hl7Intake(channel, config)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = config.port

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        tls: ssl.SSLContext | None = None
        if self._config.tls is not None:
            tls = server_context(self._config.tls, lambda p: self._context.resolve(p))
        try:
            self._server = await asyncio.start_server(
                self._accept, self._config.host, self._config.port, ssl=tls,
                limit=READ_SIZE, reuse_address=True)
        except OSError as exc:
            raise AdapterSetupError(
                f"channel {self._channel}: cannot listen on {self._config.host}:"
                f"{self._config.port}: {exc.strerror or exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("channel %s: MLLP listening on %s:%d%s", self._channel, self._config.host,
                 self.port, " (TLS)" if tls else "")

    async def stop(self) -> None:
        """Stop accepting, let each connection finish the frames it is storing, close."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if len(self._connections) >= self._config.max_connections:
            log.warning("channel %s: refused MLLP connection from %s: %d connections open",
                        self._channel, peer, len(self._connections))
            writer.close()
            return
        task = asyncio.current_task()
        if task is None:  # not reachable: the server runs each connection as a task
            return
        self._connections.add(task)
        metrics.MLLP_CONNECTIONS.labels(self._channel).inc()
        try:
            await self._serve(reader, writer, peer)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("channel %s: MLLP connection from %s ended: %s", self._channel, peer,
                     type(exc).__name__)
        finally:
            self._connections.discard(task)
            metrics.MLLP_CONNECTIONS.labels(self._channel).dec()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: str) -> None:
        decoder = FrameDecoder(self._config.max_message_size)
        watch = IdleWatch(self._config.idle_timeout, writer)
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    if watch.fired:
                        log.info("channel %s: closing idle MLLP connection from %s",
                                 self._channel, peer)
                    break
                events = decoder.feed(data)
                if events:
                    watch.busy = True
                    try:
                        await self._answer(events, writer, peer)
                    finally:
                        watch.busy = False
                watch.touch()
        finally:
            watch.cancel()
            leftovers = decoder.close()
            if leftovers:
                # Store what the peer left half-sent; nobody is left to answer.
                await asyncio.shield(self._store_all(leftovers, peer))

    async def _answer(self, events: list[Event], writer: asyncio.StreamWriter,
                      peer: str) -> None:
        examined, stored = await self._store_all(events, peer)
        for item, outcome in zip(examined, stored, strict=True):
            if not item.answer:
                continue
            ok = outcome is None
            ack = self._intake.acknowledgement(item, stored=ok,
                                               paused=isinstance(outcome, ChannelPaused))
            code = "AR" if not ok else item.code
            metrics.HL7_ACKS.labels(self._channel, code).inc()
            if ack is not None:
                writer.write(frame(ack))
        await writer.drain()

    async def _store_all(self, events: list[Event], peer: str
                         ) -> tuple[list[Examined], list[StoreError | None]]:
        """Store each examined event; per event None (stored) or the StoreError that
        kept it out (the store is down, the channel is paused)."""
        examined = [self._intake.examine(event, peer) for event in events]
        results: list[Any]
        if len(examined) == 1:  # the usual case (a sender waiting for each ACK): no gather
            try:
                results = [await self._context.receive(examined[0].inbound)]
            except Exception as exc:  # sorted out below, as gather's would be
                results = [exc]
        else:
            results = await asyncio.gather(
                *(self._context.receive(item.inbound) for item in examined),
                return_exceptions=True)
        stored: list[StoreError | None] = []
        for item, result in zip(examined, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, StoreError):
                    raise result
                log.warning("channel %s: could not store a message from %s: %s",
                            self._channel, peer, type(result).__name__)
                stored.append(result)
                continue
            stored.append(None)
            if item.rejection is not None:
                log.info("channel %s: message %d from %s refused: %s %d", self._channel,
                         result.message_id, peer, item.code, item.rejection.error_code)
        return examined, stored


class IdleWatch:
    """Closes a connection that has been quiet for `timeout` seconds while not `busy`.

    One timer per connection, re-armed only when it fires, instead of a timeout around
    every read (`asyncio.wait_for` makes a task per read: measurable at thousands of
    messages a second). Closing the transport ends the pending read with EOF.
    """

    def __init__(self, timeout: float, writer: asyncio.StreamWriter) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._writer = writer
        self._last = self._loop.time()
        self.busy = False
        self.fired = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(timeout, self._check)

    def touch(self) -> None:
        self._last = self._loop.time()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        quiet = self._loop.time() - self._last
        if self.busy or quiet < self._timeout:
            wait = self._timeout if self.busy else self._timeout - quiet
            self._handle = self._loop.call_later(max(wait, 0.01), self._check)
            return
        self._handle = None
        self.fired = True
        self._writer.close()


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "unknown"


@source_type("mllp")
def _mllp(channel: str, config: MllpSource, context: AdapterContext) -> MllpListener:
    return MllpListener(channel, config, context)
