"""Lifecycle at the Recommender level: ``flush``/``close`` bounded with the hub down or a black hole
(fault D07, D09, A03), ``forget`` at once (F07), exit without ``close`` (D08), and a real ``os.fork`` (D01)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sync.helpers import publish

from edgerec_sdk.testing import fork_probe

from .support import bundle, connect, new_hub, publish_http, running_hub, wait_for, wsgi


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A loopback port that accepts TCP connections (into the backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("where", ["down", "black_hole"])
def test_d07_flush_and_close_bounded_when_hub_unreachable(tmp_path: Path, black_hole: str, where: str) -> None:
    url = black_hole if where == "black_hole" else _closed_port()
    rec = connect(url, tmp_path / "edge", poll_interval_s=0.05, read_timeout_s=5.0)
    for i in range(10):
        assert rec.feedback({"user": f"u{i}", "item": "item-000001", "type": "view"})
    t0 = time.monotonic()
    assert rec.flush(timeout_s=0.5) is False
    assert time.monotonic() - t0 < 1.5
    t0 = time.monotonic()
    rec.close(timeout_s=1.0)
    assert time.monotonic() - t0 < 2.5
    t0 = time.monotonic()
    rec.close(timeout_s=1.0)  # D09: a no-op
    assert time.monotonic() - t0 < 0.1
    assert rec.recommend("u1", k=3).degraded_reason == "closed"
    assert rec.feedback({"user": "u1", "item": "item-000001", "type": "view"}) is False
    again = connect(url, tmp_path / "edge", start=False)  # the rows wait for the next process
    assert again.status().sync["outbox"]["pending"] == 10
    again.close(0.1)


def test_d06_close_with_hub_up_delivers_everything(tmp_path: Path) -> None:
    app = new_hub(tmp_path / "hub")
    with running_hub(tmp_path / "hub") as hub:
        app = hub.app
        rec = connect(hub.url, tmp_path / "edge", upload_interval_s=3600.0)
        for i in range(1200):
            rec.feedback({"user": f"u{i % 13}", "item": "item-000001", "type": "view"})
        rec.close(timeout_s=10.0)
        assert app.storage.count_events() == 1200


def test_f07_forget_erases_local_state_at_once(tmp_path: Path) -> None:
    app = new_hub(tmp_path / "hub")
    publish(app, bundle(tmp_path, "v1"))
    rec = connect("http://127.0.0.1:1", tmp_path / "edge", transport=wsgi(app), start=False,
                  upload_interval_s=3600.0)
    try:
        rec.poll_once()
        cold = rec.recommend("nobody", k=5)
        for item in ("item-000003", "item-000007", "item-000011"):
            rec.feedback({"user": "regular", "item": item, "type": "purchase"})
        warm = rec.recommend("regular", k=5)
        assert warm.items[0].source == "personalized" and warm.item_ids != cold.item_ids
        pending = rec.status().sync["outbox"]["pending"]
        rec.forget("regular")
        after = rec.recommend("regular", k=5)
        assert after.item_ids == cold.item_ids and after.items[0].source == "popular"
        o = rec.status().sync["outbox"]
        assert o["dropped_forgotten"] == pending and o["pending"] == 1  # only the tombstone waits
        assert rec.flush(5.0)
        assert app.storage.status()["tombstones"] == 1 and app.storage.count_events() == 0
    finally:
        rec.close(1.0)


_EXIT = """
import sys, time
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from acceptance.support import connect
rec = connect(sys.argv[1], Path(sys.argv[2]), connect_timeout_s=5.0)
for i in range(100):
    rec.feedback({"user": "u%d" % i, "item": "item-000001", "type": "view"})
print(time.monotonic(), flush=True)
"""


def test_d08_exit_without_close_is_bounded_and_keeps_rows(tmp_path: Path, black_hole: str) -> None:
    tests_dir = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", _EXIT, black_hole, str(tmp_path / "edge"), tests_dir],
                          capture_output=True, text=True, timeout=60, check=False)
    ended = time.monotonic()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ended - float(proc.stdout.split()[0]) < 6.0  # exit_flush_timeout_s (2 s) plus interpreter exit
    again = connect(black_hole, tmp_path / "edge", start=False)
    assert again.status().sync["outbox"]["pending"] == 100
    again.close(0.1)


def _threads(name: str) -> int:
    return sum(t.name == name for t in threading.enumerate())


def test_d01_fork_child_recommends_and_delivers(tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub") as hub:
        publish_http(hub.url, bundle(tmp_path, "v1"))
        rec = connect(hub.url, tmp_path / "edge", poll_interval_s=30.0)
        assert wait_for(lambda: rec.status().model_version == "v1", 15.0)
        rec.feedback({"user": "parent", "item": "item-000001", "type": "view", "event_id": "parent-1"})
        assert rec.flush(10.0)
        before = (_threads("edgerec-updater"), _threads("edgerec-uploader"))
        assert before == (1, 1)
        def in_child() -> list[object]:
            ans = rec.recommend("child", k=3, history=["item-000002"])
            return [
                ans.model_version == "v1" and not ans.degraded and len(ans) == 3,
                rec.feedback({"user": "child", "item": "item-000002", "type": "click", "event_id": "child-1"}),
                rec.flush(10.0),
                _threads("edgerec-uploader") == 1,
                _threads("edgerec-updater") == 1,
            ]

        assert fork_probe(in_child) == "11111"
        assert (_threads("edgerec-updater"), _threads("edgerec-uploader")) == before  # nothing duplicated
        rec.feedback({"user": "parent", "item": "item-000003", "type": "view", "event_id": "parent-2"})
        assert rec.flush(10.0)
        assert hub.app.storage.event_ids() == ["child-1", "parent-1", "parent-2"]
        assert not rec.recommend("parent", k=3).degraded
        rec.close(2.0)
