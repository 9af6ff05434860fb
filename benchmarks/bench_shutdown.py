"""Stopping and reloading ``gunicorn --preload -w 3`` of each example store while it takes clicks.

Per store (examples/flask_store, examples/django_store), worker class and preload mode (Flask ``PRELOAD``,
Django ``get_holder().preload()``), against an in-process fake hub on loopback (the host already has the hub's
bundle as its last good one): warm every worker, send 2 clients of load (half of it clicks) and after 1.5 s
SIGTERM the master. One line per run: ``stop_s`` (SIGTERM until master and workers have exited), the clicks
acknowledged with 204, the events at the hub and still pending in the outbox afterwards (``lost`` = acknowledged
- at hub - pending), then for a second server the seconds a SIGHUP takes to replace every worker. Before the
fault D21 fix every stop took the graceful timeout (30 s) and every reload hit "WORKER TIMEOUT".

Run (about three minutes)::

    python benchmarks/bench_shutdown.py --rounds 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_workers as workers
from _bench import add_out_argument, emit, start

from edgerec_sdk.sync import EdgeSync, SyncConfig
from edgerec_sdk.testing import FakeHub, make_tiny_bundle

TOKEN, USER_KEY, SIGNING = "tok-gunicorn-edge", "uidkey-gunicorn", "sign-gunicorn"
STORES = [("flask", "sync", False), ("flask", "gthread", True), ("django", "sync", False), ("django", "gthread", True)]
ITEMS = [f"item-{i:06d}" for i in range(1, 21)]


def fake_hub(root: Path) -> FakeHub:
    """A hub with one signed tiny bundle, ``v1``, on its stable channel."""
    hub = FakeHub(token=TOKEN, signing_key=SIGNING.encode())
    hub.publish(make_tiny_bundle(root / "v1", model_version="v1", signing_key=SIGNING.encode()))
    return hub


def edge(state: Path, url: str = "http://127.0.0.1:9") -> EdgeSync:
    return EdgeSync(SyncConfig(hub_url=url, token=TOKEN, user_id_key=USER_KEY, state_dir=str(state),
                               signing_key=SIGNING, smoke_in_subprocess=False))


def outbox_counts(state: Path) -> dict[str, int]:
    """The host's outbox counters, read after the server has gone (replaying what a killed worker left)."""
    sync = edge(state)
    try:
        return dict(sync.status()["outbox"])
    finally:
        sync.close(0)


def start_store(root: Path, url: str, app: str, worker_class: str, preload: bool) -> workers.Server:
    """gunicorn ``--preload -w 3`` of one store following the hub, its workers serving v1 from the start."""
    # The host already has v1 as its last good bundle (a restart, the steady state): every worker serves it at
    # once instead of each downloading and smoke-testing it first.
    seed = edge(root / "state", url)
    seed.poll_once()
    seed.close(0)
    env = {"STORE_HUB_URL": url, "STORE_HUB_TOKEN": TOKEN, "STORE_USER_ID_KEY": USER_KEY,
           "STORE_STATE_DIR": str(root / "state"), "STORE_SIGNING_KEY": SIGNING}
    server = workers.start_gunicorn(workers=3, profile_store=f"sqlite:///{root}/profiles.sqlite3", app=app,
                                    worker_class=worker_class, preload_recommender=preload, env=env,
                                    threads=2 if worker_class == "gthread" else 1)  # threads > 1 makes sync gthread
    try:
        workers.warm_all_workers(server, max_requests=300)
        workers.wait_ready(server)
    except BaseException:
        workers.stop(server, limit_s=30.0)
        raise
    return server


def stop_under_load(server: workers.Server) -> tuple[float, dict[str, Any]]:
    """SIGTERM 1.5 s into a load of clicks and pages; the stop's seconds and the load's result."""
    results: list[dict[str, Any]] = []
    loader = threading.Thread(target=lambda: results.append(
        workers.load(server.port, duration_s=4.0, clients=2, items=ITEMS, click_share=0.5)))
    loader.start()
    try:
        loader.join(1.5)
        stopped_in = workers.stop(server)  # raises past its 5 s limit
    finally:
        workers.stop(server)
        loader.join(60.0)
    return stopped_in, results[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    add_out_argument(parser, "shutdown")
    args = parser.parse_args(argv)
    start(args.out)
    for r in range(args.rounds):
        for app, worker_class, preload in STORES:
            with tempfile.TemporaryDirectory(prefix="edgerec-bench-shutdown-") as tmp:
                root = Path(tmp)
                hub = fake_hub(root)
                with hub.serve() as url:
                    stop_s, result = stop_under_load(start_store(root / "a", url, app, worker_class, preload))
                    clicks = result["status"].get("204", 0)
                    left = outbox_counts(root / "a" / "state")
                    server = start_store(root / "b", url, app, worker_class, preload)
                    t0 = time.monotonic()
                    try:
                        workers.reload(server, timeout_s=40.0)
                        reload_s = time.monotonic() - t0
                    finally:
                        workers.stop(server)
                    log = "".join(server.log)
                emit(bench="shutdown", round=r, app=app, worker_class=worker_class, preload=preload,
                     stop_s=round(stop_s, 2), clicks_acknowledged=clicks, at_hub=len(hub.events),
                     pending=left["pending"], lost=clicks - len(hub.events) - left["pending"],
                     requests=result["requests"], http_5xx=result["http_5xx"], reload_s=round(reload_s, 2),
                     worker_timeouts=log.count("WORKER TIMEOUT"), load1=round(os.getloadavg()[0], 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
