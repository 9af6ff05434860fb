"""A profile store in one SQLite file, shared by the worker processes of a host.

Why SQLite: feedback taken by one gunicorn worker must personalise the next request that another worker serves,
and every worker of a host can open the same file. WAL mode lets readers run while one writer appends, so a
``recommend`` never waits on a ``feedback`` of another worker; writers wait at most ``busy_timeout_s`` for each
other, then the store raises :class:`ProfileUnavailableError` (the recommender degrades, never fails).

Connections are per thread and per process: a connection is never used by two threads at once, and a forked
child never touches a connection it inherited (SQLite, "How To Corrupt An SQLite Database File", §2.6). The
child's inherited connections are abandoned, not closed: closing them would run SQLite's close path on state
the parent still owns. Only parameterised SQL is used; user and item ids are opaque strings.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "profiles.sqlite3")
    >>> store = SqliteProfileStore(path, max_events_per_user=3)
    >>> for n in range(5):
    ...     store.append("user-42", ProfileEvent(f"item-{n}", "click", float(n)))
    >>> [e.item for e in store.get("user-42")]
    ['item-2', 'item-3', 'item-4']
    >>> store.close()
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
from pathlib import Path

from ..errors import ProfileUnavailableError
from .base import ProfileEvent

__all__ = ["SqliteProfileStore"]

logger = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS profile_events ("
    " seq INTEGER PRIMARY KEY, user TEXT NOT NULL, item TEXT NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL,"
    " value REAL)",
    "CREATE INDEX IF NOT EXISTS profile_events_user ON profile_events (user, seq)",
)
_SELECT = "SELECT item, type, ts, value FROM profile_events WHERE user = ? ORDER BY seq DESC LIMIT ?"
_INSERT = "INSERT INTO profile_events (user, item, type, ts, value) VALUES (?, ?, ?, ?, ?)"
# Keep the newest N rows of the user: delete every row at or below the (N+1)-th newest seq.
_TRIM = (
    "DELETE FROM profile_events WHERE user = ? AND seq <= "
    "(SELECT seq FROM profile_events WHERE user = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)"
)
_FORGET = "DELETE FROM profile_events WHERE user = ?"
_PRUNE = "DELETE FROM profile_events WHERE ts < ?"


class SqliteProfileStore:
    """Per-user recent history in a SQLite file (WAL mode) that all workers of a host share.

    Args:
        path: the database file; its directory is created (mode ``0700``) and the file is made ``0600``.
        max_events_per_user: newest events kept per user; older ones are deleted on append.
        busy_timeout_s: seconds a write waits for another process's write lock before giving up.
        synchronous: SQLite ``synchronous`` (``NORMAL`` survives a process crash; ``FULL`` a power loss too).

    Raises:
        ValueError: a bad argument (``:memory:`` cannot be shared, so it is refused).
        ProfileUnavailableError: the file cannot be created or opened.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_events_per_user: int = 200, busy_timeout_s: float = 0.1,
        synchronous: str = "NORMAL",
    ) -> None:
        text = os.fspath(path)
        if not text or text == ":memory:" or text.startswith("file:"):
            raise ValueError("SqliteProfileStore needs a file path that every worker can open")
        if isinstance(max_events_per_user, bool) or max_events_per_user <= 0:
            raise ValueError("max_events_per_user must be a positive integer")
        if isinstance(busy_timeout_s, bool) or not isinstance(busy_timeout_s, (int, float)) \
                or not 0 <= busy_timeout_s < math.inf:
            raise ValueError("busy_timeout_s must be a number of seconds >= 0")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        self.path = Path(text)
        self._max_events = int(max_events_per_user)
        self._busy_timeout_ms = round(busy_timeout_s * 1000)  # SQLite counts milliseconds
        self._synchronous = synchronous
        self._lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._abandoned: list[sqlite3.Connection] = []  # inherited across fork: never used, never closed
        self._pid = os.getpid()
        self._closed = False
        self._create()

    # -- public ---------------------------------------------------------------------------------

    def get(self, user: str) -> list[ProfileEvent]:
        """The user's newest events, oldest first."""
        try:
            rows = self._conn().execute(_SELECT, (user, self._max_events)).fetchall()
        except sqlite3.Error as exc:
            raise ProfileUnavailableError(f"profile read failed: {type(exc).__name__}: {exc}") from exc
        return [ProfileEvent(str(item), str(type_), float(ts), None if value is None else float(value))
                for item, type_, ts, value in reversed(rows)]

    def append(self, user: str, event: ProfileEvent) -> None:
        """Add one event and trim the user to ``max_events_per_user``, in one transaction."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_INSERT, (user, event.item, event.type, float(event.ts), event.value))
                conn.execute(_TRIM, (user, user, self._max_events))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ProfileUnavailableError(f"profile write failed: {type(exc).__name__}: {exc}") from exc

    def forget(self, user: str) -> None:
        """Delete every stored event of the user (raises if the file cannot be written: erasure must not
        silently fail)."""
        try:
            self._conn().execute(_FORGET, (user,))
        except sqlite3.Error as exc:
            raise ProfileUnavailableError(f"profile erase failed: {type(exc).__name__}: {exc}") from exc

    def prune(self, *, before_ts: float) -> int:
        """Delete events older than ``before_ts`` (Unix seconds) for every user; return how many.

        The per-user cap bounds each user; this bounds the file when many users never come back. Run it from
        a periodic job (cron, Celery beat), not on the request path.
        """
        try:
            cur = self._conn().execute(_PRUNE, (float(before_ts),))
        except sqlite3.Error as exc:
            raise ProfileUnavailableError(f"profile prune failed: {type(exc).__name__}: {exc}") from exc
        return int(cur.rowcount)

    def __len__(self) -> int:
        """Users with at least one stored event."""
        try:
            row = self._conn().execute("SELECT COUNT(DISTINCT user) FROM profile_events").fetchone()
        except sqlite3.Error as exc:
            raise ProfileUnavailableError(f"profile read failed: {type(exc).__name__}") from exc
        return int(row[0])

    def close(self) -> None:
        """Close this process's connections; idempotent. The file and its data stay."""
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
            self._local = threading.local()
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing never matters for correctness
                logger.debug("closing a profile connection failed", exc_info=True)

    def postfork(self) -> None:
        """In a forked child: abandon the parent's connections (never use or close them), open fresh ones."""
        self._lock = threading.Lock()
        self._abandoned.extend(self._conns)
        self._conns = []
        self._local = threading.local()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<SqliteProfileStore path={str(self.path)!r} max_events_per_user={self._max_events}>"

    # -- internals ------------------------------------------------------------------------------

    def _create(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            conn = self._conn()
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                logger.warning("profile store: SQLite refused WAL mode (%s); writers will block readers", mode)
            for stmt in _SCHEMA:
                conn.execute(stmt)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(profile_events)")}
            if "value" not in columns:  # a file written before ratings kept their stars
                conn.execute("ALTER TABLE profile_events ADD COLUMN value REAL")
        except (OSError, sqlite3.Error) as exc:
            raise ProfileUnavailableError(f"cannot open profile store: {type(exc).__name__}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked without the postfork hook having run
            self.postfork()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise ProfileUnavailableError("profile store is closed")
        try:
            # isolation_level=None: autocommit; append() opens its own IMMEDIATE transaction.
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_ms / 1000.0, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms:d}")
            conn.execute(f"PRAGMA synchronous = {'FULL' if self._synchronous == 'FULL' else 'NORMAL'}")
        except sqlite3.Error as exc:
            raise ProfileUnavailableError(f"cannot open profile store: {type(exc).__name__}: {exc}") from exc
        with self._lock:
            self._conns.append(conn)
        self._local.conn = conn
        return conn
