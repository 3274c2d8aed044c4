"""Fresh, migrated stores for each configuration, and facts about the machine.

SQLite: a new file in the run's temporary folder per configuration. PostgreSQL: one
database (`radbridge_bench` by default) created for the run, emptied between
configurations the way the test suite does it, and dropped at the end.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text

from radbridge.engine.db import Database
from radbridge.engine.migrate import upgrade
from radbridge.engine.models import Base

PG_ADMIN = os.environ.get("RADBRIDGE_BENCH_PG", "host=127.0.0.1 user=postgres dbname=postgres")
PG_DATABASE = os.environ.get("RADBRIDGE_BENCH_DB", "radbridge_bench")
TABLES = tuple(table.name for table in Base.metadata.sorted_tables)
"""Every table of the schema, so a new one is emptied too."""


@dataclass(frozen=True)
class Store:
    """One configuration's empty store: the engine's URL and where its files live."""

    kind: str
    url: str
    data_dir: Path


def pg_url(database: str = PG_DATABASE) -> str:
    params = psycopg.conninfo.conninfo_to_dict(PG_ADMIN)
    user, host = params.get("user", "postgres"), params.get("host", "127.0.0.1")
    return f"postgresql+psycopg://{user}@{host}/{database}"


def pg_dsn(database: str = PG_DATABASE) -> str:
    """The same database as `pg_url`, for psycopg itself."""
    return psycopg.conninfo.make_conninfo(PG_ADMIN, dbname=database)


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create the benchmark database, migrate it, yield its URL, drop it afterwards."""
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    try:
        database = Database(pg_url())
        upgrade(database)
        database.dispose()
        yield pg_url()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')


def store_urls(kinds: str, folder: Path, name: str) -> Iterator[tuple[str, str]]:
    """(kind, URL) of each store named in `kinds` ("sqlite,postgresql"), one at a time:
    a SQLite file `name`.db in `folder`, or the benchmark PostgreSQL database, created
    for its turn and dropped when the loop moves on."""
    for kind in filter(None, kinds.split(",")):
        if kind == "sqlite":
            yield kind, f"sqlite:///{folder / f'{name}.db'}"
        else:
            with postgres_database() as url:
                yield kind, url


def fresh_store(kind: str, workdir: Path, label: str) -> Store:
    """An empty, migrated store for one configuration (see the module docstring)."""
    data_dir = workdir / label
    data_dir.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        url = f"sqlite:///{data_dir / 'radbridge.db'}"
        database = Database(url)
        upgrade(database)
    else:
        url = pg_url()
        database = Database(url)
        _reset_postgres(database)
    database.dispose()
    return Store(kind, url, data_dir)


def _reset_postgres(database: Database) -> None:
    """Empty every table and empty the audit chains too (as tests do).

    A checkpoint then flushes what earlier configurations wrote, so that their dirty
    pages are not written back during the next measurement.
    """
    with database.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    with database.engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        autocommit.execute(text("VACUUM ANALYZE"))
        autocommit.execute(text("CHECKPOINT"))


def bulk_load(database: Database, table: str, columns: tuple[str, ...],
              rows: list[tuple[Any, ...]]) -> None:
    """Rows straight into a table, the fastest way each store takes them: COPY on
    PostgreSQL, one executemany INSERT on SQLite (benchmark set-up only)."""
    if database.is_postgres:
        with (psycopg.connect(pg_dsn()) as pg, pg.cursor() as cursor,
              cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy):
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    with database.engine.begin() as connection:
        connection.exec_driver_sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


@contextmanager
def indexes_dropped(database: Database, tables: Iterable[Any]) -> Iterator[None]:
    """The tables' secondary indexes dropped while the block bulk-loads, rebuilt after:
    building an index once is much faster than updating it per row."""
    indexes = [index for table in tables for index in table.indexes]
    with database.engine.begin() as connection:
        for index in indexes:
            index.drop(connection)
    yield
    with database.engine.begin() as connection:
        for index in indexes:
            index.create(connection)


def machine_info() -> dict[str, Any]:
    """Cores, Python, SQLite and PostgreSQL versions, and the durability settings used."""
    with psycopg.connect(PG_ADMIN, connect_timeout=5) as connection:
        settings = {name: connection.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                    for name in ("server_version", "synchronous_commit", "fsync",
                                 "wal_sync_method", "shared_buffers")}
    return {
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "sqlite_settings": "journal_mode=WAL, synchronous=FULL (radbridge/engine/db.py)",
        "postgresql": settings.pop("server_version"),
        "postgresql_settings": settings,
    }
