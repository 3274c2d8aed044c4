"""Peers for the HL7 benchmark, each run as its own process.

    python -m benchmarks.mllp_peers reference --port P
        The reference: python-hl7's bare asyncio MLLP server. It parses each message
        with hl7.parse and answers create_ack("AA"); it stores nothing.
    python -m benchmarks.mllp_peers sink --port P --control C
        A fast RIS stand-in for the end-to-end run: it cuts frames, answers AA with the
        message's MSH-10 (read with str.split, no parser) and counts what it got. A
        connection to the control port reads that count.

Both print "ready PORT" on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import hl7
import hl7.mllp

START, END = b"\x0b", b"\x1c\x0d"


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


async def sink(port: int, control: int) -> None:
    received = 0

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        buffer = b""
        try:
            while data := await reader.read(262144):
                buffer += data
                while (end := buffer.find(END)) >= 0:
                    message, buffer = buffer[buffer.find(START) + 1:end], buffer[end + 2:]
                    control_id = message.split(b"\r", 1)[0].split(b"|")[9]
                    received += 1
                    writer.write(START + b"MSH|^~\\&|SINK||||20250101||ACK^A01^ACK|A|P|2.5.1\r"
                                 b"MSA|AA|" + control_id + b"\r" + END)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def report(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(str(received).encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", port)
    await asyncio.start_server(report, "127.0.0.1", control)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["reference", "sink"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(reference(args.port) if args.kind == "reference"
                    else sink(args.port, args.control))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
