"""Database connections: SQLite (WAL) embedded, PostgreSQL for production and scale-out.

Writers and readers are separated so that SQLite's single writer is taken up front
(`BEGIN IMMEDIATE`: no deadlock when a read turns into a write) while readers stay
concurrent under WAL. Driver errors are translated into `StoreUnavailable` here.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Executable,
    Table,
    create_engine,
    event,
    insert,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from radbridge.engine import fast_insert
from radbridge.engine.fsync import fsync_path
from radbridge.errors import StoreUnavailable

WRITE_LOCK_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for its turn in this process before giving up."""
_READONLY = "radbridge_readonly"
_RELAXED = "radbridge_relaxed"
_SYNC_AFTER = "radbridge_sync_after"
"""A durable transaction whose WAL is fsynced by `Database` after the commit (SQLite)."""


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
        self._write_lock: threading.Lock | None = None
        self._journal: _Journal | None = None
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(url)
            self._journal = _Journal.of(parsed.database)
            # SQLite has one writer; threads that queue on its busy handler sleep in steps
            # of up to 100 ms. Queuing on a lock here hands the writer over at once.
            self._write_lock = threading.Lock()
        else:
            self.engine = create_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
            )
        # Durable writes fsync the WAL themselves when there is one file to sync;
        # otherwise (PostgreSQL, an in-memory or URI-named SQLite) the engine's own way.
        self._durable_engine = (self.engine.execution_options(**{_SYNC_AFTER: True})
                                if self._journal is not None else self.engine)
        self._writer = sessionmaker(self._durable_engine, expire_on_commit=False)
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
        acknowledges is always fsynced before this returns (see `_Journal`).
        """
        factory = self._relaxed_writer if redoable else self._writer
        with self._write_turn(), factory() as session, session.begin():
            yield session
        if not redoable:
            self.make_durable()

    def make_durable(self) -> None:
        """Make every transaction committed so far survive a power cut (SQLite: fsync the
        WAL, outside the writer; PostgreSQL commits synchronously already)."""
        if self._journal is not None:
            try:
                self._journal.sync()
            except OSError as exc:
                raise StoreUnavailable(
                    f"store cannot sync its journal: {exc.strerror or exc}") from exc

    def held_writer(self) -> HeldWriter:
        """A connection of its own for one thread's durable write transactions."""
        return HeldWriter(self)

    @contextmanager
    def _write_turn(self) -> Iterator[None]:
        """This process's write turn (SQLite) around a transaction; store failures
        become StoreUnavailable."""
        lock = self._write_lock
        if lock is not None and not lock.acquire(timeout=WRITE_LOCK_TIMEOUT):
            raise StoreUnavailable(f"store busy: no write turn within {WRITE_LOCK_TIMEOUT:g}s")
        try:
            yield
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, DBAPIError) and not _is_availability_error(exc):
                raise
            raise StoreUnavailable(f"store cannot commit: {_short(exc)}") from exc
        finally:
            if lock is not None:
                lock.release()

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


class HeldWriter:
    """Durable write transactions (as `Database.write`) for one thread's hot path, the
    receiver's commit thread: Core statements on a connection the thread keeps. An ORM
    session's bookkeeping, and taking a connection from the pool and handing it back
    (with the pool's reset rollback), cost about as much CPU as the statements. A
    transaction that fails drops the connection; the next one opens a fresh one (the
    database may have restarted meanwhile)."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._connection: Connection | None = None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._database._write_turn():
            if self._connection is None:
                self._connection = self._database._durable_engine.connect()
            try:
                with self._connection.begin():
                    yield self._connection
            except BaseException:
                self.close()
                raise
        self._database.make_durable()

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(DBAPIError):  # broken already: why it is dropped
                self._connection.close()
            self._connection = None


def _sqlite_engine(url: str) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        journal_mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        record.info[_WAL] = str(journal_mode).lower() == "wal"
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Straight on the sqlite3 connection: these run in every transaction, and each
        # statement through SQLAlchemy costs more CPU than SQLite takes to run it.
        raw: sqlite3.Connection = connection.connection.driver_connection
        options = connection.get_execution_options()
        if options.get(_READONLY, False):
            fast_insert.run_raw(raw, "BEGIN")
            return
        # FULL: the commit survives power loss too, not only a crash of the process.
        # NORMAL for redoable work, and for durable work whose WAL `Database` fsyncs
        # after the commit (the same sync FULL makes, without holding the writer).
        info = connection.connection.info
        relaxed = options.get(_RELAXED, False) or (options.get(_SYNC_AFTER, False)
                                                   and info.get(_WAL, False))
        mode = "NORMAL" if relaxed else "FULL"
        if info.get(_SYNCHRONOUS) != mode:
            fast_insert.run_raw(raw, f"PRAGMA synchronous={mode}")
            info[_SYNCHRONOUS] = mode
        _begin_immediate(raw)

    return engine


_SYNCHRONOUS = "radbridge_synchronous"
"""Key in a pooled connection's info: the synchronous mode it was last set to."""
_WAL = "radbridge_wal"
"""Key in a pooled connection's info: whether SQLite runs it in WAL mode."""


class _Journal:
    """A SQLite store's write-ahead log, fsynced after durable commits.

    With synchronous=FULL, SQLite fsyncs the WAL inside COMMIT, while the transaction
    still holds the one writer that both processes of a split node and every writing
    thread share; that fsync was half of a group commit's hold. Durable transactions
    commit with synchronous=NORMAL instead (the WAL gets the same frames, in the same
    order; SQLite still syncs around checkpoints) and this fsync follows the commit,
    before the caller acknowledges anything. An fsync covers every frame written so
    far, so a power cut keeps a prefix of the WAL that includes every acknowledged
    transaction; a crash of the process alone never loses a commit either way.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._synced_inode: tuple[int, int] | None = None

    @classmethod
    def of(cls, database: str | None) -> _Journal | None:
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return cls(Path(f"{database}-wal"))

    def sync(self) -> None:
        try:
            stat = fsync_path(self.path)
        except FileNotFoundError:
            return  # no WAL: everything was checkpointed into the database, synced
        inode = (stat.st_dev, stat.st_ino)
        if inode != self._synced_inode:
            # A new WAL file: its directory entry must survive a power cut too (two
            # threads meeting it at once both sync the directory; no harm).
            fsync_path(self.path.parent)
            self._synced_inode = inode


def _begin_immediate(raw: sqlite3.Connection) -> None:
    """Take SQLite's writer, retrying in small steps while another process holds it.

    Within one process writers queue on `Database._write_lock`; between processes (a
    node run as ingest and process roles) SQLite's own busy handler would sleep in
    steps of 1, 2, 5, 10 ... 100 ms, which costs far more latency than the wait.
    """
    raw.execute("PRAGMA busy_timeout=0")
    deadline = time.monotonic() + WRITE_LOCK_TIMEOUT
    pause = 0.0002
    try:
        while True:
            try:
                fast_insert.run_raw(raw, "BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc.orig).lower() or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 1.5, 0.002)
    finally:
        with contextlib.suppress(sqlite3.Error):  # a broken connection: its error is raised
            raw.execute("PRAGMA busy_timeout=30000")


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


def insert_many(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert `rows` and return their primary keys in row order.

    PostgreSQL: one INSERT ... RETURNING for all rows. SQLite cannot promise the order
    of RETURNING rows, so SQLAlchemy would fall back to one INSERT per row; instead
    the rows go in as one executemany and their keys are read back: under SQLite's
    single writer (the caller's transaction holds it) they are exactly the keys above
    the largest one before the insert, in insertion order.
    """
    if not rows:
        return []
    if connection.dialect.name == "postgresql":
        return list(connection.execute(_returning(table), rows).scalars())
    before = fast_insert.largest_key(connection, table)
    fast_insert.insert_rows(connection, table, rows)
    ids = fast_insert.keys_above(connection, table, before)
    if len(ids) != len(rows):
        raise RuntimeError(f"{table.name}: inserted {len(rows)} rows but found {len(ids)} keys")
    return ids


@functools.cache
def _returning(table: Table) -> Executable:
    """Built once per table (building a statement costs more than running it)."""
    key = next(iter(table.primary_key.columns))
    return insert(table).returning(key, sort_by_parameter_order=True)
