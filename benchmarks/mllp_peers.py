"""Peers for the HL7 benchmark, each run as its own process.

    python -m benchmarks.mllp_peers reference --port P
        The reference: python-hl7's bare asyncio MLLP server. It parses each message
        with hl7.parse and answers create_ack("AA"); it stores nothing.
    python -m benchmarks.mllp_peers floor --port P --database FILE
        The durable floor: the least a server that acknowledges only what it has made
        durable must do. It cuts frames, reads MSH-10 with str.split (no parser), and
        commits each message to one SQLite table (WAL, synchronous=FULL, no index) in
        group commits on one thread, answering AA after its commit. No audit, no
        stage records, no processing: a Python server with durable ACKs pays at least
        this on this machine.
    python -m benchmarks.mllp_peers sink --port P --control C
        A fast RIS stand-in for the end-to-end run: it cuts frames, answers AA with the
        message's MSH-10 (read with str.split, no parser) and counts what it got. A
        connection to the control port reads that count.

All print "ready PORT" on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import sqlite3
import sys
import threading
from collections.abc import Awaitable, Callable

import hl7
import hl7.mllp

START, END = b"\x0b", b"\x1c\x0d"
_Queued = tuple[bytes, bytes, asyncio.Future[None]]


async def reference(port: int) -> None:
    async def client(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                writer.writemessage(message.create_ack("AA"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await hl7.mllp.start_hl7_server(client, host="127.0.0.1", port=port)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def _ack(control_id: bytes) -> bytes:
    return (START + b"MSH|^~\\&|PEER||||20250101||ACK^A01^ACK|A|P|2.5.1\r"
            b"MSA|AA|" + control_id + b"\r" + END)


def _frames(buffer: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The whole frames in `buffer` as (MSH-10, message), and what is left over."""
    found = []
    while (end := buffer.find(END)) >= 0:
        message, buffer = buffer[buffer.find(START) + 1:end], buffer[end + 2:]
        found.append((message.split(b"\r", 1)[0].split(b"|")[9], message))
    return found, buffer


def _acknowledging(handle: Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]
                   ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A connection handler: `handle` each read's whole frames, then answer each AA."""
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        try:
            while data := await reader.read(262144):
                found, buffer = _frames(buffer + data)
                await handle(found)
                writer.writelines([_ack(control_id) for control_id, _ in found])
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return client


def _open_floor(database: str) -> sqlite3.Connection:
    db = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS received"
               " (id INTEGER PRIMARY KEY, control_id BLOB, content BLOB)")
    return db


def _commit_forever(db: sqlite3.Connection, waiting: queue.SimpleQueue[_Queued],
                    loop: asyncio.AbstractEventLoop) -> None:
    """Group commit: everything queued while the last commit ran goes into the next."""
    while True:
        batch = [waiting.get()]
        while True:
            try:
                batch.append(waiting.get_nowait())
            except queue.Empty:
                break
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO received (control_id, content) VALUES (?, ?)",
                       [(control_id, message) for control_id, message, _ in batch])
        db.execute("COMMIT")
        loop.call_soon_threadsafe(_settle, [done for _, _, done in batch])


def _settle(futures: list[asyncio.Future[None]]) -> None:
    for done in futures:
        if not done.done():
            done.set_result(None)


async def floor(port: int, database: str) -> None:
    loop = asyncio.get_running_loop()
    waiting: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
    db = _open_floor(database)  # before "ready": a store that cannot open fails the start
    threading.Thread(target=_commit_forever, args=(db, waiting, loop),
                     daemon=True).start()

    async def commit(found: list[tuple[bytes, bytes]]) -> None:
        committed = []
        for control_id, message in found:
            done = loop.create_future()
            waiting.put((control_id, message, done))
            committed.append(done)
        await asyncio.gather(*committed)

    server = await asyncio.start_server(_acknowledging(commit), "127.0.0.1", port)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


async def sink(port: int, control: int) -> None:
    received = 0

    async def count(found: list[tuple[bytes, bytes]]) -> None:
        nonlocal received
        received += len(found)

    async def report(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(str(received).encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(_acknowledging(count), "127.0.0.1", port)
    await asyncio.start_server(report, "127.0.0.1", control)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["reference", "floor", "sink"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control", type=int, default=0)
    parser.add_argument("--database", default="floor.db")
    args = parser.parse_args()
    try:
        if args.kind == "reference":
            asyncio.run(reference(args.port))
        elif args.kind == "floor":
            asyncio.run(floor(args.port, args.database))
        else:
            asyncio.run(sink(args.port, args.control))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
