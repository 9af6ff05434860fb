# Over 500 lines: one SQLite discipline (locks, fork guards, memory spill, counters) every method relies on.
"""The durable feedback outbox: SQLite in WAL mode, shared by a host's workers (design G3, docs/design.md).

Every event is durable before ``feedback()`` returns: appended to this process's write-ahead log next to the
SQLite file (one ``write(2)``, appendlog.py) and moved into SQLite in groups, off the request path; rows leave only after the hub acknowledged them
(delivered), refused them (dead letter), or ``forget(user)`` erased them. Counters live in the same SQLite
file and change in the same transaction as the rows, so at every moment::

    accepted == delivered + pending + dead_lettered + dropped_outbox_full + dropped_memory_full + dropped_forgotten
                + dropped_corrupt

(fault I5). When the file is unwritable (disk full, read-only, locked past ``busy_timeout_s``) events spill to
a bounded memory buffer that drains back to SQLite once it is writable (fault D13); a corrupt file is renamed
aside and a fresh one opened (fault D15). Rows hold pseudonymised, allow-listed events only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .._impl.log import warn_once
from .._impl.threads import Clock, SystemClock, register_fork_guard, register_postfork
from .appendlog import AppendLog, dead_logs, read_records
from .config import OutboxConfig
from .leases import _HOST, holder_is_dead

__all__ = ["LeasedEvent", "Outbox", "PutResult"]

logger = logging.getLogger(__name__)

PutResult = Literal["stored", "appended", "spilled", "duplicate", "dropped_outbox_full", "dropped_memory_full"]
_FORGOTTEN_KEPT_S = 30 * 86400.0
_LOG_MAX_BYTES = 1 << 20  # an append log this big is stored by the next append itself (back-pressure)

COUNTERS = (
    "accepted",
    "delivered",
    "dead_lettered",
    "dropped_outbox_full",
    "dropped_memory_full",
    "dropped_forgotten",
    "dropped_corrupt",
    "duplicates",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_key TEXT NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    lease_owner TEXT
);
CREATE INDEX IF NOT EXISTS outbox_user ON outbox(user_key);
CREATE TABLE IF NOT EXISTS dead_letter(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    user_key TEXT NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS forgotten(user_key TEXT PRIMARY KEY, at REAL NOT NULL);
"""
_BUMP = "INSERT INTO counters(name, value) VALUES(?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
_RETRY_DB_S = 1.0
# Connections inherited across fork: never used or closed in the child (SQLite "How To Corrupt" 2.6).
_abandoned: list[sqlite3.Connection] = []


@dataclass(frozen=True, slots=True)
class LeasedEvent:
    """One leased row: its id and its orjson-encoded wire event."""

    event_id: str
    body: bytes


class Outbox:
    """Durable, bounded, shared event outbox.

    Args:
        config: caps, batch size, SQLite settings.
        path: the SQLite file; ``None`` or ``":memory:"`` keeps events in memory only (not durable).
        clock: wall clock for leases (shared between processes, so not monotonic).

    Example:
        >>> box = Outbox(OutboxConfig(), path=None)
        >>> box.put("e1", "u1", b'{"event_id":"e1"}')
        'spilled'
    """

    def __init__(self, config: OutboxConfig, *, path: str | os.PathLike[str] | None, clock: Clock | None = None) -> None:
        self.config = config
        self.path = None if path is None or str(path) == ":memory:" else Path(path)
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        self._reset_local()
        self._last_counters: dict[str, int] = {}  # the host-wide counters last read (a corrupt file's fallback)
        self._db_failed_at: float | None = None
        self.durable = self.path is not None
        self._fork_held = False
        self._log = self._new_log()
        if self.path is not None:
            with self._lock:
                self._connect_locked()
        register_fork_guard(self._before_fork, self._after_fork_in_parent)
        register_postfork(self.postfork)

    def _before_fork(self) -> None:
        # no transaction may be open when the process forks (see _threads.register_fork_guard)
        self._fork_held = self._lock.acquire(timeout=2.0)

    def _after_fork_in_parent(self) -> None:
        if self._fork_held:
            self._fork_held = False
            self._lock.release()

    # --- local (process) state ---------------------------------------------------------------------------

    def _reset_local(self) -> None:
        # Events this process holds in memory (spill) and counters not yet written to SQLite.
        self._mem: dict[str, tuple[str, bytes]] = {}
        self._mem_leased: set[str] = set()
        self._local: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._reclaimed_at = float("-inf")
        self._backlog: list[tuple[Path, int]] = []  # append logs taken but not yet stored (SQLite failed)

    def _new_log(self) -> AppendLog | None:
        if self.path is None or not self.config.append_log:
            return None
        return AppendLog(self.path, fsync=self.config.synchronous == "FULL")

    # --- connection ------------------------------------------------------------------------------------

    def _connect_locked(self) -> sqlite3.Connection | None:
        if self._pid != os.getpid():
            self._postfork_locked()
        if self._conn is not None:
            return self._conn
        if self.path is None or self._closed:
            return None
        now = time.monotonic()
        if self._db_failed_at is not None and now - self._db_failed_at < _RETRY_DB_S:
            return None
        try:
            self._conn = self._open(self.path)
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                aside = self._move_aside(self.path)
                try:
                    self._conn = self._open(self.path)
                    self._carry_over(aside, self._conn)
                except sqlite3.Error:
                    self._conn = None
            if self._conn is None:
                self._db_failed_at = now
                self.durable = False
                warn_once(logger, f"outbox-open:{self.path}", "outbox %s unusable (%s); events kept in memory",
                          self.path, type(exc).__name__)
                return None
        except OSError as exc:
            self._db_failed_at = now
            self.durable = False
            warn_once(logger, f"outbox-open:{self.path}", "outbox %s unusable (%s); events kept in memory",
                      self.path, type(exc).__name__)
            return None
        self._db_failed_at = None
        self._replay_dead_locked(self._conn)
        return self._conn

    def _open(self, path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        new = not path.exists()
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=self.config.busy_timeout_s)
        try:
            conn.execute(f"PRAGMA busy_timeout={round(self.config.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.config.synchronous}")
            row = conn.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed (quick_check)")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        if new:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
        return conn

    def _move_aside(self, path: Path) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(path) + suffix)
            if src.exists():
                with contextlib.suppress(OSError):
                    os.replace(src, Path(str(aside) + suffix))
        return aside

    def _carry_over(self, aside: Path, conn: sqlite3.Connection) -> None:
        """Carry the corrupt file's counters into the fresh one and count its pending events as lost.

        The counters come from the corrupt file when its counters table still reads, else from the last
        host-wide read of this process; ``dropped_corrupt`` takes whatever they say was still pending, so the
        accounts balance (fault I5) and the loss is visible instead of ``accepted`` silently shrinking.
        """
        counters: dict[str, int] = {}
        try:
            src = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
            try:
                counters = {str(n): int(v) for n, v in src.execute("SELECT name, value FROM counters")}
            finally:
                src.close()
        except (sqlite3.Error, ValueError, TypeError):
            counters = {}
        if not counters and not self._last_counters:
            logger.error("outbox %s was corrupt; moved aside to %s; its counters are unreadable too, so how many "
                         "pending events were lost is unknown", self.path, aside.name)
            return
        counters = {k: v for k, v in (counters or self._last_counters).items() if k in COUNTERS}
        lost = max(0, counters.get("accepted", 0) - counters.get("delivered", 0) - counters.get("dead_lettered", 0)
                   - sum(v for k, v in counters.items() if k.startswith("dropped_")))
        with self._tx(conn):
            conn.executemany(_BUMP, [*counters.items(), ("dropped_corrupt", lost)])
        logger.error("outbox %s was corrupt; moved aside to %s: %d pending events lost (counted as "
                     "dropped_corrupt), counters carried over", self.path, aside.name, lost)

    def _db_failed(self, exc: BaseException) -> None:
        self._db_failed_at = time.monotonic()
        if self.durable:
            self.durable = False
            warn_once(logger, f"outbox-write:{self.path}",
                      "outbox not writable (%s); events spill to memory until it is", type(exc).__name__)
        if self._conn is not None and _is_corruption(exc):
            _abandoned.append(self._conn)
            self._conn = None

    def _tx(self, conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> _Tx:
        return _Tx(conn, begin)

    # --- writes ----------------------------------------------------------------------------------------

    def append(self, event_id: str, user_key: str, body: bytes) -> PutResult:
        """Store one encoded wire event before returning, on the request path's budget: appended to this
        process's write-ahead log (one ``write(2)``), moved into SQLite by the next :meth:`lease`, :meth:`forget`,
        :meth:`store_appended` or :meth:`close`. Falls back to :meth:`put` when there is no log (memory-only
        outbox, ``append_log=False``), it cannot be written, or events wait in the memory spill. Never raises for
        disk trouble."""
        log = self._log
        if log is not None and not self._mem:  # events spilled to memory: put() stores them first, in order
            if log.bytes >= _LOG_MAX_BYTES:
                self.store_appended()
            if log.append(event_id, user_key, body):
                return "appended"
        return self.put(event_id, user_key, body)

    def store_appended(self) -> int:
        """Move this process's appended events into SQLite in one transaction per log file; return how many."""
        with self._lock:
            return self._store_log_locked()

    def _store_log_locked(self) -> int:
        if self._log is None:
            return 0
        taken = self._log.take()
        if taken is not None:
            self._backlog.append(taken)
        if not self._backlog:
            return 0
        conn = self._connect_locked()
        if conn is None:
            return 0  # the files stay: durable, counted as pending, stored once SQLite is writable
        stored = 0
        while self._backlog:
            path, n = self._backlog[0]
            if not self._store_file_locked(conn, path):
                break
            self._backlog.pop(0)
            stored += n
        return stored

    def _store_file_locked(self, conn: sqlite3.Connection, path: Path) -> bool:
        """Insert one log file's records in one transaction, then delete it (a replay after a crash in between
        inserts nothing twice: event ids are unique)."""
        rows = read_records(path)
        try:
            with self._tx(conn):
                # A user forgotten after an event was appended (by any worker of the host, while this log waited)
                # never has it stored (fault F07): dropped and counted as forgotten.
                users = {r[2] for r in rows}
                erased = dict(conn.execute(
                    f"SELECT user_key, at FROM forgotten WHERE user_key IN ({','.join('?' * len(users))})",
                    list(users)).fetchall()) if users else {}
                keep = [r for r in rows if erased.get(r[2], -1.0) < r[0]]
                if len(keep) < len(rows):
                    conn.executemany(_BUMP, [("accepted", len(rows) - len(keep)),
                                             ("dropped_forgotten", len(rows) - len(keep))])
                results = [self._insert_db(conn, *row[1:]) for row in keep]
        except sqlite3.Error as exc:
            self._db_failed(exc)
            return False
        for result in results:
            self._after_put(result)
        with contextlib.suppress(OSError):
            path.unlink()
        return True

    def _replay_dead_locked(self, conn: sqlite3.Connection) -> None:
        """Store the append logs that processes of this host left when they died (fault D10)."""
        if self.path is None:
            return
        for path in dead_logs(self.path):
            # One replayer per file (rename is atomic), and the new name is a log of this live process: if it
            # dies mid-replay, the next outbox opened here replays the file again.
            claimed = self.path.with_name(f"{self.path.name}.append-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                os.replace(path, claimed)
            except OSError:
                continue
            if self._store_file_locked(conn, claimed):
                logger.info("stored the feedback a process left in %s before it died", path.name)

    def put(self, event_id: str, user_key: str, body: bytes) -> PutResult:
        """Store one encoded wire event before returning. Never raises for disk trouble.

        Args:
            event_id: the event's unique id (a second put of it is a no-op).
            user_key: the user's pseudonym, so ``forget`` can find the row.
            body: the orjson-encoded, allow-listed wire event.
        """
        return self.put_many([(event_id, user_key, body)])[0]

    def put_many(self, rows: Sequence[tuple[str, str, bytes]]) -> list[PutResult]:
        """Store ``(event_id, user_key, body)`` rows in one transaction (the same rules as :meth:`put`)."""
        with self._lock:
            conn = self._connect_locked()
            if conn is not None and self._mem:
                self._drain_locked(conn)
            if conn is not None and not self._mem:
                try:
                    with self._tx(conn):
                        results = [self._insert_db(conn, *row) for row in rows]
                    return [self._after_put(r) for r in results]
                except sqlite3.Error as exc:
                    self._db_failed(exc)
            return [self._put_mem(*row) for row in rows]

    def _insert_db(self, conn: sqlite3.Connection, event_id: str, user_key: str, body: bytes) -> PutResult:
        used = _counter(conn, "bytes")
        if used + len(body) > self.config.max_outbox_bytes:
            conn.executemany(_BUMP, [("accepted", 1), ("dropped_outbox_full", 1)])
            result: PutResult = "dropped_outbox_full"
        else:
            cur = conn.execute(
                "INSERT OR IGNORE INTO outbox(event_id, user_key, body, size, created_at) VALUES(?,?,?,?,?)",
                (event_id, user_key, body, len(body), self._clock.time()),
            )
            if cur.rowcount == 0:
                conn.execute(_BUMP, ("duplicates", 1))
                result = "duplicate"
            else:
                conn.executemany(_BUMP, [("accepted", 1), ("bytes", len(body))])
                result = "stored"
        return result

    def _after_put(self, result: PutResult) -> PutResult:
        if result == "dropped_outbox_full":
            warn_once(logger, "outbox-full", "outbox at max_outbox_bytes=%d; new events are dropped and counted",
                      self.config.max_outbox_bytes)
        elif result == "stored" and not self.durable:
            self.durable = True
            logger.info("outbox writable again")
        return result

    def _put_mem(self, event_id: str, user_key: str, body: bytes) -> PutResult:
        if event_id in self._mem:
            self._local["duplicates"] += 1
            return "duplicate"
        self._local["accepted"] += 1
        if len(self._mem) >= self.config.max_memory_events:
            self._local["dropped_memory_full"] += 1
            warn_once(logger, "outbox-memory-full", "outbox memory spill full (%d events); new events are dropped",
                      self.config.max_memory_events)
            return "dropped_memory_full"
        self._mem[event_id] = (user_key, body)
        return "spilled"

    def _drain_locked(self, conn: sqlite3.Connection) -> None:
        movable = [(k, v) for k, v in self._mem.items() if k not in self._mem_leased]
        if not movable:
            return
        try:
            with self._tx(conn):
                stored = 0
                for event_id, (user_key, body) in movable:
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO outbox(event_id, user_key, body, size, created_at) VALUES(?,?,?,?,?)",
                        (event_id, user_key, body, len(body), self._clock.time()),
                    )
                    if cur.rowcount:
                        stored += 1
                        conn.execute(_BUMP, ("bytes", len(body)))
                    else:
                        conn.execute(_BUMP, ("duplicates", 1))
                conn.execute(_BUMP, ("accepted", stored))
        except sqlite3.Error as exc:
            self._db_failed(exc)
            return
        for event_id, _ in movable:
            del self._mem[event_id]
        self._local["accepted"] -= len(movable)
        if not self.durable:
            self.durable = True
            logger.info("outbox writable again; %d spilled events stored", len(movable))

    # --- the uploader's side ---------------------------------------------------------------------------

    def lease(self, owner: str, limit: int | None = None) -> list[LeasedEvent]:
        """Take up to ``limit`` events for one upload; other workers skip them until the lease expires."""
        n = limit or self.config.batch_size
        with self._lock:
            self._store_log_locked()
            conn = self._connect_locked()
            if conn is not None and self._mem:
                self._drain_locked(conn)
            if conn is not None:
                now = self._clock.time()
                try:
                    with self._tx(conn):
                        rows = conn.execute(
                            "SELECT seq, event_id, body FROM outbox WHERE lease_until <= ? ORDER BY seq LIMIT ?",
                            (now, n),
                        ).fetchall()
                        if not rows and self._reclaim_dead(conn, now):
                            rows = conn.execute(
                                "SELECT seq, event_id, body FROM outbox WHERE lease_until <= ? ORDER BY seq LIMIT ?",
                                (now, n),
                            ).fetchall()
                        conn.executemany(
                            "UPDATE outbox SET lease_until = ?, lease_owner = ? WHERE seq = ?",
                            [(now + self.config.lease_s, owner, r[0]) for r in rows],
                        )
                    if rows:
                        return [LeasedEvent(r[1], bytes(r[2])) for r in rows]
                except sqlite3.Error as exc:
                    self._db_failed(exc)
            out: list[LeasedEvent] = []
            for event_id, (_, body) in self._mem.items():
                if len(out) >= n:
                    break
                if event_id not in self._mem_leased:
                    self._mem_leased.add(event_id)
                    out.append(LeasedEvent(event_id, body))
            return out

    def _reclaim_dead(self, conn: sqlite3.Connection, now: float) -> int:
        """Inside a transaction: free the leases of dead processes of this host (fault D10); return rows freed.

        Checked only when nothing else is leasable, at most once a second.
        """
        mono = time.monotonic()
        if mono - self._reclaimed_at < 1.0:
            return 0
        self._reclaimed_at = mono
        owners = [r[0] for r in conn.execute(
            "SELECT DISTINCT lease_owner FROM outbox WHERE lease_until > ? AND lease_owner IS NOT NULL", (now,))]
        freed = 0
        for owner in owners:
            if holder_is_dead(str(owner)):
                freed += conn.execute(
                    "UPDATE outbox SET lease_until = 0, lease_owner = NULL WHERE lease_owner = ?", (owner,)
                ).rowcount
        if freed:
            logger.info("took back %d outbox events leased by a process that died", freed)
        return freed

    def release(self, event_ids: Iterable[str]) -> None:
        """Give leased events back (the upload will not be retried by this holder)."""
        ids = list(event_ids)
        with self._lock:
            self._mem_leased.difference_update(ids)
            conn = self._connect_locked()
            if conn is None:
                return
            try:
                with self._tx(conn):
                    conn.executemany("UPDATE outbox SET lease_until = 0 WHERE event_id = ?", [(i,) for i in ids])
            except sqlite3.Error as exc:
                self._db_failed(exc)

    def renew(self, event_ids: Iterable[str]) -> None:
        """Extend the lease of events still being retried by this holder."""
        ids = list(event_ids)
        with self._lock:
            conn = self._connect_locked()
            if conn is None:
                return
            until = self._clock.time() + self.config.lease_s
            try:
                with self._tx(conn):
                    conn.executemany("UPDATE outbox SET lease_until = ? WHERE event_id = ?", [(until, i) for i in ids])
            except sqlite3.Error as exc:
                self._db_failed(exc)

    def ack(self, delivered: Iterable[str], rejected: Mapping[str, str] | None = None) -> bool:
        """Delete delivered events and move rejected ones to the dead-letter table; return success.

        On a SQLite failure nothing changes and the events are simply sent again later (the hub dedupes).
        """
        done = list(delivered)
        bad = dict(rejected or {})
        with self._lock:
            mem_done = [i for i in done if i in self._mem]
            mem_bad = {i: r for i, r in bad.items() if i in self._mem}
            db_done = [i for i in done if i not in self._mem]
            db_bad = {i: r for i, r in bad.items() if i not in self._mem}
            if db_done or db_bad:
                conn = self._connect_locked()
                if conn is None:
                    return False
                try:
                    self._ack_db(conn, db_done, db_bad)
                except sqlite3.Error as exc:
                    self._db_failed(exc)
                    return False
            for i in mem_done:
                self._mem.pop(i, None)
                self._mem_leased.discard(i)
            self._local["delivered"] += len(mem_done)
            for i in mem_bad:
                self._mem.pop(i, None)
                self._mem_leased.discard(i)
            self._local["dead_lettered"] += len(mem_bad)
            return True

    def _ack_db(self, conn: sqlite3.Connection, done: list[str], bad: Mapping[str, str]) -> None:
        now = self._clock.time()
        with self._tx(conn):
            n_done = freed = 0
            for i in done:
                row = conn.execute("DELETE FROM outbox WHERE event_id = ? RETURNING size", (i,)).fetchone()
                if row is not None:
                    n_done += 1
                    freed += row[0]
            n_bad = 0
            for i, reason in bad.items():
                row = conn.execute(
                    "DELETE FROM outbox WHERE event_id = ? RETURNING size, body, user_key", (i,)
                ).fetchone()
                if row is not None:
                    n_bad += 1
                    freed += row[0]
                    conn.execute(
                        "INSERT INTO dead_letter(event_id, user_key, body, reason, created_at) VALUES(?,?,?,?,?)",
                        (i, row[2], row[1], reason[:200], now),
                    )
            if n_bad:
                conn.execute(
                    "DELETE FROM dead_letter WHERE seq <= (SELECT MAX(seq) FROM dead_letter) - ?",
                    (self.config.max_dead_letter,),
                )
            conn.executemany(_BUMP, [("delivered", n_done), ("dead_lettered", n_bad), ("bytes", -freed)])

    # --- privacy -----------------------------------------------------------------------------------------

    def forget(self, user_key: str) -> int:
        """Erase every pending event of one pseudonymised user at once; return how many."""
        with self._lock:
            self._store_log_locked()  # the user's appended events are erased with the rest
            gone = [i for i, (u, _) in self._mem.items() if u == user_key]
            for i in gone:
                del self._mem[i]
                self._mem_leased.discard(i)
            self._local["dropped_forgotten"] += len(gone)
            n = len(gone)
            conn = self._connect_locked()
            if conn is not None:
                try:
                    with self._tx(conn):
                        rows = conn.execute(
                            "DELETE FROM outbox WHERE user_key = ? RETURNING size", (user_key,)
                        ).fetchall()
                        conn.executemany(
                            _BUMP, [("dropped_forgotten", len(rows)), ("bytes", -sum(r[0] for r in rows))]
                        )
                        conn.execute("DELETE FROM dead_letter WHERE user_key = ?", (user_key,))
                        # What any worker of the host appended before now is erased when stored (fault F07);
                        # a month later no log of before can be waiting.
                        now = time.time()
                        conn.execute("INSERT INTO forgotten(user_key, at) VALUES(?, ?) "
                                     "ON CONFLICT(user_key) DO UPDATE SET at = excluded.at", (user_key, now))
                        conn.execute("DELETE FROM forgotten WHERE at < ?", (now - _FORGOTTEN_KEPT_S,))
                    n += len(rows)
                except sqlite3.Error as exc:
                    self._db_failed(exc)
            return n

    # --- inspection --------------------------------------------------------------------------------------

    def pending(self) -> int:
        """Events not yet delivered, dead-lettered or dropped (SQLite rows plus the memory spill)."""
        return self.counters()["pending"]

    def counters(self) -> dict[str, int]:
        """Host-wide counters (from SQLite) plus this process's memory spill; they balance (fault I5)."""
        with self._lock:
            out = dict(self._local)
            out["pending"] = len(self._mem)
            out["bytes"] = 0
            conn = self._connect_locked()
            if conn is not None:
                try:
                    with self._tx(conn, "BEGIN"):
                        for name, value in conn.execute("SELECT name, value FROM counters"):
                            out[name] = out.get(name, 0) + int(value)
                        out["pending"] += conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                        out["dead_letter_rows"] = conn.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
                    self._last_counters = {k: out[k] - self._local.get(k, 0) for k in COUNTERS if k in out}
                except sqlite3.Error as exc:
                    self._db_failed(exc)
            appended = (self._log.count if self._log else 0) + sum(n for _, n in self._backlog)
            out["accepted"] += appended  # in the append log: accepted and pending (fault I5)
            out["pending"] += appended
            out["appended"] = appended
            out["memory_spill"] = len(self._mem)
            out["durable"] = int(self.durable)
            return out

    def dead_letters(self, limit: int = 100) -> list[tuple[str, str]]:
        """The newest dead-lettered ``(event_id, reason)`` pairs."""
        with self._lock:
            conn = self._connect_locked()
            if conn is None:
                return []
            rows = conn.execute(
                "SELECT event_id, reason FROM dead_letter ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
            return [(str(a), str(b)) for a, b in rows]

    # --- lifecycle ---------------------------------------------------------------------------------------

    def postfork(self) -> None:
        """In a forked child: new lock, the parent's connection abandoned (never closed), memory state dropped.

        Spilled events belong to the parent, which still holds and sends them. Runs once per process (a second
        call would replace a lock another thread of the child may already hold).
        """
        if self._pid == os.getpid():
            return
        self._lock = threading.Lock()
        self._fork_held = False
        self._postfork_locked()

    def _postfork_locked(self) -> None:
        if self._conn is not None:
            _abandoned.append(self._conn)
        self._conn = None
        self._pid = os.getpid()
        self._reset_local()
        if self._log is not None:  # the parent's log and its records stay the parent's
            self._log.abandon()
            self._log = self._new_log()

    def close(self) -> None:
        """Store the appended events, close the SQLite connection; rows stay for the next process. Idempotent."""
        with self._lock:
            if not self._closed and self._pid == os.getpid():
                self._store_log_locked()
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    __slots__ = ("_begin", "_conn")

    def __init__(self, conn: sqlite3.Connection, begin: str) -> None:
        self._conn = conn
        self._begin = begin

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute(self._begin)
        return self._conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")


def _counter(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def _is_corruption(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return False
    msg = str(exc).lower()
    return "malformed" in msg or "not a database" in msg or "corrupt" in msg
