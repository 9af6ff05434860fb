"""What both storage backends share: the schema (``_schema.py``), the records, and every query.

The SQL is written once, with ``?`` placeholders and the column types as ``{text}``/``{real}``/``{blob}``/
``{int}``; a backend supplies connections, its type names and its placeholder style. Only constructs that
SQLite (3.24 or newer) and PostgreSQL read alike are used: ``ON CONFLICT (...) DO NOTHING``/``DO UPDATE``,
``CASE`` inside ``SUM``, the reserved column name ``"user"`` quoted. Every value travels as a parameter
(fault E10: ids are opaque strings).
"""

from __future__ import annotations

import csv
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any, Protocol

import orjson

from ...errors import StorageBusyError
from ...sync import protocol
from ._schema import ADDED_COLUMNS as ADDED_COLUMNS
from ._schema import SCHEMA_TEMPLATE as SCHEMA_TEMPLATE
from ._schema import TABLES as TABLES
from ._schema import schema_statements as schema_statements


@dataclass(frozen=True, slots=True)
class BundleRecord:
    version: str
    manifest: bytes
    manifest_sha256: str
    signature: str | None
    total_bytes: int


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """One signed channel artifact (a catalogue delta, a rule set): ``seq`` orders them per channel and kind."""

    channel: str
    kind: str
    seq: int
    sha256: str
    signature: str | None
    size: int
    body: bytes | None = None  # None in listings


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    name: str
    version: str
    candidate: str | None
    rollout_percent: float


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """What the queries need of a connection: ``execute`` with ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...


_STR_FIELDS = ("event_id", "user", "item", "type", "rec_id", "model_version", "edge_id")


def _storable(ev: dict[str, Any]) -> str | None:
    """Why a valid wire event still cannot be stored the same way everywhere (PostgreSQL text holds no NUL)."""
    if any(isinstance(ev.get(k), str) and "\x00" in ev[k] for k in _STR_FIELDS):
        return "bad_chars"
    return None


INSERT_EVENT = (
    'INSERT INTO events(event_id, "user", item, type, ts, value, rec_id, model_version, edge_id, batch_id,'
    " received_at, position, items) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (event_id) DO NOTHING"
)


def event_params(ev: dict[str, Any], edge_id: str, batch_id: str, now: float) -> tuple[Any, ...]:
    """The values of ``INSERT_EVENT`` for one validated event."""
    value = ev.get("value")
    # an impression row keeps its shown items as JSON [[slot, item], ...]
    shown = ev.get("items")
    items = None if shown is None else orjson.dumps([list(p) for p in zip(ev["positions"], shown, strict=True)])
    return (ev["event_id"], ev["user"], ev["item"], ev["type"], float(ev.get("ts", now)),
            None if value is None else float(value), ev.get("rec_id"), ev.get("model_version"),
            ev.get("edge_id") or edge_id, batch_id, now, ev.get("position"),
            None if items is None else items.decode())


def _batch_version(events: list[Any], valid: dict[int, str]) -> str | None:
    """The model version named by the batch's last valid event (an edge's newest answer), if any."""
    for i in sorted(valid, reverse=True):
        version = events[i].get("model_version")
        if isinstance(version, str) and version:
            return version[:128]
    return None


class SQLStorage(ABC):
    """The hub's database: events (unique by ``event_id``), tombstones, the bundle registry, channels, edges.

    Subclasses provide ``_tx()`` (one all-or-nothing transaction), ``_read()`` (a connection for reads),
    ``_iter_rows()`` (a streamed query) and ``close()``; each translates its driver's "busy or unreachable"
    errors into :class:`StorageBusyError`.
    """

    #: ``"sqlite"`` or ``"postgresql"``.
    kind: str = ""

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Conn]: ...

    @abstractmethod
    def _read(self) -> AbstractContextManager[Conn]: ...

    @abstractmethod
    def _iter_rows(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> SQLStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- events ------------------------------------------------------------------------------------------

    def insert_events(self, edge_id: str, batch_id: str, events: Iterable[Any]) -> protocol.BatchResult:
        """Store a batch in one transaction: new ids accepted, known ids duplicates, invalid ones rejected.

        All or nothing: if the transaction fails, nothing of the batch is stored and the error propagates
        (the edge resends the whole batch; ids already stored then count as duplicates). Rows are written in
        ``event_id`` order between tombstones, so concurrent batches take their key locks in one order and
        cannot deadlock on each other in PostgreSQL; the answer keeps the batch's own order.
        """
        edge_id, batch_id = edge_id.replace("\x00", "\ufffd"), batch_id.replace("\x00", "\ufffd")
        stored: dict[int, bool] = {}
        ids: dict[int, str] = {}
        rejected: dict[str, str] = {}
        now = time.time()
        events_seen: list[Any] = []
        with self._tx() as conn:
            segment: list[tuple[int, dict[str, Any]]] = []
            for i, ev in enumerate(events):
                events_seen.append(ev)
                reason = protocol.validate_wire_event(ev) or _storable(ev)
                if reason is not None:
                    eid = ev.get("event_id") if isinstance(ev, dict) else None
                    rejected[eid if isinstance(eid, str) and eid else f"#{i}"] = reason
                    continue
                ids[i] = ev["event_id"]
                if ev["type"] == protocol.FORGET_TYPE:
                    stored.update(self._insert_segment(conn, segment, edge_id, batch_id, now))
                    segment = []
                    stored[i] = self._forget(conn, ev, now)
                else:
                    segment.append((i, ev))
            stored.update(self._insert_segment(conn, segment, edge_id, batch_id, now))
            conn.execute(
                "INSERT INTO edges(edge_id, last_seen, batches) VALUES(?,?,1) ON CONFLICT (edge_id)"
                " DO UPDATE SET last_seen = excluded.last_seen, batches = edges.batches + 1",
                (edge_id, now),
            )
            version = _batch_version(events_seen, ids)
            if version is not None:  # what the edge serves now: the metrics' "edges per version"
                conn.execute(
                    "INSERT INTO edge_versions(edge_id, model_version, last_seen) VALUES(?,?,?) ON CONFLICT"
                    " (edge_id) DO UPDATE SET model_version = excluded.model_version, last_seen = excluded.last_seen",
                    (edge_id, version, now),
                )
        order = sorted(ids)
        return protocol.BatchResult(tuple(ids[i] for i in order if stored[i]),
                                    tuple(ids[i] for i in order if not stored[i]), rejected)

    def _insert_segment(self, conn: Conn, segment: list[tuple[int, dict[str, Any]]], edge_id: str,
                        batch_id: str, now: float) -> dict[int, bool]:
        """Insert events (no tombstones among them) in ``event_id`` order; which were new, by batch index."""
        out: dict[int, bool] = {}
        for i, ev in sorted(segment, key=lambda p: p[1]["event_id"]):
            cur = conn.execute(INSERT_EVENT, event_params(ev, edge_id, batch_id, now))
            out[i] = bool(cur.rowcount)
        return out

    @staticmethod
    def _forget(conn: Conn, ev: dict[str, Any], now: float) -> bool:
        """Record the tombstone first (a replay, even a concurrent one, is a duplicate), then erase."""
        cur = conn.execute(
            'INSERT INTO tombstones(event_id, "user", ts, erased) VALUES(?,?,?,0) ON CONFLICT (event_id) DO NOTHING',
            (ev["event_id"], ev["user"], float(ev.get("ts", now))),
        )
        if not cur.rowcount:
            return False
        erased = conn.execute('DELETE FROM events WHERE "user" = ?', (ev["user"],)).rowcount
        conn.execute("UPDATE tombstones SET erased = ? WHERE event_id = ?", (erased, ev["event_id"]))
        return True

    def edge_ids(self) -> list[str]:
        """Distinct edges that produced the stored events."""
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT edge_id FROM events ORDER BY edge_id", ())]

    def count_events(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM events", ()).fetchone()[0])

    def event_ids(self) -> list[str]:
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY event_id", ())]

    def users(self) -> dict[str, int]:
        """Stored events per user pseudonym."""
        with self._read() as conn:
            return {u: int(n) for u, n in conn.execute('SELECT "user", COUNT(*) FROM events GROUP BY "user"', ())}

    def edges_per_version(self, *, since_ts: float) -> dict[str, int]:
        """Edges whose newest batch since ``since_ts`` named each model version."""
        with self._read() as conn:
            rows = conn.execute("SELECT model_version, COUNT(*) FROM edge_versions WHERE last_seen >= ?"
                                " GROUP BY model_version", (float(since_ts),))
            return {v: int(n) for v, n in rows}

    def tombstones(self) -> list[tuple[str, str, int]]:
        """``(event_id, user, erased)`` of every recorded erasure, by event id."""
        with self._read() as conn:
            rows = conn.execute('SELECT event_id, "user", erased FROM tombstones ORDER BY event_id', ())
            return [(e, u, int(n)) for e, u, n in rows]

    def export_events(self, out: IO[str], *, since_ts: float = 0.0) -> int:
        """Write the event log ``edgerec build`` reads as CSV, ``user,item,type,timestamp`` then ``value``,
        ``model_version``, ``rec_id`` and ``position``; an impression row becomes one line per item shown, with
        its slot. Returns the lines written."""
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["user", "item", "type", "timestamp", "value", "model_version", "rec_id", "position"])
        n = 0
        for user, item, typ, ts, value, version, rec_id, position, items in self._iter_rows(
            'SELECT "user", item, type, ts, value, model_version, rec_id, position, items FROM events'
            " WHERE ts >= ? ORDER BY ts, event_id", (float(since_ts),)
        ):
            stamp = int(ts) if float(ts).is_integer() else ts
            shown = orjson.loads(items) if items else [[position, item]]
            for slot, shown_item in shown:
                writer.writerow([user, shown_item, typ, stamp, "" if value is None else value, version or "",
                                 rec_id or "", "" if slot is None else slot])
                n += 1
        return n

    def arm_counts(self, versions: Sequence[str]) -> dict[str, tuple[int, int, int, int, int, int]]:
        """Per model version: ``(answers shown, users, answers clicked, answers purchased, clicks, purchases)``,
        clicks and purchases attributed through the ``rec_id`` of the impression rows."""
        out = {v: [0, 0, 0, 0, 0, 0] for v in versions}
        marks = ",".join("?" * len(versions))
        with self._read() as conn:
            for version, shown, users in conn.execute(
                f'SELECT model_version, COUNT(DISTINCT rec_id), COUNT(DISTINCT "user") FROM events'
                f" WHERE type = 'impression' AND model_version IN ({marks}) GROUP BY model_version", tuple(versions)
            ):
                out[version][0:2] = [int(shown), int(users)]
            for version, typ, answers, events in conn.execute(
                "SELECT i.model_version, e.type, COUNT(DISTINCT e.rec_id), COUNT(*) FROM events e JOIN"
                f" (SELECT DISTINCT rec_id, model_version FROM events WHERE type = 'impression'"
                f" AND model_version IN ({marks})) i ON e.rec_id = i.rec_id"
                " WHERE e.type IN ('click', 'purchase') GROUP BY i.model_version, e.type", tuple(versions)
            ):
                col = 2 if typ == "click" else 3
                out[version][col], out[version][col + 2] = int(answers), int(events)
        return {v: (c[0], c[1], c[2], c[3], c[4], c[5]) for v, c in out.items()}

    # --- bundles and channels ----------------------------------------------------------------------------

    def add_bundle(self, rec: BundleRecord) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO bundles(version, manifest, manifest_sha256, signature, total_bytes, created_at)"
                " VALUES(?,?,?,?,?,?)",
                (rec.version, rec.manifest, rec.manifest_sha256, rec.signature, rec.total_bytes, time.time()),
            )

    def get_bundle(self, version: str) -> BundleRecord | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT version, manifest, manifest_sha256, signature, total_bytes FROM bundles WHERE version = ?",
                (version,),
            ).fetchone()
        return BundleRecord(row[0], bytes(row[1]), row[2], row[3], int(row[4])) if row else None

    def list_bundles(self) -> list[str]:
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT version FROM bundles ORDER BY created_at, version", ())]

    def read_chunk(self, scope: str, name: str, seq: int) -> bytes | None:
        """One ``file_chunks`` row (``files.DatabaseFileStore`` streams a file one of these at a time)."""
        with self._read() as conn:
            row = conn.execute("SELECT data FROM file_chunks WHERE scope = ? AND name = ? AND seq = ?",
                               (scope, name, seq)).fetchone()
        return None if row is None else bytes(row[0])

    def set_origin(self, scope: str, base_url: str) -> None:
        """Name an external origin serving the scope's files (``None`` of them need be in the database)."""
        with self._tx() as conn:
            conn.execute("INSERT INTO origins(scope, base_url, created_at) VALUES(?,?,?) ON CONFLICT (scope)"
                         " DO UPDATE SET base_url = excluded.base_url", (scope, base_url, time.time()))

    def get_origin(self, scope: str) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT base_url FROM origins WHERE scope = ?", (scope,)).fetchone()
        return None if row is None else str(row[0])

    def set_channel(self, name: str, version: str, rollout_percent: float) -> ChannelRecord:
        """Point ``name`` at ``version``: at 100 % it becomes the base; below, the candidate of a rollout."""
        rollout_percent = float(rollout_percent)
        with self._tx() as conn:
            row = conn.execute("SELECT version FROM channels WHERE name = ?", (name,)).fetchone()
            now = time.time()
            if rollout_percent >= 100.0 or row is None:
                conn.execute(
                    "INSERT INTO channels(name, version, candidate, rollout_percent, updated_at) VALUES(?,?,NULL,0,?)"
                    " ON CONFLICT (name) DO UPDATE SET version = excluded.version, candidate = NULL,"
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
        with self._read() as conn:
            row = conn.execute(
                "SELECT name, version, candidate, rollout_percent FROM channels WHERE name = ?", (name,)
            ).fetchone()
        return ChannelRecord(row[0], row[1], row[2], float(row[3])) if row else None

    # --- channel artifacts -------------------------------------------------------------------------------

    def add_artifact(self, channel: str, kind: str, body: bytes, sha256: str, signature: str | None) -> ArtifactRecord:
        """Append an artifact to ``(channel, kind)`` with the next sequence number; return its record.

        Two concurrent appends may pick the same number; the loser's insert does nothing and it tries again.
        """
        for _ in range(20):
            with self._tx() as conn:
                row = conn.execute("SELECT MAX(seq) FROM artifacts WHERE channel = ? AND kind = ?",
                                   (channel, kind)).fetchone()
                seq = int(row[0] or 0) + 1
                cur = conn.execute(
                    "INSERT INTO artifacts(channel, kind, seq, body, sha256, signature, created_at)"
                    " VALUES(?,?,?,?,?,?,?) ON CONFLICT (channel, kind, seq) DO NOTHING",
                    (channel, kind, seq, body, sha256, signature, time.time()),
                )
                if cur.rowcount:
                    return ArtifactRecord(channel, kind, seq, sha256, signature, len(body))
        raise StorageBusyError(f"could not append to the {kind} artifacts of channel {channel!r}")

    def list_artifacts(self, channel: str, kind: str, *, after: int = 0, limit: int = 1000) -> list[ArtifactRecord]:
        """Artifacts of ``(channel, kind)`` with ``seq > after``, oldest first, without their bodies."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT seq, sha256, signature, LENGTH(body) FROM artifacts WHERE channel = ? AND kind = ?"
                " AND seq > ? ORDER BY seq LIMIT ?", (channel, kind, int(after), int(limit)),
            ).fetchall()
        return [ArtifactRecord(channel, kind, int(r[0]), r[1], r[2], int(r[3])) for r in rows]

    def get_artifact(self, channel: str, kind: str, seq: int) -> ArtifactRecord | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT seq, sha256, signature, body FROM artifacts WHERE channel = ? AND kind = ? AND seq = ?",
                (channel, kind, int(seq)),
            ).fetchone()
        if row is None:
            return None
        body = bytes(row[3])
        return ArtifactRecord(channel, kind, int(row[0]), row[1], row[2], len(body), body)

    def status(self) -> dict[str, Any]:
        with self._read() as conn:
            per_version = {
                (mv or "unknown"): {"events": int(n), "clicks": int(c or 0), "purchases": int(p or 0)}
                for mv, n, c, p in conn.execute(
                    "SELECT model_version, COUNT(*), SUM(CASE WHEN type = 'click' THEN 1 ELSE 0 END),"
                    " SUM(CASE WHEN type = 'purchase' THEN 1 ELSE 0 END) FROM events GROUP BY model_version",
                    (),
                )
            }
            channels = {
                name: {"version": v, "candidate": cand, "rollout_percent": float(pct)}
                for name, v, cand, pct in conn.execute(
                    "SELECT name, version, candidate, rollout_percent FROM channels ORDER BY name", ()
                )
            }
            events = int(conn.execute("SELECT COUNT(*) FROM events", ()).fetchone()[0])
            tombstones = int(conn.execute("SELECT COUNT(*) FROM tombstones", ()).fetchone()[0])
            edges = int(conn.execute("SELECT COUNT(*) FROM edges", ()).fetchone()[0])
        return {
            "backend": self.kind,
            "events": events,
            "tombstones": tombstones,
            "edges": edges,
            "bundles": self.list_bundles(),
            "channels": channels,
            "per_model_version": per_version,
        }
