"""HL7 over MLLP: Radbridge with durable ACKs against python-hl7's bare server, same run.

    python -m benchmarks.hl7            # full run (5,000 messages per figure)
    python -m benchmarks.hl7 --quick    # 1,000 messages per figure

Every party is its own process on 127.0.0.1: the load generator (benchmarks.mllp_load),
the server under test, and for the end-to-end figure a sink standing in for the RIS.

- reference: python-hl7's asyncio server; parses and ACKs, stores nothing.
- durable floor: a server that parses nothing and commits each message to one SQLite
  table (WAL, synchronous=FULL, group commits) before its AA: what durable ACKs cost
  a Python server on this machine before any engine work (`mllp_peers.floor`).
- ingest: `radbridge run` (one process, and with --split two) with one channel,
  MLLP source -> null destination; an ACK is
  sent only after the message, its stage record and its audit event are committed.
  The processor runs too (it has to: it is the same node), as in production.
- end to end: MLLP source -> a transformer -> MLLP destination to the sink; the figure
  is messages delivered to the sink (ACKed by it) per second, from the first send
  until the sink has them all.

Results go to benchmarks/results/hl7.json (ignored by git).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack
from typing import Any

from benchmarks import stores
from benchmarks.nodes import free_port, process, radbridge, wait_processed

RESULTS = Path(__file__).resolve().parent / "results" / "hl7.json"
CONNECTIONS = (1, 8)


def load(port: int, connections: int, messages: int, first: int, warmup: int = 200
         ) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.mllp_load", "--port", str(port), "--connections",
         str(connections), "--messages", str(messages), "--first", str(first),
         "--warmup", str(warmup)],
        capture_output=True, text=True, timeout=900, check=True)
    figures: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return figures


def sink_count(control: int) -> int:
    with socket.create_connection(("127.0.0.1", control)) as sock:
        return int(sock.recv(64) or b"0")


def run_reference(messages: int) -> list[dict[str, Any]]:
    port = free_port()
    with process([sys.executable, "-m", "benchmarks.mllp_peers", "reference", "--port",
                  str(port)], ready="ready"):
        return [{"party": "python-hl7 bare server", "store": "-", "connections": c,
                 **load(port, c, messages, first=c * 10_000_000)} for c in CONNECTIONS]


def run_floor(messages: int, workdir: Path) -> list[dict[str, Any]]:
    rows = []
    for connections in CONNECTIONS:
        port = free_port()
        database = workdir / f"floor-{connections}.db"
        with process([sys.executable, "-m", "benchmarks.mllp_peers", "floor", "--port",
                      str(port), "--database", str(database)], ready="ready"):
            rows.append({"party": "durable floor (no parse, one table)", "store": "sqlite",
                         "connections": connections,
                         **load(port, connections, messages, first=connections * 10_000_000)})
    return rows


def mode(split: bool) -> str:
    return "2 processes" if split else "1 process"


def run_ingest(kind: str, url: str, workdir: Path, messages: int, split: bool
               ) -> list[dict[str, Any]]:
    port = free_port()
    channel = {"name": "ingest", "source": {"type": "mllp", "port": port},
               "destinations": [{"name": "discard", "type": "null"}]}
    with radbridge(channel, url, workdir / f"{kind}-ingest-{split}", split) as node:
        load(port, 8, 200, first=95_000_000, warmup=0)
        wait_processed(node, "ingest")
        return [{"party": f"radbridge ingest, {mode(split)}", "store": kind, "connections": c,
                 **load(port, c, messages, first=c * 10_000_000)} for c in CONNECTIONS]


def run_end_to_end(kind: str, url: str, workdir: Path, messages: int, split: bool
                   ) -> dict[str, Any]:
    port, sink_port, control = free_port(), free_port(), free_port()
    channel = {"name": "relay", "source": {"type": "mllp", "port": port},
               "transformers": ["text.normalize_newlines"],
               "destinations": [{"name": "ris", "type": "mllp", "host": "127.0.0.1",
                                 "port": sink_port, "queue": {"concurrency": 4}}]}
    with process([sys.executable, "-m", "benchmarks.mllp_peers", "sink", "--port",
                  str(sink_port), "--control", str(control)], ready="ready"), \
            radbridge(channel, url, workdir / f"{kind}-e2e-{split}", split):
        warm = load(port, 8, 200, first=90_000_000)
        while sink_count(control) < warm["messages"] + 200:
            time.sleep(0.05)
        began = time.perf_counter()
        ingest = load(port, 8, messages, first=80_000_000)
        expected = warm["messages"] + 200 + messages
        deadline = time.monotonic() + 600
        while (count := sink_count(control)) < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        seconds = time.perf_counter() - began
        return {"party": f"radbridge MLLP -> transform -> MLLP, {mode(split)}", "store": kind,
                "connections": 8, "messages": count - expected + messages,
                "seconds": seconds, "per_s": (count - expected + messages) / seconds,
                "ingest_per_s": ingest["per_s"], "p50_ms": ingest["p50_ms"],
                "p99_ms": ingest["p99_ms"]}


def fresh(kind: str, workdir: Path, label: str) -> str:
    """An empty store for one configuration (SQLite: a new file; PostgreSQL: emptied)."""
    if kind == "sqlite":
        return f"sqlite:///{workdir / f'{label}.db'}"
    return stores.fresh_store(kind, workdir, label).url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--messages", type=int)
    args = parser.parse_args(argv)
    messages = args.messages or (1000 if args.quick else 5000)
    kinds = [k for k in args.stores.split(",") if k]
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rb-hl7-")))
        rows += run_reference(messages)
        rows += run_floor(messages, workdir)
        if "postgresql" in kinds:
            stack.enter_context(stores.postgres_database())
        for kind in kinds:
            for split in (False, True):
                rows += run_ingest(kind, fresh(kind, workdir, f"ingest-{split}"), workdir,
                                   messages, split)
                rows.append(run_end_to_end(kind, fresh(kind, workdir, f"e2e-{split}"),
                                           workdir, messages, split))
    print_table(rows)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"messages": messages, "rows": rows}, indent=2))
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    reference = {r["connections"]: r["per_s"] for r in rows if r["store"] == "-"}
    print(f"{'party':46} {'store':10} {'conn':>4} {'msg/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
          f" {'x ref':>6}")
    for row in rows:
        ratio = row["per_s"] / reference[row["connections"]] if reference else 0.0
        print(f"{row['party']:46} {row['store']:10} {row['connections']:>4} "
              f"{row['per_s']:>8.0f} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} {ratio:>6.2f}")


if __name__ == "__main__":
    sys.exit(main())
