"""Audit queries for compliance at 10 million ledger rows, on SQLite and PostgreSQL.

    python -m benchmarks.audit_query                   # 10M rows, both stores
    python -m benchmarks.audit_query --rows 1000000 --stores sqlite

The ledger is filled with `audit_latency.generate`'s synthetic, validly hash-chained
events (three per message: received, transformed, sent; 50 per patient on average,
spread over the whole table), streamed into the store chunk by chunk (COPY on
PostgreSQL, executemany on SQLite) with the secondary indexes dropped, then the
indexes rebuilt from the models and the tables analysed. Each phase is timed.

Then, with a warm cache, for random patients, each in its own read session:
- `patient`: `queries.page(AuditFilter(patient_id=X), limit=100)`, newest first;
- `patient+window`: the same within a 30-day window of `at`;
- `patient+action`: the same with the action prefix "message.*";
- `api`: GET /api/audit?patient_id=X through the Starlette app in-process, which also
  appends the `audit.queried` event of the read (a write with its commit);
- `export`: GET /api/audit/export?format=csv for one patient, all pages, streamed.
p50/p95/p99 in milliseconds. Nothing is compared with a reference here: the figure the
issue asks for is the p95 of one patient's events at 10M rows.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert, text
from starlette.testclient import TestClient

from benchmarks import audit_latency
from benchmarks.stats import percentile
from benchmarks.stores import PG_ADMIN, machine_info
from radbridge.engine import audit
from radbridge.engine.audit_export import queries
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.engine.migrate import upgrade
from radbridge.engine.models import AuditHead
from radbridge.interfaces.api import ApiContext, create_app

PG_DATABASE = "radbridge_bench_audit"
EVENTS_PER_PATIENT = 50
SEED = 8
TABLE = audit_latency.TABLE
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy stores a DateTime in SQLite (and so how range queries compare it)."""


@dataclass
class Load:
    rows: int = 0
    generate_and_insert_s: float = 0.0
    index_s: float = 0.0
    analyze_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.generate_and_insert_s + self.index_s + self.analyze_s


@dataclass
class StoreResult:
    store: str
    load: Load
    latencies_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    plan: str = ""
    size_mb: float = 0.0


# --- loading ------------------------------------------------------------------------------


def load(database: Database, rows: int, patients: int) -> Load:
    """Stream the synthetic ledger in, with the secondary indexes rebuilt afterwards."""
    result = Load(rows=rows)
    indexes = list(TABLE.indexes)
    with database.engine.begin() as connection:
        for index in indexes:
            index.drop(connection)
    started = time.perf_counter()
    chunks = audit_latency.generate(rows, patients, SEED)
    last_hash = _copy(chunks) if database.is_postgres else _insert(database, chunks)
    result.generate_and_insert_s = time.perf_counter() - started
    started = time.perf_counter()
    with database.engine.begin() as connection:
        if database.is_postgres:
            connection.execute(text("SET maintenance_work_mem = '1GB'"))
        for index in indexes:
            index.create(connection)
        connection.execute(insert(AuditHead).values(chain=audit.DEFAULT_CHAIN, seq=rows,
                                                    hash=last_hash, count=rows))
    result.index_s = time.perf_counter() - started
    started = time.perf_counter()
    with database.engine.connect() as connection:
        if database.is_postgres:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE audit_events"))
        else:
            connection.execute(text("ANALYZE"))
            connection.commit()
    result.analyze_s = time.perf_counter() - started
    return result


def _copy(chunks: Iterator[list[audit_latency.Row]]) -> str:
    last = audit.GENESIS_HASH
    statement = f"COPY audit_events ({', '.join(audit_latency.COLUMNS)}) FROM STDIN"
    with psycopg.connect(_pg_dsn()) as connection, connection.cursor() as cursor, \
            cursor.copy(statement) as copy:
        for chunk in chunks:
            for row in chunk:
                copy.write_row(row)
            last = chunk[-1][-1]
    return last


def _insert(database: Database, chunks: Iterator[list[audit_latency.Row]]) -> str:
    last = audit.GENESIS_HASH
    columns = ", ".join(audit_latency.COLUMNS)
    marks = ", ".join("?" for _ in audit_latency.COLUMNS)
    raw = database.engine.raw_connection()  # in autocommit mode: BEGIN/COMMIT by hand
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        for chunk in chunks:
            cursor.execute("BEGIN")
            cursor.executemany(f"INSERT INTO audit_events ({columns}) VALUES ({marks})",
                               [(row[0].replace(tzinfo=None).strftime(_SQLITE_TIME), *row[1:])
                                for row in chunk])
            cursor.execute("COMMIT")
            last = chunk[-1][-1]
    finally:
        raw.close()
    return last


# --- querying -----------------------------------------------------------------------------


def _time(samples: int, action: Callable[[int], object]) -> dict[str, float]:
    """Milliseconds of `action(i)` for i in 0..samples+2, the first two not counted."""
    taken: list[float] = []
    for index in range(samples + 2):
        started = time.perf_counter()
        action(index)
        taken.append((time.perf_counter() - started) * 1000)
    kept = taken[2:]
    return {"n": len(kept), "p50_ms": percentile(kept, 50), "p95_ms": percentile(kept, 95),
            "p99_ms": percentile(kept, 99), "mean_ms": statistics.fmean(kept)}


def measure(database: Database, workdir: Path, patients: int, samples: int,
            rows: int) -> dict[str, dict[str, float]]:
    rng = random.Random(SEED + 1)
    chosen = [f"BENCH-P{rng.randrange(patients):06d}" for _ in range(samples + 2)]
    middle = audit_latency.START + timedelta(seconds=rows // 6)
    window = (middle, middle + timedelta(days=30))

    def page(filters: queries.AuditFilter) -> None:
        with database.read() as session:
            queries.page(session, filters, limit=100)

    results = {
        "patient": _time(samples, lambda i: page(queries.AuditFilter(patient_id=chosen[i]))),
        "patient+window": _time(samples, lambda i: page(queries.AuditFilter(
            patient_id=chosen[i], since=window[0], until=window[1]))),
        "patient+action": _time(samples, lambda i: page(queries.AuditFilter(
            patient_id=chosen[i], action="message.*"))),
    }
    context = ApiContext(database=database, blobs=BlobStore(workdir / "blobs"), channels={},
                         node_id="bench", inline_limit=1024, store_metrics=False)
    with TestClient(create_app(context)) as client:
        results["api"] = _time(samples, lambda i: _ok(client.get(
            "/api/audit", params={"patient_id": chosen[i], "limit": 100})))
        results["export"] = _time(samples, lambda i: _ok(client.get(
            "/api/audit/export", params={"patient_id": chosen[i], "format": "csv"})))
    return results


def _ok(response: Any) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"the API answered {response.status_code}: {response.text[:200]}")


def plan(database: Database) -> str:
    sql = ("SELECT * FROM audit_events WHERE patient_id = 'BENCH-P000001' "
           "ORDER BY seq DESC LIMIT 100")
    prefix = "EXPLAIN" if database.is_postgres else "EXPLAIN QUERY PLAN"
    with database.read() as session:
        return " | ".join(str(line[-1]).strip()
                          for line in session.execute(text(f"{prefix} {sql}")))


def size_mb(database: Database, sqlite_file: Path | None) -> float:
    if sqlite_file is not None:
        return sum(p.stat().st_size for p in sqlite_file.parent.glob(sqlite_file.name + "*")
                   ) / 2**20
    with database.read() as session:
        found = session.execute(text("SELECT pg_database_size(current_database())")).scalar()
    return int(found or 0) / 2**20


# --- the runner ---------------------------------------------------------------------------


def _pg_dsn() -> str:
    return psycopg.conninfo.make_conninfo(PG_ADMIN, dbname=PG_DATABASE)


def _pg_url() -> str:
    params = psycopg.conninfo.conninfo_to_dict(PG_ADMIN)
    return (f"postgresql+psycopg://{params.get('user', 'postgres')}@"
            f"{params.get('host', '127.0.0.1')}/{PG_DATABASE}")


def _recreate_pg(drop_only: bool = False) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        if not drop_only:
            admin.execute(f'CREATE DATABASE "{PG_DATABASE}"')


def run_store(kind: str, rows: int, samples: int, workdir: Path, keep: bool) -> StoreResult:
    patients = max(1, rows // EVENTS_PER_PATIENT)
    sqlite_file = workdir / "audit.db" if kind == "sqlite" else None
    if sqlite_file is not None:
        url = f"sqlite:///{sqlite_file}"
    else:
        _recreate_pg()
        url = _pg_url()
    database = Database(url)
    try:
        upgrade(database)
        print(f"{kind}: loading {rows:,} audit events ({patients:,} patients)", flush=True)
        loaded = load(database, rows, patients)
        print(f"{kind}: loaded in {loaded.total_s:.0f} s (rows {loaded.generate_and_insert_s:.0f}"
              f" s, indexes {loaded.index_s:.0f} s, analyse {loaded.analyze_s:.0f} s)",
              flush=True)
        result = StoreResult(kind, loaded, measure(database, workdir, patients, samples, rows),
                             plan(database), size_mb(database, sqlite_file))
    finally:
        database.dispose()
        if kind == "postgresql" and not keep:
            _recreate_pg(drop_only=True)
    return result


def print_results(results: list[StoreResult]) -> None:
    for result in results:
        print(f"\n{result.store}: {result.load.rows:,} rows, {result.size_mb:,.0f} MiB, "
              f"loaded in {result.load.total_s:.0f} s; plan: {result.plan}")
        print(f"  {'query':<16}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
        for name, figures in result.latencies_ms.items():
            print(f"  {name:<16}{figures['p50_ms']:>10.2f}{figures['p95_ms']:>10.2f}"
                  f"{figures['p99_ms']:>10.2f}{figures['mean_ms']:>10.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--samples", type=int, default=200, help="patients per query kind")
    parser.add_argument("--workdir", type=Path, help="where the SQLite file goes "
                        "(default: a temporary folder, removed afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    parser.add_argument("--output", type=Path,
                        default=Path("benchmarks/results/audit_query.json"))
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="radbridge-audit-bench-",
                                     dir=args.workdir) as folder:
        for kind in args.stores.split(","):
            results.append(run_store(kind, args.rows, args.samples, Path(folder), args.keep))
    print_results(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "machine": machine_info(),
        "results": [{**asdict(r), "load": {**asdict(r.load), "total_s": r.load.total_s}}
                    for r in results]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
