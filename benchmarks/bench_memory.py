"""Memory of a served 1M-item bundle, and what each forked worker adds (JSON lines).

For each index choice (``auto`` = IVF when the bundle has one, ``exact-onnx``), a fresh interpreter loads
the bundle and serves a few requests; it reports RSS split into file-backed (page cache, shared through
the memory maps) and anonymous (private) memory. It then forks ``--workers`` children, each serving
requests, and reports every child's RSS, PSS and private memory (``/proc/PID/smaps_rollup``): the private
part is the real per-worker cost, the memory-mapped vectors are shared. Stages: before importing the SDK,
after ``load_bundle`` (manifest, catalog, model bytes; vectors and IVF files only mapped), after building
the ``Recommender`` and serving 50 requests, and in each worker after 200 requests.

Usage::

    python benchmarks/bench_memory.py   # the 1M bundle bench_recommend.py writes; results: memory.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import add_out_argument, emit, start

_CHILD = r"""
import json, os, sys
import numpy as np
from edgerec_sdk import Recommender
from edgerec_sdk.bundle import load_bundle
from edgerec_sdk.config import IndexConfig, RecommenderConfig

def mem(pid="self"):
    out = {}
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) // 1024
    with open(f"/proc/{pid}/smaps_rollup") as fp:
        for line in fp:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Private_Clean", "Private_Dirty", "Shared_Clean"):
                out[key] = int(rest.split()[0]) // 1024
    return {k + "_mib": v for k, v in out.items()}

path, backend, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = mem()
bundle = load_bundle(path)
print(json.dumps({"stage": "bundle_loaded", "model_bytes_mib": len(bundle.model_bytes) // 2**20, **mem()}), flush=True)
cfg = RecommenderConfig(cache_size=0, index=IndexConfig(backend=backend))
rec = Recommender(bundle, cfg)
n = bundle.manifest.n_items
rng = np.random.default_rng(0)
def serve(count):
    for _ in range(count):
        hist = [f"item-{r:06d}" for r in rng.integers(1, n + 1, 10)]
        rec.recommend("u", k=10, history=hist, filters={"in_stock": True})
serve(50)
print(json.dumps({"stage": "loaded", "index": type(rec._state.index).__name__, "before_import": base, **mem()}), flush=True)
pipes = []
for w in range(workers):
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        rec.postfork()
        serve(200)
        os.write(wfd, json.dumps({"stage": "worker", "worker": w, **mem()}).encode())
        os.close(wfd)
        os._exit(0)
    os.close(wfd)
    pipes.append((pid, r))
for pid, r in pipes:
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    print(data.decode(), flush=True)
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle-dir", default="/tmp/edgerec-bench/clustered-1m")
    p.add_argument("--workers", type=int, default=3)
    add_out_argument(p, "memory")
    args = p.parse_args(argv)
    path = Path(args.bundle_dir)
    if not (path / "manifest.json").exists():
        sys.exit(f"no bundle at {path}: run benchmarks/bench_recommend.py first (it writes one)")
    start(args.out)
    sizes = {f.name: f.stat().st_size // (1024 * 1024) for f in path.iterdir() if f.is_file()}
    emit(bench="bundle_files_mib", **sizes)
    for backend in ("auto", "onnx"):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), backend, str(args.workers)],
            capture_output=True, text=True, check=True, timeout=900,
        )
        for line in out.stdout.splitlines():
            emit(bench="memory", config="auto" if backend == "auto" else "exact-onnx", **json.loads(line))


if __name__ == "__main__":
    main()
