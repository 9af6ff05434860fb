"""Stateless hub replicas: two hubs on one real PostgreSQL, each with its own root directory (nothing shared but
the database), behind which edges update and deliver feedback."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from acceptance.support import ADMIN, EDGE, bundle, connect, publish_http, sync_config, wait_for

from edgerec_sdk.hub import HubApp, serve_in_thread
from edgerec_sdk.hub.storage import BundleRecord, DatabaseFileStore, bundle_scope, open_storage
from edgerec_sdk.sync import EdgeSync, OutboxConfig


def replica(root: Path, pg_url: str) -> HubApp:
    return HubApp(root, admin_tokens=[ADMIN], edge_tokens=[EDGE], db=pg_url)


def test_publish_through_a_edge_on_b_swaps_within_two_polls(pg_url: str, tmp_path: Path) -> None:
    with serve_in_thread(replica(tmp_path / "root-a", pg_url)) as a, \
            serve_in_thread(replica(tmp_path / "root-b", pg_url)) as b:
        publish_http(a.url, bundle(tmp_path, "v1"))
        rec = connect(b.url, tmp_path / "edge", start=False)
        rec.poll_once()
        assert rec.status().model_version == "v1"
        publish_http(a.url, bundle(tmp_path, "v2", seed=1))
        polls = 0
        while rec.status().model_version != "v2" and polls < 2:
            rec.poll_once()
            polls += 1
        assert rec.status().model_version == "v2" and rec.status().sync["bundle_origin"] == "hub"
        assert not (tmp_path / "root-b" / "bundles" / "v2").exists()  # served out of PostgreSQL
        assert not any((tmp_path / "root-a" / "bundles").iterdir())
        rec.close(5.0)
        a.app.close()
        b.app.close()


@contextmanager
def hub_process(root: Path, pg_url: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``edgerec hub serve`` in a process of its own, so the test can stop and kill it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "edgerec_sdk.cli", "hub", "serve", "--root", str(root), "--db",
                             pg_url, "--port", str(port), "--admin-token", ADMIN, "--edge-token", EDGE],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return proc.poll() is not None
    try:
        assert wait_for(up, 60.0) and proc.poll() is None, "hub process did not start"
        yield proc, url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(10)


def test_replica_killed_mid_upload_loses_nothing_and_doubles_nothing(pg_url: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with hub_process(tmp_path / "root-a", pg_url) as (proc_a, url_a), \
            serve_in_thread(replica(tmp_path / "root-b", pg_url)) as b:
        publish_http(url_a, bundle(tmp_path, "v1"))
        cfg = sync_config(url_a, tmp_path / "edge", hub_urls=[b.url], read_timeout_s=3.0,
                          outbox=OutboxConfig(batch_size=50))
        sync = EdgeSync(cfg)
        monkeypatch.setattr(sync.uploader, "start", lambda: False)  # the test drives every upload step
        assert sync.poll_once() and sync.updater.current_version == "v1"
        ids = [f"ev-{i:04d}" for i in range(400)]
        for i, eid in enumerate(ids):
            sync.put({"user": f"user-{i % 7}", "item": "item-000001", "type": "click", "event_id": eid,
                      "model_version": "v1"})
        sync.upload_once()
        sync.upload_once()
        assert b.app.storage.count_events() == 100 and sync.client.base_url == url_a  # through A so far
        os.kill(proc_a.pid, signal.SIGSTOP)  # A hangs with the next batch in flight ...
        sync.upload_once()  # ... the read times out, and the same batch goes to B
        proc_a.kill()
        assert sync.client.base_url == b.url and sync.client.failovers == 1
        assert sync.flush(30.0)
        assert b.app.storage.event_ids() == ids  # every event, each once
        assert b.app.storage.status()["per_model_version"]["v1"]["events"] == 400
        assert sync.status()["outbox"]["pending"] == 0
        sync.close(5.0)
        # a fresh edge whose first replica is dead: one retry, no failed update
        fresh = EdgeSync(sync_config(url_a, tmp_path / "edge2", hub_urls=[b.url]))
        fresh.poll_once()
        assert fresh.updater.current_version == "v1" and fresh.updater.counts["poll_errors"] == 0
        assert fresh.client.failovers == 1
        fresh.close(5.0)
        b.app.close()


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.slow
def test_a_300_mb_bundle_file_streams_from_postgres_with_bounded_hub_rss(pg_url: str, tmp_path: Path) -> None:
    """The hub process's peak RSS (VmHWM, reset just before) grows by under 50 MB while it serves 300 MB."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset and read a process's peak RSS")
    storage = open_storage(pg_url)
    big = bundle(tmp_path, "big1", key=None)  # a real bundle, plus one 300 MB file its manifest lists
    h = hashlib.sha256()
    with open(big / "blob.bin", "wb") as f:
        for i in range(300):
            piece = hashlib.sha256(str(i).encode()).digest() * 32768  # 1 MiB
            f.write(piece)
            h.update(piece)
    size = 300 * 1024 * 1024
    doc = orjson.loads((big / "manifest.json").read_bytes())
    doc["files"]["blob.bin"] = {"sha256": h.hexdigest(), "size": size}
    manifest = orjson.dumps(doc)
    (big / "manifest.json").write_bytes(manifest)
    DatabaseFileStore(storage).put(bundle_scope("big1"), big)  # written from here: the hub only reads it
    storage.add_bundle(BundleRecord("big1", manifest, hashlib.sha256(manifest).hexdigest(), None, size))
    storage.close()
    with hub_process(tmp_path / "root", pg_url) as (proc, url):
        with httpx.Client(headers={"Authorization": f"Bearer {EDGE}"}, timeout=120.0) as c:
            assert c.get(f"{url}/v1/bundles/big1/blob.bin", headers={"Range": "bytes=0-0"}).status_code == 206
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # peak RSS := current RSS
            before = rss_kb(proc.pid, "VmHWM")
            got = hashlib.sha256()
            with c.stream("GET", f"{url}/v1/bundles/big1/blob.bin") as r:
                assert r.status_code == 200
                for chunk in r.iter_raw(1024 * 1024):
                    got.update(chunk)
        peak = rss_kb(proc.pid, "VmHWM")
    assert got.hexdigest() == h.hexdigest()
    assert (peak - before) < 50 * 1024, f"hub peak RSS grew by {(peak - before) / 1024:.1f} MB"
