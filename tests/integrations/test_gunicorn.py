"""Faults D03 and D21: real ``gunicorn --preload -w 3`` serving examples/flask_store and examples/django_store,
sync and gthread workers. Every worker serves, and a click taken by one worker changes what another serves next
(SQLite profile store shared by the host's workers). Under load, SIGTERM stops everything within 3 s with every
acknowledged click at the hub or in the outbox, and SIGHUP replaces the workers without a worker timeout."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT

pytest.importorskip("flask", reason="Flask is not installed (extra [flask])")
if shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is None and shutil.which("gunicorn") is None:
    pytest.skip("gunicorn is not installed", allow_module_level=True)


def _script(name: str) -> Any:
    """A benchmark script of benchmarks/ as a module (its helpers drive the servers here)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _bench() -> Any:
    return _script("bench_workers")


@pytest.mark.parametrize(("worker_class", "preload_recommender"), [("sync", False), ("gthread", True)])
def test_d03_gunicorn_preload_three_workers_share_profiles(
    tmp_path: Path, worker_class: str, preload_recommender: bool
) -> None:
    bench = _bench()
    server = bench.start_gunicorn(workers=3, profile_store=f"sqlite:///{tmp_path}/profiles.sqlite3",
                                  worker_class=worker_class, threads=2, preload_recommender=preload_recommender)
    try:
        served = bench.warm_all_workers(server, max_requests=300)
        assert set(served) == set(server.worker_pids)  # every worker answered
        cross = bench.cross_worker_click(server.port)
        assert cross["click_pid"] != cross["read_pid"]
        assert cross["before_sources"] == ["popular"] and cross["after_first_source"] == "personalized"
        assert cross["changed"] and cross["clicked_item_excluded"]
        result = bench.load(server.port, duration_s=1.0, clients=2, items=["B004756YJA", "B004ZT0SSG"])
        assert result["requests"] > 0 and result["http_5xx"] == 0 and not result["connection_errors"]
        mem = bench.memory_report(server)
        assert all(w["items_npy"]["Shared_Clean"] > 0 for w in mem["workers"])  # one page-cache copy
    finally:
        bench.stop(server)
    assert server.proc.returncode is not None


STOP_WITHIN_S = 3.0


def _shutdown() -> Any:
    _bench()  # bench_shutdown imports bench_workers
    return _script("bench_shutdown")


STORES = [("flask", "sync", False), ("flask", "gthread", True), ("django", "sync", False), ("django", "gthread", True)]


@pytest.mark.parametrize(("app", "worker_class", "preload"), STORES)
def test_d21_gunicorn_sigterm_under_load_stops_within_3s_and_loses_no_feedback(
    tmp_path: Path, app: str, worker_class: str, preload: bool
) -> None:
    shutdown = _shutdown()
    hub = shutdown.fake_hub(tmp_path)
    with hub.serve() as url:
        server = shutdown.start_store(tmp_path, url, app, worker_class, preload)
        stopped_in, result = shutdown.stop_under_load(server)  # raises past bench_workers' 5 s limit
        assert stopped_in <= STOP_WITHIN_S, (stopped_in, "".join(server.log[-20:]))
        clicks = result["status"].get("204", 0)
        assert clicks > 0 and result["http_5xx"] == 0, result
        log = "".join(server.log)
        assert "WORKER TIMEOUT" not in log and "SIGKILL" not in log
    o = shutdown.outbox_counts(tmp_path / "state")
    assert len(hub.events) + o["pending"] == clicks  # every acknowledged click shipped or durable: none lost
    assert o["pending"] == 0  # the workers' exit flush shipped them all (the hub was up)


@pytest.mark.parametrize(("app", "preload"), [("flask", True), ("django", False)])
def test_d21_gunicorn_sighup_replaces_workers_without_a_worker_timeout(tmp_path: Path, app: str, preload: bool) -> None:
    bench, shutdown = _bench(), _shutdown()
    hub = shutdown.fake_hub(tmp_path)
    with hub.serve() as url:
        server = shutdown.start_store(tmp_path, url, app, "sync", preload)
        try:
            old = list(server.worker_pids)
            t0 = time.monotonic()
            new = bench.reload(server, timeout_s=20.0)
            reloaded_in = time.monotonic() - t0
            assert not set(new) & set(old)
            assert bench.request(server.port, "GET", "/api/for-you/after-hup")[0] == 200
        finally:
            bench.stop(server)
    log = "".join(server.log)
    assert "WORKER TIMEOUT" not in log and "SIGKILL" not in log
    assert reloaded_in <= STOP_WITHIN_S + 5.0, reloaded_in  # old workers gone, new ones booted (a hang took 30 s)
