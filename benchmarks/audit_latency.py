"""Audit query latency for one patient, with and without the (patient_id, seq) index.

The ledger is filled with synthetic events: each message of a synthetic patient
(BENCH-P000000 .. ) leaves three events (received, transformed, sent), so 1,000,000
rows over 20,000 patients give each patient about 50 events spread over the whole
table. The chain is built with `audit.event_hash` exactly as `audit.append` builds it and
the head row is set to its end, so it is a valid chain (see `chain_checked`).

Rows are loaded in bulk with the secondary indexes dropped and then recreated from the
models (the same indexes the migration makes), and the tables are analysed. Then
`audit.query(session, AuditQuery(patient_id=X, limit=100))` is timed for random
patients with a warm cache; the reference is the same query after dropping
`ix_audit_events_patient_id_seq`, i.e. a full scan, run fewer times because it is slow.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import insert, text
from sqlalchemy.engine import Connection

from benchmarks.stats import percentile
from benchmarks.stores import pg_dsn
from radbridge.engine import audit
from radbridge.engine.db import Database
from radbridge.engine.models import AuditEvent, AuditHead, Base

TABLE = Base.metadata.tables["audit_events"]
PATIENT_INDEX = "ix_audit_events_patient_id_seq"
COLUMNS = ("at", "actor", "action", "outcome", "channel", "message_id", "patient_id",
           "accession", "study_uid", "detail", "prev_hash", "hash")
EVENTS_PER_MESSAGE = (
    ("source:bench-mllp", "message.received"),
    ("engine", "message.transformed"),
    ("engine", "delivery.sent"),
)
CHUNK = 20_000
START = datetime(2025, 1, 1, tzinfo=UTC)

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Latency:
    """Timings of one query variant, in milliseconds."""

    samples_ms: list[float]
    rows_returned: float
    plan: str

    def summary(self) -> dict[str, float]:
        samples = self.samples_ms
        return {"n": len(samples), "p50_ms": percentile(samples, 50),
                "p95_ms": percentile(samples, 95), "p99_ms": percentile(samples, 99),
                "mean_ms": statistics.fmean(self.samples_ms), "rows": self.rows_returned}


@dataclass(frozen=True)
class AuditResult:
    store: str
    rows: int
    patients: int
    fill_seconds: float
    indexed: Latency
    full_scan: Latency
    chain_checked: str


def generate(rows: int, patients: int, seed: int) -> Iterator[list[Row]]:
    """Chunks of audit rows in `COLUMNS` order, hash-chained from the genesis hash."""
    rng = random.Random(seed)
    prev = audit.GENESIS_HASH
    chunk: list[Row] = []
    for index in range(rows):
        message, step = divmod(index, len(EVENTS_PER_MESSAGE))
        if step == 0:
            patient = f"BENCH-P{rng.randrange(patients):06d}"
        row = _event(message, step, patient, prev)
        prev = row[-1]
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _event(message: int, step: int, patient: str, prev: str) -> Row:
    actor, action = EVENTS_PER_MESSAGE[step]
    at = START + timedelta(seconds=message, microseconds=step * 1000)
    detail = f'{{"step":{step},"uid":"{message:032x}"}}'  # as json.dumps(..., separators)
    fields = {
        "at": at.replace(tzinfo=None).isoformat(timespec="microseconds"), "actor": actor,
        "action": action, "outcome": "success", "channel": "adt-in",
        "message_id": message + 1, "patient_id": patient,
        "accession": f"BENCH-A{message + 1:08d}",
        "study_uid": f"2.25.{1_000_000 + message}", "detail": detail,
    }
    digest = audit.event_hash(prev, fields)
    return (at, actor, action, "success", "adt-in", message + 1, patient,
            fields["accession"], fields["study_uid"], detail, prev, digest)


# --- filling ------------------------------------------------------------------------


def fill(database: Database, chunks: Sequence[list[Row]]) -> float:
    """Load the ledger (see the module docstring); returns the seconds it took."""
    started = time.perf_counter()
    indexes = list(TABLE.indexes)
    with database.engine.begin() as connection:
        for index in indexes:
            index.drop(connection)
    for chunk in chunks:
        _load(database, chunk)
    with database.engine.begin() as connection:
        for index in indexes:
            index.create(connection)
        _set_head(connection, chunks)
    _analyze(database)
    return time.perf_counter() - started


def _load(database: Database, chunk: list[Row]) -> None:
    if database.is_postgres:
        statement = f"COPY audit_events ({', '.join(COLUMNS)}) FROM STDIN"
        with (psycopg.connect(pg_dsn()) as pg, pg.cursor() as cursor,
              cursor.copy(statement) as copy):
            for row in chunk:
                copy.write_row(row)
        return
    with database.engine.begin() as connection:
        connection.execute(insert(AuditEvent), [dict(zip(COLUMNS, row, strict=True))
                                                for row in chunk])


def _set_head(connection: Connection, chunks: Sequence[list[Row]]) -> None:
    """Point the default chain's head at the last event, as `audit.append` leaves it."""
    rows = sum(len(chunk) for chunk in chunks)
    if rows:
        connection.execute(insert(AuditHead).values(
            chain=audit.DEFAULT_CHAIN, seq=rows, hash=chunks[-1][-1][-1], count=rows))


def _analyze(database: Database) -> None:
    with database.engine.connect() as connection:
        if database.is_postgres:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text("VACUUM ANALYZE audit_events"))
        else:
            connection.execute(text("ANALYZE"))
            connection.commit()


# --- querying -----------------------------------------------------------------------


def measure(database: Database, patients: int, repetitions: int, seed: int) -> Latency:
    """Time `audit.query` for `repetitions` random patients (after two warm-up queries)."""
    rng = random.Random(seed)
    chosen = [f"BENCH-P{rng.randrange(patients):06d}" for _ in range(repetitions + 2)]
    samples: list[float] = []
    returned: list[int] = []
    for patient in chosen:
        with database.read() as session:
            started = time.perf_counter()
            events = audit.query(session, audit.AuditQuery(patient_id=patient, limit=100))
            samples.append((time.perf_counter() - started) * 1000)
        returned.append(len(events))
    return Latency(samples[2:], statistics.fmean(returned[2:]), plan(database, chosen[0]))


def plan(database: Database, patient: str) -> str:
    """The store's plan for the patient query, to show which index (if any) it used."""
    sql = ("SELECT * FROM audit_events WHERE patient_id = :p ORDER BY seq DESC LIMIT 100")
    prefix = "EXPLAIN" if database.is_postgres else "EXPLAIN QUERY PLAN"
    with database.read() as session:
        lines = session.execute(text(f"{prefix} {sql}"), {"p": patient}).all()
    return " | ".join(str(line[-1]).strip() for line in lines)


def drop_patient_index(database: Database) -> None:
    """Remove the index the query relies on, so the reference is a full scan."""
    index = next(i for i in TABLE.indexes if i.name == PATIENT_INDEX)
    with database.engine.begin() as connection:
        index.drop(connection)
    _analyze(database)


def check_chain(database: Database) -> str:
    """Run `audit.verify` over the whole ledger (slow at full size: only when asked)."""
    started = time.perf_counter()
    report = audit.verify(database)
    return f"audit.verify passed: {report.events} events in {time.perf_counter() - started:.1f} s"


def run(database: Database, chunks: Sequence[list[Row]], patients: int, *,
        repetitions: int, scan_repetitions: int, verify: bool, seed: int) -> AuditResult:
    """Fill, time the indexed query, optionally verify the chain, then time the full scan."""
    fill_seconds = fill(database, chunks)
    indexed = measure(database, patients, repetitions, seed)
    chain = check_chain(database) if verify else (
        "built with audit.event_hash like audit.append; audit.verify not run (--verify-chain)")
    drop_patient_index(database)
    full_scan = measure(database, patients, scan_repetitions, seed + 1)
    rows = sum(len(chunk) for chunk in chunks)
    kind = "postgresql" if database.is_postgres else "sqlite"
    return AuditResult(kind, rows, patients, fill_seconds, indexed, full_scan, chain)
