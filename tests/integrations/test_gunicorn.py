"""Faults D03 (the part this SDK owns without a hub): real ``gunicorn --preload -w 3`` serving
examples/flask_store, sync and gthread workers. Every worker serves, and a click taken by one worker changes
what another serves next (SQLite profile store shared by the host's workers)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import ROOT

pytest.importorskip("flask", reason="Flask is not installed (extra [flask])")
if shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is None and shutil.which("gunicorn") is None:
    pytest.skip("gunicorn is not installed", allow_module_level=True)


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_workers", ROOT / "benchmarks" / "bench_workers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_workers"] = module
    spec.loader.exec_module(module)
    return module


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
