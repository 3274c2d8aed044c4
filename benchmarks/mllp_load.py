"""The HL7 load generator, run as its own process: C connections, each sending and waiting.

    python -m benchmarks.mllp_load --port P --connections C --messages N [--warmup W]

Each connection sends the 406-byte ADT^A01 (with its own MSH-10), waits for the ACK,
checks it is AA (or CA), and sends the next. Prints one JSON line: messages, seconds,
messages/s, and ACK latency p50/p99 in ms (warm-up messages excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from benchmarks.payload import ADT_A01
from benchmarks.stats import percentile

START, END = b"\x0b", b"\x1c\x0d"
_TEMPLATE = ADT_A01.replace(b"MSG000000001", b"%012d")


def message(number: int) -> bytes:
    """The payload with MSH-10 set to `number` (still 406 bytes)."""
    return START + (_TEMPLATE % number) + END


async def connection(port: int, numbers: range, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    buffer = b""
    for number in numbers:
        sent = time.perf_counter()
        writer.write(message(number))
        while (end := buffer.find(END)) < 0:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            buffer += data
        ack, buffer = buffer[:end], buffer[end + 2:]
        if b"MSA|AA|" not in ack and b"MSA|CA|" not in ack:
            raise RuntimeError(f"not acknowledged: {ack!r}")
        latencies.append(time.perf_counter() - sent)
    writer.close()


async def run(port: int, connections: int, messages: int, warmup: int, first: int) -> dict:
    await asyncio.gather(*(connection(port, range(first + i, first + warmup, connections), [])
                           for i in range(connections)))
    start = first + warmup
    latencies: list[float] = []
    began = time.perf_counter()
    await asyncio.gather(*(connection(port, range(start + i, start + messages, connections),
                                      latencies) for i in range(connections)))
    seconds = time.perf_counter() - began
    return {"messages": len(latencies), "seconds": seconds, "per_s": len(latencies) / seconds,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--first", type=int, default=1, help="first MSH-10 number")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.port, args.connections, args.messages, args.warmup,
                                     args.first))))


if __name__ == "__main__":
    main()
