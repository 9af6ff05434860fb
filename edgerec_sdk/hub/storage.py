"""Hub storage in SQLite: events (unique by ``event_id``), tombstones, the bundle registry, channels.

One connection per thread (the WSGI server is threaded; gunicorn workers share the file through WAL).
Every statement is parameterised: ids are opaque strings (FAULTS E10).
"""

from __future__ import annotations

import csv
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..sync import protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events(
    event_id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL,
    rec_id TEXT,
    model_version TEXT,
    edge_id TEXT,
    batch_id TEXT,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events(user);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS tombstones(
    event_id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    ts REAL NOT NULL,
    erased INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bundles(
    version TEXT PRIMARY KEY,
    manifest BLOB NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    signature TEXT,
    total_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS channels(
    name TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    candidate TEXT,
    rollout_percent REAL NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS edges(
    edge_id TEXT PRIMARY KEY,
    last_seen REAL NOT NULL,
    batches INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class BundleRecord:
    version: str
    manifest: bytes
    manifest_sha256: str
    signature: str | None
    total_bytes: int


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    name: str
    version: str
    candidate: str | None
    rollout_percent: float


class Storage:
    """The hub's SQLite database (``<root>/hub.sqlite3`` by default)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # --- events ------------------------------------------------------------------------------------------

    def insert_events(self, edge_id: str, batch_id: str, events: Iterable[Any]) -> protocol.BatchResult:
        """Store a batch in one transaction: new ids accepted, known ids duplicates, invalid ones rejected."""
        accepted: list[str] = []
        duplicates: list[str] = []
        rejected: dict[str, str] = {}
        now = time.time()
        with self._tx() as conn:
            for i, ev in enumerate(events):
                reason = protocol.validate_wire_event(ev)
                if reason is not None:
                    eid = ev.get("event_id") if isinstance(ev, dict) else None
                    rejected[eid if isinstance(eid, str) and eid else f"#{i}"] = reason
                    continue
                eid = ev["event_id"]
                if ev["type"] == protocol.FORGET_TYPE:
                    if self._forget(conn, ev, now):
                        accepted.append(eid)
                    else:
                        duplicates.append(eid)
                    continue
                cur = conn.execute(
                    "INSERT OR IGNORE INTO events(event_id, user, item, type, ts, value, rec_id, model_version,"
                    " edge_id, batch_id, received_at) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                    (eid, ev["user"], ev["item"], ev["type"], float(ev.get("ts", now)), ev.get("value"),
                     ev.get("rec_id"), ev.get("model_version"), ev.get("edge_id") or edge_id, batch_id, now),
                )
                (accepted if cur.rowcount else duplicates).append(eid)
            conn.execute(
                "INSERT INTO edges(edge_id, last_seen, batches) VALUES(?,?,1) "
                "ON CONFLICT(edge_id) DO UPDATE SET last_seen = excluded.last_seen, batches = batches + 1",
                (edge_id, now),
            )
        return protocol.BatchResult(tuple(accepted), tuple(duplicates), rejected)

    def _forget(self, conn: sqlite3.Connection, ev: dict[str, Any], now: float) -> bool:
        if conn.execute("SELECT 1 FROM tombstones WHERE event_id = ?", (ev["event_id"],)).fetchone():
            return False
        erased = conn.execute("DELETE FROM events WHERE user = ?", (ev["user"],)).rowcount
        conn.execute(
            "INSERT INTO tombstones(event_id, user, ts, erased) VALUES(?,?,?,?)",
            (ev["event_id"], ev["user"], float(ev.get("ts", now)), erased),
        )
        return True

    def edge_ids(self) -> list[str]:
        """Distinct edges that produced the stored events."""
        return [r[0] for r in self._conn().execute("SELECT DISTINCT edge_id FROM events ORDER BY edge_id")]

    def count_events(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def event_ids(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT event_id FROM events ORDER BY event_id")]

    def export_events(self, out: IO[str], *, since_ts: float = 0.0) -> int:
        """Write ``user,item,type,timestamp`` CSV (the event log ``edgerec build`` reads); return rows."""
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["user", "item", "type", "timestamp"])
        n = 0
        for user, item, typ, ts in self._conn().execute(
            "SELECT user, item, type, ts FROM events WHERE ts >= ? ORDER BY ts, event_id", (since_ts,)
        ):
            writer.writerow([user, item, typ, int(ts) if float(ts).is_integer() else ts])
            n += 1
        return n

    # --- bundles and channels ----------------------------------------------------------------------------

    def add_bundle(self, rec: BundleRecord) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO bundles(version, manifest, manifest_sha256, signature, total_bytes, created_at)"
                " VALUES(?,?,?,?,?,?)",
                (rec.version, rec.manifest, rec.manifest_sha256, rec.signature, rec.total_bytes, time.time()),
            )

    def get_bundle(self, version: str) -> BundleRecord | None:
        row = self._conn().execute(
            "SELECT version, manifest, manifest_sha256, signature, total_bytes FROM bundles WHERE version = ?",
            (version,),
        ).fetchone()
        return BundleRecord(row[0], bytes(row[1]), row[2], row[3], row[4]) if row else None

    def list_bundles(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT version FROM bundles ORDER BY created_at")]

    def set_channel(self, name: str, version: str, rollout_percent: float) -> ChannelRecord:
        """Point ``name`` at ``version``: at 100 % it becomes the base; below, the candidate of a rollout."""
        with self._tx() as conn:
            row = conn.execute("SELECT version FROM channels WHERE name = ?", (name,)).fetchone()
            now = time.time()
            if rollout_percent >= 100.0 or row is None:
                conn.execute(
                    "INSERT INTO channels(name, version, candidate, rollout_percent, updated_at) VALUES(?,?,NULL,0,?)"
                    " ON CONFLICT(name) DO UPDATE SET version = excluded.version, candidate = NULL,"
                    " rollout_percent = 0, updated_at = excluded.updated_at",
                    (name, version, now),
                )
            elif row[0] == version or rollout_percent <= 0.0:
                conn.execute(
                    "UPDATE channels SET candidate = NULL, rollout_percent = 0, updated_at = ? WHERE name = ?",
                    (now, name),
                )
            else:
                conn.execute(
                    "UPDATE channels SET candidate = ?, rollout_percent = ?, updated_at = ? WHERE name = ?",
                    (version, rollout_percent, now, name),
                )
        rec = self.get_channel(name)
        if rec is None:
            raise RuntimeError(f"channel {name!r} vanished")
        return rec

    def get_channel(self, name: str) -> ChannelRecord | None:
        row = self._conn().execute(
            "SELECT name, version, candidate, rollout_percent FROM channels WHERE name = ?", (name,)
        ).fetchone()
        return ChannelRecord(row[0], row[1], row[2], float(row[3])) if row else None

    def status(self) -> dict[str, Any]:
        conn = self._conn()
        per_version = {
            (mv or "unknown"): {"events": n, "clicks": int(c or 0), "purchases": int(p or 0)}
            for mv, n, c, p in conn.execute(
                "SELECT model_version, COUNT(*), SUM(type = 'click'), SUM(type = 'purchase')"
                " FROM events GROUP BY model_version"
            )
        }
        channels = {
            name: {"version": v, "candidate": cand, "rollout_percent": float(pct)}
            for name, v, cand, pct in conn.execute("SELECT name, version, candidate, rollout_percent FROM channels")
        }
        return {
            "events": self.count_events(),
            "tombstones": int(conn.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0]),
            "edges": int(conn.execute("SELECT COUNT(*) FROM edges").fetchone()[0]),
            "bundles": self.list_bundles(),
            "channels": channels,
            "per_model_version": per_version,
        }
