"""The hub's file stores: the same contract in the database (SQLite and PostgreSQL) and on local disk, and a
bundle file streamed out of PostgreSQL in bounded memory."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import httpx
import pytest
from sync.helpers import ADMIN, EDGE, bundle, publish

from edgerec_sdk.hub import HubApp
from edgerec_sdk.hub.storage import DatabaseFileStore, FileStore, LocalFileStore, SQLStorage, open_storage


@pytest.fixture(params=["database", "local"])
def files(request: pytest.FixtureRequest, storage: SQLStorage, tmp_path: Path) -> FileStore:
    if request.param == "database":
        return DatabaseFileStore(storage, chunk_bytes=1000)  # small chunks: every read crosses boundaries
    return LocalFileStore(tmp_path / "root")


def staged(tmp_path: Path, contents: dict[str, bytes]) -> Path:
    d = tmp_path / f"staged-{len(os.listdir(tmp_path))}"
    d.mkdir()
    for name, data in contents.items():
        (d / name).write_bytes(data)
    return d


def read_all(files: FileStore, scope: str, name: str, start: int, length: int) -> bytes:
    pieces = list(files.read(scope, name, start, length))
    assert all(0 < len(p) <= 1024 * 1024 for p in pieces)
    return b"".join(pieces)


def test_put_size_and_ranges(files: FileStore, tmp_path: Path) -> None:
    data = os.urandom(4321)
    files.put("bundle/v1", staged(tmp_path, {"a.bin": data, "empty": b"", "m.json": b"{}"}))
    assert files.size("bundle/v1", "a.bin") == 4321 and files.size("bundle/v1", "empty") == 0
    assert files.size("bundle/v1", "nope") is None and files.size("bundle/v2", "a.bin") is None
    assert read_all(files, "bundle/v1", "a.bin", 0, 4321) == data
    for start, length in [(0, 1), (999, 2), (1000, 1000), (1500, 2821), (4320, 1), (7, 3000)]:
        assert read_all(files, "bundle/v1", "a.bin", start, length) == data[start:start + length]
    assert read_all(files, "bundle/v1", "empty", 0, 0) == b""


def test_put_replaces_a_scope_whole(files: FileStore, tmp_path: Path) -> None:
    files.put("delta/7", staged(tmp_path, {"a": b"old", "b": b"gone"}))
    files.put("delta/7", staged(tmp_path, {"a": b"new!"}))
    assert read_all(files, "delta/7", "a", 0, 4) == b"new!" and files.size("delta/7", "b") is None


def test_origins_and_edges_per_version(storage: SQLStorage) -> None:
    assert storage.get_origin("bundle/v1") is None
    storage.set_origin("bundle/v1", "https://cdn.example.com/models/v1")
    storage.set_origin("bundle/v1", "https://cdn.example.com/m/v1")
    assert storage.get_origin("bundle/v1") == "https://cdn.example.com/m/v1"
    storage.insert_events("edge-a", "b1", [{"event_id": "1", "user": "u", "item": "i", "type": "click",
                                            "model_version": "v1"}])
    storage.insert_events("edge-b", "b1", [{"event_id": "2", "user": "u", "item": "i", "type": "click",
                                            "model_version": "v1"},
                                           {"event_id": "3", "user": "u", "item": "i", "type": "click",
                                            "model_version": "v2"}])
    storage.insert_events("edge-c", "b1", [{"event_id": "4", "user": "u", "item": "i", "type": "click"}])
    assert storage.edges_per_version(since_ts=0) == {"v1": 1, "v2": 1}
    storage.insert_events("edge-a", "b2", [{"event_id": "5", "user": "u", "item": "i", "type": "click",
                                            "model_version": "v2"}])
    assert storage.edges_per_version(since_ts=0) == {"v2": 2}
    assert storage.edges_per_version(since_ts=4e9) == {}


def test_postgres_hub_streams_a_bundle_file_in_bounded_memory(pg_url: str, tmp_path: Path) -> None:
    """48 MB out of PostgreSQL through the WSGI app: Python never holds more than a few chunks of it."""
    storage = open_storage(pg_url)
    app = HubApp(tmp_path / "hub", admin_tokens=[ADMIN], edge_tokens=[EDGE], storage=storage)
    assert isinstance(app.files, DatabaseFileStore)
    publish(app, bundle(tmp_path, "v1"))
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "blob.bin", "wb") as f:
        for i in range(48):
            f.write(hashlib.sha256(str(i).encode()).digest() * 32768)  # 1 MiB each, cheap to check
    tracemalloc.start()
    try:
        app.files.put("bundle/v1", big)  # test-only: replace v1's files by one big file
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        app._files_cache["v1"] = frozenset({"blob.bin"})
        h, n = hashlib.sha256(), 0
        transport = httpx.WSGITransport(app=app)
        with httpx.Client(transport=transport, base_url="http://hub",
                          headers={"Authorization": f"Bearer {EDGE}"}) as c, \
                c.stream("GET", "/v1/bundles/v1/blob.bin") as r:
            assert r.status_code == 200 and r.headers["Content-Length"] == str(48 * 1024 * 1024)
            for chunk in r.iter_raw():
                h.update(chunk)
                n += len(chunk)
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 48 * 1024 * 1024 and h.hexdigest() == hashlib.sha256((big / "blob.bin").read_bytes()).hexdigest()
    assert put_peak < 8 * 1024 * 1024, put_peak
    assert get_peak < 8 * 1024 * 1024, get_peak
    app.close()
