"""The storage contract, run the same against SQLite and PostgreSQL (the ``storage`` fixture is
parametrised over both backends; PostgreSQL skips, saying why, where no server can be started)."""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path
from typing import Any

import pytest

from edgerec_sdk.hub.storage import TABLES, BundleRecord, SQLStorage

U1, U2 = "a" * 32, "b" * 32


def ev(eid: str, *, user: str = U1, item: str = "i1", type: str = "click", **extra: Any) -> dict[str, Any]:
    return {"event_id": eid, "user": user, "item": item, "type": type, **extra}


def columns(storage: SQLStorage, table: str) -> list[str]:
    with storage._read() as conn:
        if storage.kind == "sqlite":
            return [r[1] for r in conn.execute(f"PRAGMA table_info({table})", ())]
        return [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ? ORDER BY ordinal_position", (table,))]


def test_schema_is_the_same_in_every_backend(storage: SQLStorage) -> None:
    assert {t: columns(storage, t) for t in TABLES} == {
        "events": ["event_id", "user", "item", "type", "ts", "value", "rec_id", "model_version", "edge_id",
                   "batch_id", "received_at", "position", "items"],
        "tombstones": ["event_id", "user", "ts", "erased"],
        "bundles": ["version", "manifest", "manifest_sha256", "signature", "total_bytes", "created_at"],
        "channels": ["name", "version", "candidate", "rollout_percent", "updated_at"],
        "edges": ["edge_id", "last_seen", "batches"],
        "artifacts": ["channel", "kind", "seq", "body", "sha256", "signature", "created_at"],
        "edge_versions": ["edge_id", "model_version", "last_seen"],
        "files": ["scope", "name", "size", "chunk_bytes", "sha256", "created_at"],
        "file_chunks": ["scope", "name", "seq", "data"],
        "origins": ["scope", "base_url", "created_at"],
    }


def test_artifacts_are_numbered_per_channel_and_kind(storage: SQLStorage) -> None:
    a = storage.add_artifact("stable", "catalogue", b"one", "sha-1", "sig-1")
    b = storage.add_artifact("stable", "catalogue", b"two!", "sha-2", None)
    c = storage.add_artifact("canary", "catalogue", b"x", "sha-3", None)
    assert (a.seq, b.seq, c.seq) == (1, 2, 1)
    listed = storage.list_artifacts("stable", "catalogue", after=1)
    assert [(r.seq, r.sha256, r.signature, r.size, r.body) for r in listed] == [(2, "sha-2", None, 4, None)]
    got = storage.get_artifact("stable", "catalogue", 1)
    assert got is not None and got.body == b"one" and got.signature == "sig-1"
    assert storage.get_artifact("stable", "rules", 1) is None
    assert storage.list_artifacts("stable", "rules") == []


def test_events_dedupe_on_event_id(storage: SQLStorage) -> None:
    r = storage.insert_events("edge-1", "b1", [ev("a"), ev("b"), ev("a")])
    assert r.accepted == ("a", "b") and r.duplicates == ("a",) and r.rejected == {}
    r = storage.insert_events("edge-2", "b2", [ev("b"), ev("c")])
    assert r.accepted == ("c",) and r.duplicates == ("b",)
    assert storage.event_ids() == ["a", "b", "c"] and storage.count_events() == 3
    assert storage.edge_ids() == ["edge-1", "edge-2"]
    assert storage.status()["edges"] == 2


def test_batch_is_all_or_nothing(storage: SQLStorage) -> None:
    class Exploding(dict[str, Any]):
        """Valid on inspection; fails while its row is being written, after earlier rows were."""

        def __getitem__(self, key: str) -> Any:
            if key == "item":
                raise RuntimeError("writer died mid-batch")
            return super().__getitem__(key)

    with pytest.raises(RuntimeError, match="mid-batch"):
        storage.insert_events("e", "b1", [ev("a"), ev("b"), Exploding(ev("c"))])
    assert storage.count_events() == 0 and storage.status()["edges"] == 0
    assert storage.insert_events("e", "b1", [ev("a"), ev("b"), ev("c")]).accepted == ("a", "b", "c")


def test_invalid_events_rejected_per_event(storage: SQLStorage) -> None:
    r = storage.insert_events("e", "b", [ev("ok"), ev("bad", type="teleport"), ev("nul\x00id"), {"x": 1}, "str",
                                         ev("v", value=True), ev("n", item="a\x00b")])
    assert r.accepted == ("ok",)
    assert r.rejected == {"bad": "bad_type", "nul\x00id": "bad_chars", "#3": "unknown_field", "#4": "not_an_object",
                          "v": "bad_value", "n": "bad_chars"}
    assert storage.event_ids() == ["ok"]


def test_ids_are_opaque_and_values_exact(storage: SQLStorage) -> None:
    odd = ["'; DROP TABLE events; --", 'quo"te', "?", "%s", "%(x)s", "Ünïcødé ✓", "B", "a", "Z"]
    events = [ev(i, item=i, ts=1_700_000_000.123456 + n, value=0.1 * n, rec_id=i, model_version="v1")
              for n, i in enumerate(odd)]
    assert len(storage.insert_events("e\x00dge", "b\x00", events).accepted) == len(odd)
    assert storage.event_ids() == sorted(odd)  # byte order in both backends
    out = io.StringIO()
    assert storage.export_events(out) == len(odd)
    lines = out.getvalue().splitlines()
    assert next(csv.reader([lines[1]]))[3] == "1700000000.123456"
    assert storage.edge_ids() == ["e\ufffddge"]


def test_status_counts_per_model_version(storage: SQLStorage) -> None:
    storage.insert_events("e", "b", [
        ev("1", model_version="v1"), ev("2", type="purchase", model_version="v1"),
        ev("3", type="view", model_version="v1"), ev("4", model_version="v2"), ev("5", type="view"),
    ])
    s = storage.status()
    assert s["backend"] == storage.kind and s["events"] == 5
    assert s["per_model_version"] == {
        "v1": {"events": 3, "clicks": 1, "purchases": 1},
        "v2": {"events": 1, "clicks": 1, "purchases": 0},
        "unknown": {"events": 1, "clicks": 0, "purchases": 0},
    }


def test_bundle_registry(storage: SQLStorage) -> None:
    assert storage.get_bundle("v1") is None and storage.list_bundles() == []
    manifest = b'{"model_version": "v1"}\x00\xff\n'
    storage.add_bundle(BundleRecord("v1", manifest, "ab" * 32, None, 5 * 1024**3))  # over 32 bits
    storage.add_bundle(BundleRecord("v2", b"{}", "cd" * 32, "sig", 1))
    assert storage.get_bundle("v1") == BundleRecord("v1", manifest, "ab" * 32, None, 5 * 1024**3)
    assert storage.get_bundle("v2").signature == "sig"  # type: ignore[union-attr]
    assert storage.list_bundles() == ["v1", "v2"] == storage.status()["bundles"]
    with pytest.raises(Exception):  # noqa: B017 - versions are immutable; each driver names it its own way
        storage.add_bundle(BundleRecord("v1", b"{}", "ef" * 32, None, 1))
    assert storage.get_bundle("v1").manifest == manifest  # type: ignore[union-attr]


def test_channels_with_rollout(storage: SQLStorage) -> None:
    assert storage.get_channel("stable") is None
    rec = storage.set_channel("stable", "v2", 10.0)  # a new channel starts on its version, whatever the percent
    assert (rec.version, rec.candidate, rec.rollout_percent) == ("v2", None, 0.0)
    rec = storage.set_channel("stable", "v3", 12.5)
    assert (rec.version, rec.candidate, rec.rollout_percent) == ("v2", "v3", 12.5)
    assert storage.status()["channels"] == {"stable": {"version": "v2", "candidate": "v3", "rollout_percent": 12.5}}
    rec = storage.set_channel("stable", "v3", 0.0)  # abort
    assert (rec.version, rec.candidate, rec.rollout_percent) == ("v2", None, 0.0)
    storage.set_channel("stable", "v3", 50)
    rec = storage.set_channel("stable", "v3", 100.0)  # promote
    assert (rec.version, rec.candidate, rec.rollout_percent) == ("v3", None, 0.0)
    storage.set_channel("canary", "v4", 100.0)
    assert sorted(storage.status()["channels"]) == ["canary", "stable"]


def test_export_events(storage: SQLStorage) -> None:
    storage.insert_events("e", "b", [ev(f"e{i}", user="u", item=f"i{i}", ts=100 + i) for i in (2, 0, 1)]
                          + [ev("half", user="u", item="ih", ts=101.5)])
    out = io.StringIO()
    assert storage.export_events(out, since_ts=101) == 3
    assert out.getvalue() == ("user,item,type,timestamp,value,model_version,rec_id,position\n"
                              "u,i1,click,101,,,,\nu,ih,click,101.5,,,,\nu,i2,click,102,,,,\n")


def test_forget_erases_and_records_a_tombstone(storage: SQLStorage) -> None:
    storage.insert_events("e", "b1", [ev("a"), ev("b"), ev("c", user=U2)])
    r = storage.insert_events("e", "b2", [ev("t1", type="forget", item=None), ev("d")])
    assert r.accepted == ("t1", "d")  # after the tombstone in the same batch: stored again
    assert storage.users() == {U1: 1, U2: 1}
    assert storage.tombstones() == [("t1", U1, 2)]
    r = storage.insert_events("e", "b3", [ev("t1", type="forget")])  # a replayed tombstone erases nothing more
    assert r.duplicates == ("t1",) and storage.users() == {U1: 1, U2: 1}
    assert storage.status()["tombstones"] == 1


def test_concurrent_batches_store_each_event_once(storage: SQLStorage) -> None:
    ids = [f"ev-{i:04d}" for i in range(400)]
    results: list[Any] = []
    errors: list[BaseException] = []

    def send(worker: int) -> None:
        mine = ids[worker * 50: worker * 50 + 150]  # overlapping slices, in different orders
        try:
            for start in range(0, len(mine), 30):
                chunk = mine[start:start + 30]
                results.append(storage.insert_events(f"edge-{worker}", f"b{worker}-{start}",
                                                     [ev(i) for i in (chunk if worker % 2 else chunk[::-1])]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(len(r.accepted) for r in results) == storage.count_events() == len(set(ids[:400]))
    assert storage.event_ids() == ids


def test_a_database_from_before_impressions_gains_their_columns(tmp_path: Path) -> None:
    import sqlite3

    from edgerec_sdk.hub.storage import SQLiteStorage

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE events(event_id TEXT PRIMARY KEY, "user" TEXT NOT NULL, item TEXT NOT NULL,'
                     " type TEXT NOT NULL, ts REAL NOT NULL, value REAL, rec_id TEXT, model_version TEXT,"
                     " edge_id TEXT, batch_id TEXT, received_at REAL NOT NULL)")
        conn.execute("INSERT INTO events VALUES('old', 'u', 'i', 'click', 1, NULL, NULL, NULL, 'e', 'b', 1)")
    storage = SQLiteStorage(path)
    assert columns(storage, "events")[-2:] == ["position", "items"]
    storage.insert_events("e", "b2", [ev("new", type="impression", ts=1, rec_id="r", items=["i", "j"], positions=[0, 1])])
    out = io.StringIO()
    assert storage.export_events(out) == 3 and ",impression,1,,,r,1" in out.getvalue()
    storage.close()


def test_arm_counts_attribute_clicks_and_purchases_by_rec_id(storage: SQLStorage) -> None:
    def shown(eid: str, user: str, rec: str, version: str) -> dict[str, Any]:
        return ev(eid, user=user, item="a", type="impression", rec_id=rec, model_version=version,
                  items=["a", "b"], positions=[0, 1])

    storage.insert_events("e", "b", [
        shown("i1", U1, "r1", "v1"), shown("i2", U1, "r2", "v1"), shown("i3", U2, "r3", "v2"),
        ev("i1b", user=U1, item="a", type="impression", rec_id="r1", model_version="v1", items=["a"],
           positions=[0]),                                      # the same answer logged again: one answer
        ev("c1", rec_id="r1", position=0), ev("c2", rec_id="r1", position=1),    # two clicks, one answer
        ev("p1", type="purchase", rec_id="r1"), ev("c3", rec_id="r3", model_version="v2"),
        ev("c4", rec_id="elsewhere"), ev("c5"),                   # unattributed: counted nowhere
    ])
    assert storage.arm_counts(["v1", "v2", "v3"]) == {
        "v1": (2, 1, 1, 1, 2, 1), "v2": (1, 1, 1, 0, 1, 0), "v3": (0, 0, 0, 0, 0, 0)}
