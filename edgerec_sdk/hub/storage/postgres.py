"""The scale-out backend: PostgreSQL, with the same tables, columns and keys as the SQLite one.

Several hub processes on several hosts share one database, bundle files included (``files.py``: chunked
rows, streamed), so replicas need no shared directory. The driver is psycopg 3 (extra ``[hub]``), imported only when a ``postgresql://`` URL is used.

Why each choice:

- A small bounded pool of autocommit connections (no extra dependency, no background thread): the threaded
  server runs one thread per request, so per-thread connections would open one per request. A checkout that
  finds every connection busy waits ``pool_timeout_s``, then the hub answers 503 with ``Retry-After``.
- ``with conn.transaction()`` makes an events batch all or nothing; ``ON CONFLICT (event_id) DO NOTHING``
  deduplicates even between two hubs inserting the same id at once (the second waits on the first's key).
  Deadlocks and serialisation failures between concurrent batches are retried a few times, then answered
  503 (the edge resends the batch; stored ids count as duplicates).
- Text columns use ``COLLATE "C"``: ids compare byte-wise and ``ORDER BY`` agrees with SQLite's.
- After ``os.fork`` the child never touches the parent's sockets: it forgets inherited connections without
  closing them (closing would end the parent's sessions) and opens its own.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from ..._impl.log import redact_url
from ..._impl.optional import require
from ...errors import ConfigError, StorageBusyError
from ...sync import protocol
from ._base import ADDED_COLUMNS, INSERT_EVENT, Conn, SQLStorage, event_params, schema_statements

__all__ = ["PostgresStorage"]

logger = logging.getLogger(__name__)

_TYPES = {"text": 'TEXT COLLATE "C"', "real": "DOUBLE PRECISION", "blob": "BYTEA", "int": "BIGINT"}
_STATEMENTS = schema_statements(text=_TYPES["text"], real=_TYPES["real"], blob=_TYPES["blob"], int_=_TYPES["int"])
_SCHEMA_LOCK = 0x6564676572656301  # advisory lock id: concurrent hubs create the tables one at a time
_TX_ATTEMPTS = 3
_INHERITED: list[Any] = []  # connections a forked child must neither use nor close


def _shown(url: str) -> str:
    """The URL as it may be logged: no password, no query; never the raw text when it cannot be parsed."""
    try:
        return redact_url(url) if "://" in url else "<conninfo>"
    except ValueError:
        return "<unparseable URL>"


class _PgConn:
    """A psycopg connection that takes the shared ``?`` placeholders."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.raw.execute(sql.replace("?", "%s"), params)


class _Pool:
    """Bounded pool of autocommit connections, safe across threads and ``fork``."""

    def __init__(self, conninfo: str, *, max_size: int, timeout_s: float, connect_timeout_s: float) -> None:
        self._psycopg = require("psycopg", extra="hub")
        self._conninfo = conninfo
        self._max_size = max_size
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._reset()
        ref = weakref.ref(self)

        def after_fork_in_child() -> None:
            pool = ref()
            if pool is not None:
                pool._after_fork()

        os.register_at_fork(after_in_child=after_fork_in_child)

    def _reset(self) -> None:
        self._open: set[Any] = set()  # every connection of this process, idle or checked out
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self._max_size)
        self._closed = False

    def _after_fork(self) -> None:
        _INHERITED.extend(self._open)  # kept referenced: collecting one would end the parent's session
        self._reset()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        if self._closed:
            raise StorageBusyError("postgresql: storage closed")
        if not self._slots.acquire(timeout=self._timeout_s):
            raise StorageBusyError("postgresql: every pooled connection is busy")
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._psycopg.connect(self._conninfo, autocommit=True,
                                             connect_timeout=max(1, round(self._connect_timeout_s)))
                with self._lock:
                    self._open.add(conn)
            try:
                yield conn
            finally:
                self._give_back(conn)
        finally:
            self._slots.release()

    def _give_back(self, conn: Any) -> None:
        idle = self._psycopg.pq.TransactionStatus.IDLE
        if conn.closed or conn.broken or conn.info.transaction_status != idle or self._closed:
            with self._lock:
                self._open.discard(conn)
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open.difference_update(idle)
        for conn in idle:
            conn.close()


class PostgresStorage(SQLStorage):
    """The hub's PostgreSQL database.

    Args:
        url: a libpq URL or conninfo string, e.g. ``postgresql://edgerec@db.internal/edgerec`` (a password
            is better given by ``PGPASSWORD`` or ``~/.pgpass`` than in the URL).
        max_connections: pooled connections per hub process.
        pool_timeout_s: how long a request waits for a free connection before the hub answers 503.
        connect_timeout_s: how long opening a connection may take.

    Example:
        >>> storage = PostgresStorage("postgresql://edgerec@127.0.0.1/edgerec")  # doctest: +SKIP
    """

    kind = "postgresql"

    def __init__(self, url: str, *, max_connections: int = 10, pool_timeout_s: float = 5.0,
                 connect_timeout_s: float = 5.0) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.url = url
        self._psycopg = require("psycopg", extra="hub")
        try:
            require("psycopg.conninfo", extra="hub").conninfo_to_dict(url)
        except self._psycopg.ProgrammingError as exc:  # its text quotes the URL, password included: not kept
            raise ConfigError(f"--db: not a valid PostgreSQL URL or conninfo ({_shown(url)})") from exc
        self._pool = _Pool(url, max_size=max_connections, timeout_s=pool_timeout_s,
                           connect_timeout_s=connect_timeout_s)
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            for stmt in _STATEMENTS:
                conn.execute(stmt)
            for table, column, kind in ADDED_COLUMNS:  # a database from before the column
                conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {_TYPES[kind]}")
            # chunks are npy/onnx bytes: TOAST compression would cost CPU on every read for little gain
            conn.execute("ALTER TABLE file_chunks ALTER COLUMN data SET STORAGE EXTERNAL")
        logger.info("hub storage: postgresql at %s", _shown(url))

    @contextmanager
    def _checked_out(self) -> Iterator[Any]:
        try:
            with self._pool.connection() as raw:
                yield raw
        except self._psycopg.OperationalError as exc:  # unreachable, restarted, deadlock, serialisation
            detail = (str(exc).strip().splitlines() or [""])[0][:200]  # libpq names host and user, never a password
            raise StorageBusyError(f"postgresql: {type(exc).__name__}: {detail}") from exc

    @contextmanager
    def _tx(self) -> Iterator[_PgConn]:
        with self._checked_out() as raw, raw.transaction():
            yield _PgConn(raw)

    @contextmanager
    def _read(self) -> Iterator[_PgConn]:
        with self._checked_out() as raw:
            yield _PgConn(raw)

    def _iter_rows(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        """Stream through a server-side cursor, so exporting millions of events stays in bounded memory."""
        with self._checked_out() as raw, raw.transaction(), raw.cursor(name="edgerec_export") as cur:
            cur.itersize = 5000
            cur.execute(sql.replace("?", "%s"), params)
            yield from cur

    def read_chunk(self, scope: str, name: str, seq: int) -> bytes | None:
        """As in SQLite, with the row in binary format (text format would hex-encode a MiB per chunk)."""
        with self._checked_out() as raw:
            row = raw.execute("SELECT data FROM file_chunks WHERE scope = %s AND name = %s AND seq = %s",
                              (scope, name, seq), binary=True).fetchone()
        return None if row is None else bytes(row[0])

    def _insert_segment(self, conn: Conn, segment: list[tuple[int, dict[str, Any]]], edge_id: str,
                        batch_id: str, now: float) -> dict[int, bool]:
        """One pipelined ``executemany`` instead of a round trip per event; ``RETURNING`` tells new from known."""
        rows = sorted(segment, key=lambda p: p[1]["event_id"])
        if not rows:
            return {}
        with cast(_PgConn, conn).raw.cursor() as cur:
            cur.executemany((INSERT_EVENT + " RETURNING event_id").replace("?", "%s"),
                            [event_params(ev, edge_id, batch_id, now) for _, ev in rows], returning=True)
            new = [c.fetchone() is not None for c in cur.results()]
        return {i: n for (i, _), n in zip(rows, new, strict=True)}

    def insert_events(self, edge_id: str, batch_id: str, events: Iterable[Any]) -> protocol.BatchResult:
        """As in SQLite; a batch that lost a deadlock to a concurrent one is retried whole, a few times."""
        events = list(events)
        attempt = 1
        while True:
            try:
                return super().insert_events(edge_id, batch_id, events)
            except StorageBusyError as exc:
                lost_race = isinstance(exc.__cause__, self._psycopg.errors.TransactionRollback)
                if attempt >= _TX_ATTEMPTS or not lost_race:
                    raise
                attempt += 1
                logger.debug("hub storage: a batch lost a deadlock; retrying (attempt %d)", attempt)

    def close(self) -> None:
        """Close the pooled connections; the storage is unusable afterwards."""
        self._pool.close()
