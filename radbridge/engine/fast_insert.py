"""Multi-row INSERTs, and the few statements that run in every group commit, on SQLite
straight through sqlite3, inside the caller's transaction.

On the acknowledgement path most of a group commit's CPU went to SQLAlchemy's work per
execute (parameter processing, result set-up), not to SQLite. Here the INSERT text and
one converter per column are made once per (table, columns) from the table's own
column types, so the values are stored exactly as SQLAlchemy would store them
(timestamps as naive UTC text, JSON as text, booleans as integers) and read back
through the models as usual. PostgreSQL keeps SQLAlchemy's own path.
"""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Connection, Table, Update, bindparam, insert, update
from sqlalchemy.exc import DBAPIError, StatementError

from radbridge.engine.models import UTCDateTime

Convert = Callable[[Any], Any]


def insert_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT every row (all rows have the same keys) in the caller's transaction."""
    if not rows:
        return
    if connection.dialect.name != "sqlite":
        connection.execute(insert(table), list(rows))
        return
    _execute_many(connection, _plan(table, tuple(rows[0])), rows)


def update_rows(connection: Connection, table: Table, key: str,
                rows: Sequence[dict[str, Any]]) -> None:
    """UPDATE each row's columns where `key` equals the row's `key` value (all rows have
    the same keys), in the caller's transaction."""
    if not rows:
        return
    columns = tuple(rows[0])
    if connection.dialect.name != "sqlite":
        connection.execute(_update_statement(table, key, columns),
                           [{f"b_{name}": value for name, value in row.items()} for row in rows])
        return
    _execute_many(connection, _update_plan(table, key, columns), rows)


def keys_above(connection: Connection, table: Table, above: int) -> list[int]:
    """Primary keys greater than `above`, ascending (SQLite)."""
    return [row[0] for row in run(connection, _keys(table)[1], (above,))]


def largest_key(connection: Connection, table: Table) -> int:
    return int(run(connection, _keys(table)[0], ())[0][0])


def _execute_many(connection: Connection, plan: _Plan, rows: Sequence[dict[str, Any]]) -> None:
    values = [plan.values(row) for row in rows]
    cursor = _cursor(connection)
    try:
        cursor.executemany(plan.sql, values)
    except sqlite3.Error as exc:
        raise _as_sqlalchemy(plan.sql, values[:1], exc) from exc
    finally:
        cursor.close()


def _cursor(connection: Connection) -> sqlite3.Cursor:
    return connection.connection.driver_connection.cursor()  # type: ignore[union-attr,no-any-return]


def run(connection: Connection, sql: str, parameters: Sequence[Any]) -> list[Any]:
    """One statement on the transaction's sqlite3 connection, and its rows; without
    SQLAlchemy's statement and result set-up, which costs about as much as SQLite's own
    work for these small lookups and updates."""
    return run_raw(connection.connection.driver_connection, sql, parameters)  # type: ignore[arg-type]


def run_raw(raw: sqlite3.Connection, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
    """`run` on a sqlite3 connection itself (the store's begin hook has no other)."""
    cursor = raw.cursor()
    try:
        return cursor.execute(sql, parameters).fetchall()
    except sqlite3.Error as exc:
        raise _as_sqlalchemy(sql, parameters, exc) from exc
    finally:
        cursor.close()


def _as_sqlalchemy(sql: str, parameters: Sequence[Any], exc: sqlite3.Error) -> StatementError:
    """The error as SQLAlchemy raises it (OperationalError, IntegrityError, ...), so that
    callers translate a full disk or a lost race exactly as on the usual path."""
    return DBAPIError.instance(sql, list(parameters), exc, sqlite3.Error)


@dataclass(frozen=True)
class _Plan:
    sql: str
    take: Callable[[dict[str, Any]], tuple[Any, ...]]
    """The row's values in column order."""
    converts: tuple[tuple[int, Convert], ...]
    """Converters of the columns that need one (text and numbers go in as they are)."""

    def values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        if not self.converts:
            return self.take(row)
        values = list(self.take(row))
        for index, convert in self.converts:
            values[index] = convert(values[index])
        return tuple(values)


@functools.cache
def _plan(table: Table, keys: tuple[str, ...]) -> _Plan:
    names = ", ".join(f'"{table.c[key].name}"' for key in keys)
    marks = ", ".join("?" for _ in keys)
    getter = operator.itemgetter(*keys)
    take: Callable[[dict[str, Any]], tuple[Any, ...]] = (
        getter if len(keys) > 1 else lambda row: (getter(row),))
    converts = tuple((index, convert) for index, key in enumerate(keys)
                     if (convert := _converter(table.c[key].type)) is not _as_is)
    return _Plan(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})', take, converts)


@functools.cache
def _update_plan(table: Table, key: str, columns: tuple[str, ...]) -> _Plan:
    changed = tuple(name for name in columns if name != key)
    assignments = ", ".join(f'"{table.c[name].name}" = ?' for name in changed)
    order = (*changed, key)  # the key's value binds the WHERE, last
    getter = operator.itemgetter(*order)
    converts = tuple((index, convert) for index, name in enumerate(order)
                     if (convert := _converter(table.c[name].type)) is not _as_is)
    return _Plan(f'UPDATE "{table.name}" SET {assignments} WHERE "{table.c[key].name}" = ?',
                 getter, converts)


@functools.cache
def _update_statement(table: Table, key: str, columns: tuple[str, ...]) -> Update:
    return (update(table).where(table.c[key] == bindparam(f"b_{key}"))
            .values({name: bindparam(f"b_{name}", type_=table.c[name].type)
                     for name in columns if name != key}))


@functools.cache
def _keys(table: Table) -> tuple[str, str]:
    key = next(iter(table.primary_key.columns)).name
    return (f'SELECT coalesce(max("{key}"), 0) FROM "{table.name}"',
            f'SELECT "{key}" FROM "{table.name}" WHERE "{key}" > ? ORDER BY "{key}"')


def _converter(column_type: Any) -> Convert:
    if isinstance(column_type, UTCDateTime):
        return _timestamp
    if isinstance(column_type, JSON):
        return lambda value: None if value is None else json.dumps(value)
    if isinstance(column_type, Boolean):
        return lambda value: None if value is None else int(value)
    return _as_is


def _timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use an aware UTC time")
    return _utc_text(value)


@functools.lru_cache(maxsize=16)
def _utc_text(value: datetime) -> str:
    """A batch's rows share one `now`: formatted once, not once per row and column."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _as_is(value: Any) -> Any:
    return value
