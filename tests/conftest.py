"""Shared fixtures: the store suite runs on SQLite and on the real PostgreSQL server.

PostgreSQL is the one already running on 127.0.0.1 (scripts/test.sh starts it when it
is not). Under CI=true a missing PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from radbridge.engine.db import Database
from radbridge.engine.migrate import upgrade
from radbridge.engine.models import Base

pytest_plugins = ["tests.peers.fixtures"]
"""Orthanc, dcmtk and the network namespace they run in (see tests/peers)."""

PG_ADMIN = os.environ.get("RADBRIDGE_TEST_PG", "host=127.0.0.1 user=postgres dbname=postgres")
TABLES = tuple(table.name for table in Base.metadata.sorted_tables)
"""Every table of the schema, so a new one is emptied too."""


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"radbridge_test_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        _pg_unavailable(str(exc))
    params = psycopg.conninfo.conninfo_to_dict(PG_ADMIN)
    user, host = params.get("user", "postgres"), params.get("host", "127.0.0.1")
    url = f"postgresql+psycopg://{user}@{host}/{name}"
    database = Database(url)
    upgrade(database)
    database.dispose()
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_postgres(database: Database) -> None:
    """Empty every table (the audit chains start again at their genesis)."""
    with database.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty store URL: once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        database = Database(url)
        upgrade(database)
        database.dispose()
        return url
    url: str = request.getfixturevalue("pg_url")
    database = Database(url)
    reset_postgres(database)
    database.dispose()
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """An open Database on each engine (see database_url)."""
    database = Database(database_url)
    yield database
    database.dispose()
