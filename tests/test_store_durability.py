"""SQLite durability: what a durable write commits is fsynced in the WAL before the write
returns, and that fsync no longer holds the store's one writer."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from radbridge.engine.db import Database
from radbridge.engine.migrate import upgrade
from radbridge.errors import StoreUnavailable

REAL_FSYNC = os.fsync


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(database)
    yield database
    database.dispose()


class SyncWatch:
    """Records each fsync of the store's WAL: was the writer free, was the row visible?"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wal = Path(f"{path}-wal")
        self.seen: list[tuple[bool, int]] = []

    def fsync(self, fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")) == self.wal.resolve():
            self.seen.append((self._writer_free(), self._rows()))
        REAL_FSYNC(fd)

    def _writer_free(self) -> bool:
        other = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            other.close()

    def _rows(self) -> int:
        other = sqlite3.connect(self.path, isolation_level=None)
        try:
            return int(other.execute("SELECT count(*) FROM audit_head").fetchone()[0])
        finally:
            other.close()


@pytest.fixture
def watch(store: Database, monkeypatch: pytest.MonkeyPatch) -> SyncWatch:
    path = Path(store.engine.url.database or "")
    watch = SyncWatch(path)
    monkeypatch.setattr(os, "fsync", watch.fsync)
    return watch


def add_head(connection: object, chain: str) -> None:
    connection.execute(  # type: ignore[attr-defined]
        text("INSERT INTO audit_head (chain, seq, hash, count) VALUES (:c, 0, 'x', 0)"),
        {"c": chain})


def test_durable_write_fsyncs_the_wal_once_committed_and_the_writer_is_free(
        store: Database, watch: SyncWatch) -> None:
    with store.write() as session:
        add_head(session.connection(), "a")
    assert watch.seen == [(True, 1)]


def test_held_writer_transactions_fsync_the_wal_the_same_way(
        store: Database, watch: SyncWatch) -> None:
    writer = store.held_writer()
    try:
        for chain in ("a", "b"):
            with writer.transaction() as connection:
                add_head(connection, chain)
    finally:
        writer.close()
    assert watch.seen == [(True, 1), (True, 2)]


def test_redoable_write_leaves_the_fsync_to_sqlite(store: Database, watch: SyncWatch) -> None:
    with store.write(redoable=True) as session:
        add_head(session.connection(), "a")
    assert watch.seen == []


def test_writes_commit_with_synchronous_normal_other_transactions_with_full(
        store: Database) -> None:
    for redoable in (False, True):
        with store.write(redoable=redoable) as session:
            mode = session.connection().execute(text("PRAGMA synchronous")).scalar()
        assert mode == 1, redoable  # NORMAL: the durable write's fsync follows its commit
    with store.engine.begin() as connection:  # e.g. migrations: SQLite's own fsync
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2


def test_a_failed_wal_fsync_makes_the_write_fail(
        store: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(StoreUnavailable, match="cannot sync its journal"), \
            store.write() as session:
        add_head(session.connection(), "a")
    # Committed but not known durable: the caller acknowledged nothing, and the sender's
    # retry finds the row (dedup) rather than storing it twice.
    with store.read() as session:
        assert session.execute(text("SELECT count(*) FROM audit_head")).scalar() == 1
