"""Shared helpers of the benchmark scripts: results files, JSON lines, timing, machine state, test data.

Every script prints one JSON object per line on stdout (and nothing else there), so runs can be compared
with ``jq`` or pandas, and writes the same lines to its ONE current results file,
``benchmarks/results/<benchmark>.jsonl``, which each complete run replaces (the history is in git;
``benchmarks/report.py`` turns the current files into the tables and charts of docs/benchmarks.md). The
first line of a run (``bench: "machine"``) says where and when: CPU, load, versions, UTC date, commit and
the command-line arguments. Timings are wall-clock ``perf_counter`` per call, single-threaded unless a line
says otherwise.

A script plugs in with two calls::

    add_out_argument(parser, "kernels")   # --out, default benchmarks/results/kernels.jsonl ('-': stdout only)
    start(args.out)                       # opens the file, writes the machine line
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
_sink: list[TextIO] = []
_failed: list[bool] = []


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out FILE``: where this benchmark's current results go (default ``benchmarks/results/NAME.jsonl``)."""
    parser.add_argument("--out", default=str(RESULTS / f"{name}.jsonl"), metavar="FILE",
                        help=f"results file, replaced when the run completes (default: benchmarks/results/"
                             f"{name}.jsonl; '-' for stdout only, e.g. for a trial run)")


def start(out: str) -> None:
    """Begin a run: write its lines to ``out`` (through ``out.partial``, renamed over ``out`` only when the
    script ends without an exception, so an interrupted run leaves the current results alone) and emit the
    machine line."""
    if out != "-" and Path(out).exists() and not Path(out).is_file():
        # a device or a pipe (``--out /dev/null``): written straight through. Renaming a finished file over it
        # would replace the machine's /dev/null with a plain file (it did, once: PostgreSQL's initdb then failed)
        _sink.append(open(out, "w"))  # noqa: SIM115 (closed by finish below, at exit)
        atexit.register(lambda: _sink.pop().close())
    elif out != "-":
        final = Path(out)
        partial = final.with_name(final.name + ".partial")
        final.parent.mkdir(parents=True, exist_ok=True)
        _sink.append(partial.open("w"))
        previous_hook = sys.excepthook

        def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
            _failed.append(True)
            previous_hook(kind, exc, tb)

        def finish() -> None:
            _sink.pop().close()
            if _failed:
                print(f"run failed: partial results left in {partial}", file=sys.stderr)
            else:
                os.replace(partial, final)

        sys.excepthook = hook
        atexit.register(finish)
    emit(bench="machine", **machine_state(), **run_info())


def run_info() -> dict[str, Any]:
    """When and what ran: UTC time, the commit (``-dirty`` with uncommitted changes), script and arguments."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=RESULTS.parents[1], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or None
    if commit and git("status", "--porcelain", "--untracked-files=no", "--", "edgerec_sdk", "benchmarks"):
        commit += "-dirty"
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit, "script": Path(sys.argv[0]).name, "argv": [portable(a) for a in sys.argv[1:]]}


def portable(arg: str) -> str:
    """An argument as the results may record it: the data directory as ``$EDGEREC_DATA_DIR``, any other absolute
    path as its file name (results are committed; machine paths are not)."""
    data_dir = os.environ.get("EDGEREC_DATA_DIR") or str(RESULTS.parents[2] / "shared" / "data")
    for root in {data_dir, str(Path(data_dir).resolve())}:
        if arg.startswith(root.rstrip("/") + "/"):
            return "$EDGEREC_DATA_DIR/" + arg[len(root.rstrip("/")) + 1:]
    return Path(arg).name if os.path.isabs(arg) else arg


def emit(**fields: Any) -> None:
    """Print one JSON line (numpy scalars become plain numbers), also to the run's results file."""
    line = json.dumps(fields, default=_plain)
    print(line, flush=True)
    for sink in _sink:
        sink.write(line + "\n")
        sink.flush()


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)


def machine_state() -> dict[str, Any]:
    """What the numbers depend on: CPU, load, BLAS settings, and whether another job was running."""
    load1, load5, _ = os.getloadavg()
    state: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "load1": round(load1, 2),
        "load5": round(load5, 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                                "OMP_NUM_THREADS")},
    }
    try:
        import onnxruntime

        state["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - a runtime dependency
        pass
    try:
        from threadpoolctl import threadpool_info

        state["blas"] = [
            {k: p.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
            for p in threadpool_info()
        ]
    except ImportError:
        state["blas"] = "threadpoolctl not installed (pip install 'edgerec-sdk[bench]')"
    return state


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fp:
            for line in fp:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def one_thread() -> Any:
    """A context manager limiting BLAS/OpenMP pools to one thread (threadpoolctl, a bench-only extra)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("warning: threadpoolctl missing, BLAS may use several threads", file=sys.stderr)
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


def timings(fn: Callable[[], object], *, min_repeat: int = 5, max_repeat: int = 200,
            budget_s: float = 1.5) -> np.ndarray:
    """Per-call seconds of ``fn`` after one warm-up call: at least ``min_repeat`` calls, then until the
    time budget or ``max_repeat`` is reached."""
    fn()
    out: list[float] = []
    start = time.perf_counter()
    while len(out) < min_repeat or (len(out) < max_repeat and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return np.asarray(out)


def summary(ts: np.ndarray, *, per: int = 1) -> dict[str, float]:
    """Median, p99 and best in milliseconds, and queries per second for ``per`` queries a call."""
    med = float(np.median(ts))
    return {
        "median_ms": round(med * 1e3, 4),
        "p99_ms": round(float(np.quantile(ts, 0.99)) * 1e3, 4),
        "best_ms": round(float(ts.min()) * 1e3, 4),
        "qps": round(per / med, 1),
        "calls": int(ts.size),
    }


def read_bandwidth_gbps(mbytes: int = 512) -> dict[str, float]:
    """Single-thread read bandwidth: the best of a float32 gemv and a float32 sum over a buffer far larger
    than the caches (each reads every byte once)."""
    n = mbytes * 1024 * 1024 // 4
    a = np.ones(n, np.float32)
    m = a.reshape(-1, 64)
    v = np.ones(64, np.float32)
    best = {}
    nbytes = a.nbytes
    for name, fn in (("gemv", lambda: m @ v), ("sum", lambda: np.add.reduce(a))):
        ts = timings(fn, min_repeat=5, max_repeat=9, budget_s=2.0)
        best[name] = nbytes / float(ts.min()) / 1e9
    return {"read_bw_gbps": round(max(best.values()), 2), **{f"bw_{k}_gbps": round(x, 2) for k, x in best.items()}}


def clustered(n: int, d: int, *, queries: int, seed: int, spread: float = 0.7,
              block: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Items and queries around ``n / 1000`` shared Gaussian centres (the shape learned item embeddings and
    interest vectors have), float32, generated in blocks."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((max(16, n // 1000), d)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, d), np.float32)
        for lo in range(0, m, block):
            hi = min(lo + block, m)
            out[lo:hi] = c[rng.integers(0, c.shape[0], hi - lo)]
            out[lo:hi] += spread * rng.standard_normal((hi - lo, d), dtype=np.float32)
        return out

    return draw(n), draw(queries)


def gaussian(n: int, d: int, *, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """i.i.d. standard normal items and queries: no structure at all, the worst case for partitions."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d), dtype=np.float32), rng.standard_normal((queries, d), dtype=np.float32))


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    """Mean recall@k of ``got`` rows against ``truth`` rows (both ``(q, k)``)."""
    k = truth.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(got, truth, strict=True)]))
