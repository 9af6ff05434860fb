"""The default backend: one SQLite file (``<root>/hub.sqlite3``) in WAL mode.

One connection per thread (the WSGI server is threaded; gunicorn workers on one host share the file through
WAL). ``BEGIN IMMEDIATE`` takes the write lock up front, so a batch is all or nothing and two writers never
deadlock; a lock held past the busy timeout becomes :class:`StorageBusyError` (503 with ``Retry-After``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...errors import StorageBusyError
from ._base import ADDED_COLUMNS, SQLStorage, schema_statements

__all__ = ["SQLiteStorage"]

_TYPES = {"text": "TEXT", "real": "REAL", "blob": "BLOB", "int": "INTEGER"}
_STATEMENTS = schema_statements(text="TEXT", real="REAL", blob="BLOB", int_="INTEGER")


@contextmanager
def _busy_as_storage_error() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:  # "database is locked", disk I/O trouble
        raise StorageBusyError(f"sqlite: {exc}") from exc


class SQLiteStorage(SQLStorage):
    """The hub's SQLite database.

    Args:
        path: the database file (created with its tables when missing).
        busy_timeout_s: how long a statement waits for another writer's lock.
    """

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 5.0) -> None:
        self.path = str(path)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        with self._tx() as conn:
            for table, column, kind in ADDED_COLUMNS:  # a database from before the column: add it first
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if have and column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {_TYPES[kind]}")
            for stmt in _STATEMENTS:
                conn.execute(stmt)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self.busy_timeout_s)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with _busy_as_storage_error():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with _busy_as_storage_error():
            yield self._conn()

    def _iter_rows(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        with _busy_as_storage_error():
            yield from self._conn().execute(sql, params)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
