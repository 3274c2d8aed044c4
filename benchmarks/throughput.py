"""Store throughput: the real engine in-process, against raw INSERT+COMMIT references.

Engine: a `Node` with one channel (source `channel`, no transformers, one `null`
destination). P asyncio producers each await `node.receive` in a loop; a receive
returns only after its group commit. Measured: acknowledged receives per second, and
end to end, the time until every acknowledged message's delivery is `sent`.

References, measured in the same run on the same kind of store: P threads each doing
one INSERT of the same payload and a COMMIT per message, with the engine's durability
settings; and the same with 100 INSERTs per COMMIT (what group commit can approach).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from benchmarks.payload import ADT_A01, CONTENT_TYPE
from benchmarks.stats import percentile
from benchmarks.stores import Store, pg_dsn
from radbridge.engine.config import ChannelConfig
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import Delivery
from radbridge.engine.receiver import Inbound
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from radbridge.errors import StoreError

CHANNEL = "bench"
WARMUP = 20
"""Messages sent and delivered before the clock starts (connections, caches)."""
POLL_SECONDS = 0.01


@dataclass(frozen=True)
class EngineResult:
    store: str
    producers: int
    messages: int
    acked: int
    ack_seconds: float
    sent: int
    sent_seconds: float
    commits: int
    ack_ms: dict[str, float]
    """Latency of one acknowledged receive: p50, p99, max."""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    runs: list[tuple[float, float]] = field(default_factory=list)
    """(acked/s, sent/s) of every repetition when this is the median of several."""

    @property
    def acked_per_s(self) -> float:
        return self.acked / self.ack_seconds

    @property
    def sent_per_s(self) -> float:
        return self.sent / self.sent_seconds

    @property
    def mean_batch(self) -> float:
        """Messages per group commit of the receiver (the warm-up excluded)."""
        return self.acked / self.commits if self.commits else 0.0


@dataclass(frozen=True)
class RawResult:
    store: str
    threads: int
    per_commit: int
    rows: int
    seconds: float
    """The median run's."""
    all_seconds: list[float] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def bench_channel() -> ChannelConfig:
    return ChannelConfig.model_validate({
        "name": CHANNEL,
        "source": {"type": "channel"},
        "destinations": [{"name": "sink", "type": "null"}],
    })


# --- the engine -----------------------------------------------------------------------


class _Collect(logging.Handler):
    """Keeps the engine's warnings and errors of one run as evidence."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}"[:300])


def measure_engine(store: Store, producers: int, count: int, timeout: float) -> EngineResult:
    """Run one configuration in a fresh event loop; see the module docstring."""
    collect = _Collect()
    logger = logging.getLogger("radbridge")
    logger.addHandler(collect)
    try:
        result = asyncio.run(_engine_run(store, producers, count, timeout))
    finally:
        logger.removeHandler(collect)
    return replace(result, warnings=collect.lines)


def median_run(runs: list[EngineResult]) -> EngineResult:
    """The repetition with the median acked/s, carrying every run's rates and errors."""
    ordered = sorted(runs, key=lambda run: run.acked_per_s)
    return replace(ordered[len(ordered) // 2],
                   runs=[(run.acked_per_s, run.sent_per_s) for run in runs],
                   errors=[e for run in runs for e in run.errors],
                   warnings=[w for run in runs for w in run.warnings])


async def _engine_run(store: Store, producers: int, count: int, timeout: float) -> EngineResult:
    settings = Settings(data_dir=store.data_dir, database_url=store.url,
                        node_id=f"bench-{store.kind}-{producers}")
    node = Node(settings, [bench_channel()])
    observer = Database(store.url)
    await node.start()
    try:
        await _produce(node, 1, WARMUP)
        await _wait_sent(observer, WARMUP, time.perf_counter() + timeout)
        commits_before = _commit_count()
        started = time.perf_counter()
        tally = await _produce(node, producers, count)
        ack_seconds = time.perf_counter() - started
        commits = _commit_count() - commits_before
        acked = len(tally.ack_ms)
        sent = await _wait_sent(observer, WARMUP + acked, started + timeout)
        sent_seconds = time.perf_counter() - started
    finally:
        await node.stop()
        observer.dispose()
    return EngineResult(store.kind, producers, count, acked, ack_seconds, sent - WARMUP,
                        sent_seconds, commits, _percentiles(tally.ack_ms), tally.errors)


def _percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max of the acknowledgement latencies, in ms."""
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99),
            "max": max(samples, default=0.0)}


@dataclass
class _Tally:
    """What the producers of one run saw: latencies of acknowledged receives, errors."""

    ack_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _produce(node: Node, producers: int, count: int) -> _Tally:
    shares = [count // producers + (i < count % producers) for i in range(producers)]
    tally = _Tally()
    await asyncio.gather(*(_producer(node, share, tally) for share in shares))
    return tally


async def _producer(node: Node, count: int, tally: _Tally) -> None:
    for _ in range(count):
        inbound = Inbound(channel=CHANNEL, content_type=CONTENT_TYPE, source="bench",
                          content=ADT_A01)
        started = time.perf_counter()
        try:
            await node.receive(inbound)
        except StoreError as exc:  # not acknowledged: a real source would answer AE
            tally.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            continue
        tally.ack_ms.append((time.perf_counter() - started) * 1000)


async def _wait_sent(observer: Database, target: int, deadline: float) -> int:
    """Poll until `target` deliveries are sent or the deadline passes; the count reached."""
    while True:
        sent = await asyncio.to_thread(_count_sent, observer)
        if sent >= target or time.perf_counter() > deadline:
            return sent
        await asyncio.sleep(POLL_SECONDS)


def _count_sent(observer: Database) -> int:
    with observer.read() as session:
        statement = select(func.count()).where(Delivery.status == DeliveryStatus.SENT)
        return int(session.execute(statement).scalar_one())


def _commit_count() -> int:
    value = REGISTRY.get_sample_value("radbridge_commit_batch_size_count")
    return int(value or 0)


# --- the raw references ---------------------------------------------------------------


def measure_raw(store: Store, threads: int, per_commit: int, rows: int,
                repeats: int = 3) -> RawResult:
    """The median of `repeats` runs of `_raw_once` (each on a new table)."""
    runs = sorted(_raw_once(store, threads, per_commit, rows) for _ in range(repeats))
    return RawResult(store.kind, threads, per_commit, rows, runs[len(runs) // 2], runs)


def _raw_once(store: Store, threads: int, per_commit: int, rows: int) -> float:
    """`threads` threads insert `rows` payloads in all, committing every `per_commit`."""
    make = _sqlite_inserter(store.data_dir / "raw.db") if store.kind == "sqlite" else (
        _postgres_inserter())
    shares = [rows // threads + (i < rows % threads) for i in range(threads)]
    barrier = threading.Barrier(threads + 1)
    workers = [threading.Thread(target=make, args=(share, per_commit, barrier))
               for share in shares]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


Inserter = Callable[[int, int, threading.Barrier], None]


def _sqlite_inserter(path: Path) -> Inserter:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE raw_messages (id INTEGER PRIMARY KEY, content BLOB)")

    def insert(rows: int, per_commit: int, barrier: threading.Barrier) -> None:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000"):
            connection.execute(f"PRAGMA {pragma}")
        barrier.wait()
        for start in range(0, rows, per_commit):
            connection.execute("BEGIN IMMEDIATE")
            for _ in range(min(per_commit, rows - start)):
                connection.execute("INSERT INTO raw_messages (content) VALUES (?)", (ADT_A01,))
            connection.execute("COMMIT")
        connection.close()

    return insert


def _postgres_inserter() -> Inserter:
    with psycopg.connect(pg_dsn(), autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS raw_messages")
        connection.execute("CREATE TABLE raw_messages (id BIGSERIAL PRIMARY KEY, content BYTEA)")
        connection.execute("CHECKPOINT")

    def insert(rows: int, per_commit: int, barrier: threading.Barrier) -> None:
        with psycopg.connect(pg_dsn()) as connection:
            barrier.wait()
            for start in range(0, rows, per_commit):
                for _ in range(min(per_commit, rows - start)):
                    connection.execute("INSERT INTO raw_messages (content) VALUES (%s)",
                                       (ADT_A01,))
                connection.commit()

    return insert
