"""Database connections: SQLite (WAL) embedded, PostgreSQL for production and scale-out.

Writers and readers are separated so that SQLite's single writer is taken up front
(`BEGIN IMMEDIATE`: no deadlock when a read turns into a write) while readers stay
concurrent under WAL. Driver errors are translated into `StoreUnavailable` here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from radbridge.errors import StoreUnavailable

_READONLY = "radbridge_readonly"
_RELAXED = "radbridge_relaxed"


def sqlite_url(data_dir: Path) -> str:
    """The default store: one SQLite file under the data directory."""
    return f"sqlite:///{(data_dir / 'radbridge.db').resolve()}"


class Database:
    """One store, two engines: the same code runs on SQLite and PostgreSQL."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(url)
        else:
            self.engine = create_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
            )
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._relaxed_writer = sessionmaker(
            self.engine.execution_options(**{_RELAXED: True}), expire_on_commit=False
        )
        self._reader = sessionmaker(
            self.engine.execution_options(**{_READONLY: True}), expire_on_commit=False
        )

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def write(self, *, redoable: bool = False) -> Iterator[Session]:
        """A transaction that commits on success; store failures become StoreUnavailable.

        `redoable=True` is for work that the engine would simply redo if a power cut
        lost its commit (processing, claims, delivery outcomes: all keyed by message
        and idempotency key). On SQLite such commits skip the fsync (WAL with
        synchronous=NORMAL still survives a crash of the process); what a source
        acknowledges is always committed with a full fsync.
        """
        factory = self._relaxed_writer if redoable else self._writer
        try:
            with factory() as session, session.begin():
                yield session
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, DBAPIError) and not _is_availability_error(exc):
                raise
            raise StoreUnavailable(f"store cannot commit: {_short(exc)}") from exc

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (on SQLite it does not take the write lock)."""
        try:
            with self._reader() as session:
                yield session
        except OperationalError as exc:
            raise StoreUnavailable(f"store cannot be read: {_short(exc)}") from exc

    def ping(self) -> bool:
        """Whether the store answers a trivial query now."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except DBAPIError:
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_engine(url: str) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get(_READONLY, False):
            connection.exec_driver_sql("BEGIN")
            return
        # FULL: the commit survives power loss too, not only a crash of the process
        # (group commit keeps that fsync cheap per message); NORMAL for redoable work.
        relaxed = options.get(_RELAXED, False)
        connection.exec_driver_sql(f"PRAGMA synchronous={'NORMAL' if relaxed else 'FULL'}")
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _is_availability_error(exc: DBAPIError) -> bool:
    """Errors that mean 'cannot store now' rather than a bug in our statements."""
    if exc.connection_invalidated:
        return True
    text_ = str(exc.orig).lower()
    return any(
        marker in text_
        for marker in (
            "database is locked", "disk", "no space", "read-only", "readonly",
            "connection", "server closed", "terminating", "could not", "i/o",
        )
    )


def _short(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    return str(original).splitlines()[0][:300]
