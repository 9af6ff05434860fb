"""Real processes: os.fork (D01) and SIGKILL with events in the outbox (D10)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from edgerec_sdk.hub import HubApp, serve_in_thread
from edgerec_sdk.sync import EdgeSync, SyncConfig
from edgerec_sdk.testing import fork_probe

from .fakes import FakeClock
from .helpers import EDGE, KEY, new_hub


def cfg(url: str, state: Path, **kw: object) -> SyncConfig:
    kw.setdefault("upload_interval_s", 0.02)
    return SyncConfig(hub_url=url, token=EDGE, user_id_key="uid", signing_key=KEY.decode(), state_dir=str(state),
                      smoke_in_subprocess=False, **kw)  # type: ignore[arg-type]


def test_d01_forked_child_rebuilds_and_delivers(tmp_path: Path) -> None:
    app = new_hub(tmp_path / "hub")
    with serve_in_thread(app) as hub:
        sync = EdgeSync(cfg(hub.url, tmp_path / "edge"))
        sync.put({"user": "parent", "item": "i0", "type": "view", "event_id": "parent-1"})
        assert sync.flush(10.0)
        assert sync.uploader.task.started
        parent_edge = sync.edge_id
        verdict = fork_probe(lambda: [
            sync.edge_id != parent_edge,
            sync.put({"user": "child", "item": "i1", "type": "view", "event_id": "child-1"}) == "appended",
            sync.flush(10.0),
            sum(t.name == "edgerec-uploader" for t in threading.enumerate()) == 1,
        ])
        assert verdict == "1111"
        sync.put({"user": "parent", "item": "i2", "type": "view", "event_id": "parent-2"})
        assert sync.flush(10.0)
        assert app.storage.event_ids() == ["child-1", "parent-1", "parent-2"]
        assert len(app.storage.edge_ids()) == 2  # both pids seen by the hub (either may have sent the batch: D17)
        assert sum(t.name == "edgerec-uploader" for t in threading.enumerate()) == 1
        sync.close(5.0)


_KILLED = """
import os, signal, sys
from edgerec_sdk.sync import EdgeSync, SyncConfig
sync = EdgeSync(SyncConfig(hub_url="http://127.0.0.1:9", token="t", user_id_key="uid", signing_key="s",
                           state_dir=sys.argv[1], connect_timeout_s=0.2, upload_interval_s=3600.0))
for i in range(int(sys.argv[2])):
    sync.put({"user": "u%d" % (i % 50), "item": "i%d" % i, "type": "view", "event_id": "e%d" % i})
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_d10_sigkill_with_events_in_outbox(tmp_path: Path) -> None:
    n = 10_000
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(tmp_path / "edge"), str(n)], timeout=120,
                          capture_output=True, check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    app = new_hub(tmp_path / "hub")
    clock = FakeClock(wall=time.time() + 120)  # any lease the dead process held has expired
    sync = EdgeSync(cfg("http://localhost", tmp_path / "edge"), transport=httpx.WSGITransport(app=app), clock=clock)
    assert sync.status()["outbox"]["pending"] == n
    assert sync.flush(timeout_s=60.0)
    assert app.storage.count_events() == n
    assert len(set(app.storage.event_ids())) == n
    sync.close(5.0)


class LoseFirstAck(httpx.BaseTransport):
    def __init__(self, app: HubApp) -> None:
        self.inner = httpx.WSGITransport(app=app)
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        resp = self.inner.handle_request(request)
        if self.calls == 1:
            raise httpx.ReadTimeout("the hub committed; the edge died before reading the answer")
        return resp


def test_d10_a15_killed_after_hub_commit_counted_once(tmp_path: Path) -> None:
    app = new_hub(tmp_path / "hub")
    clock = FakeClock()
    first = EdgeSync(cfg("http://localhost", tmp_path / "edge", upload_interval_s=3600.0), transport=LoseFirstAck(app),
                     clock=clock)
    for i in range(50):
        first.put({"user": "u", "item": f"i{i}", "type": "view", "event_id": f"e{i}"})
    first.upload_once()  # committed at the hub, ack lost; then the process "dies" (no close)
    assert app.storage.count_events() == 50
    clock.advance(120)  # its lease expires
    second = EdgeSync(cfg("http://localhost", tmp_path / "edge"), transport=httpx.WSGITransport(app=app), clock=clock)
    assert second.flush(10.0)
    assert app.storage.count_events() == 50
    o = second.status()["outbox"]
    assert o["pending"] == 0 and o["delivered"] == 50 and o["accepted"] == 50
    second.close(1.0)
    first.uploader.task.stop(1.0)
