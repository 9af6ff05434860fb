"""End-to-end ``recommend()`` latency, single-threaded, with filters and exclusions on (JSON lines).

Cases:

* the demo bundle (``Recommender.demo()``, ~12k Beauty items), histories from the demo users;
* a 1M x 64 int8 bundle with *clustered* item vectors (1000 Gaussian clusters, rows grouped by cluster,
  written with ``write_bundle`` and the ``make_interest_model`` test model, as ``make_bundle`` does) and
  coherent histories (items of one cluster, like a shopping session): served with the approximate index
  (``auto`` picks IVF) and, for comparison, with the exact onnxruntime kernel. Written once into
  ``--bundle-dir`` and reused (a few minutes: k-means and nprobe tuning);
* ``--gaussian-dir``: a bundle from ``edgerec_sdk.testing.make_bundle`` itself (i.i.d. Gaussian vectors, no
  cluster structure), when given: ``write_bundle`` keeps no IVF index there (it would have to probe a large
  part of the catalog), so it is served exactly.

Every request computes (the result cache is off), the profile is bypassed with ``history=``, and each
request has a filter (``in_stock``) and an ``exclude`` list. Timings are per call, after warm-up.

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 python benchmarks/bench_recommend.py
    python benchmarks/bench_recommend.py --skip-1m          # demo bundle only (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import add_out_argument, emit, one_thread, start, summary

from edgerec_sdk import Recommender
from edgerec_sdk.bundle import load_bundle
from edgerec_sdk.config import IndexConfig, RecommenderConfig


def _time_requests(rec: Recommender, requests: list[dict[str, object]], rounds: int) -> np.ndarray:
    for r in requests[:20]:
        rec.recommend(**r)  # type: ignore[arg-type]
    ts = []
    for _ in range(rounds):
        for r in requests:
            t0 = time.perf_counter()
            rec.recommend(**r)  # type: ignore[arg-type]
            ts.append(time.perf_counter() - t0)
    return np.asarray(ts)


def demo_requests(n: int, seed: int) -> list[dict[str, object]]:
    from importlib.resources import files

    users = json.loads(files("edgerec_sdk").joinpath("_demo_histories.json").read_text())
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        hist = list(users[i % len(users)]["history"])
        cut = int(rng.integers(1, len(hist) + 1))  # varied history lengths, so model inputs differ
        other = users[(i + 1) % len(users)]["history"][:3]
        # The demo catalog has titles only: no filter column exists, so only exclusions are on here.
        out.append({"user": f"bench-{i}", "k": 10, "history": hist[:cut], "exclude": other})
    return out


CLUSTER_ROWS = 1000


def write_clustered_bundle(path: Path, n_items: int, dim: int = 64) -> None:
    """``n_items`` rows in clusters of :data:`CLUSTER_ROWS` consecutive rows, and a mean-pooling model."""
    from edgerec_sdk.bundle import quantize_rows_int8, write_bundle
    from edgerec_sdk.testing import make_interest_model

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((-(-n_items // CLUSTER_ROWS), dim)).astype(np.float32)
    x = np.repeat(centres, CLUSTER_ROWS, axis=0)[:n_items]
    x += 0.7 * rng.standard_normal((n_items, dim), dtype=np.float32)
    q, sc = quantize_rows_int8(x)
    stored = q.astype(np.float32) * sc[:, None]  # the model pools what the index serves
    write_bundle(
        path,
        model_bytes=make_interest_model(stored, max_seq_len=50),
        vectors=x,
        catalog_ids=[f"item-{i:06d}" for i in range(1, n_items + 1)],
        catalog_columns={"in_stock": (rng.random(n_items) >= 0.1).tolist()},
        popular=rng.permutation(n_items),
        max_seq_len=50,
    )


def synthetic_requests(n_items: int, n: int, seed: int, *, coherent: bool) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = int(rng.integers(3, 30))
        if coherent:  # a session inside one cluster of consecutive rows
            lo = int(rng.integers(0, n_items // CLUSTER_ROWS)) * CLUSTER_ROWS
            rows = lo + rng.integers(0, min(CLUSTER_ROWS, n_items - lo), size)
        else:
            rows = rng.integers(0, n_items, size)
        hist = [f"item-{r + 1:06d}" for r in rows]
        excl = [f"item-{r:06d}" for r in rng.integers(1, n_items + 1, 5)]
        out.append({"user": f"bench-{i}", "k": 10, "history": hist, "exclude": excl,
                    "filters": {"in_stock": True}})
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n-items", type=int, default=1_000_000)
    p.add_argument("--bundle-dir", default="/tmp/edgerec-bench/clustered-1m")
    p.add_argument("--gaussian-dir", default=None, help="a make_bundle bundle to serve as well")
    p.add_argument("--skip-1m", action="store_true")
    add_out_argument(p, "recommend")
    args = p.parse_args(argv)
    start(args.out)
    base = RecommenderConfig(cache_size=0, strict=True)

    with one_thread():
        rec = Recommender.demo(config=base)
        n_items = rec._state.bundle.manifest.n_items if rec._state else 0
        ts = _time_requests(rec, demo_requests(args.requests, 0), args.rounds)
        emit(bench="recommend", bundle="demo", n_items=n_items, index=type(rec._state.index).__name__,
             filters=False, exclusions=True, **summary(ts), target_p50_ms=1.0, target_p99_ms=3.0)
        rec.close()

    if args.skip_1m:
        return
    path = Path(args.bundle_dir)
    if not (path / "manifest.json").exists():
        t0 = time.perf_counter()
        write_clustered_bundle(path, args.n_items)
        emit(bench="bundle_write", n_items=args.n_items, seconds=round(time.perf_counter() - t0, 1),
             path=str(path))
    cases = [("clustered", path, True)]
    if args.gaussian_dir:
        gpath = Path(args.gaussian_dir)
        if not (gpath / "manifest.json").exists():
            from edgerec_sdk.testing import make_bundle

            make_bundle(gpath, n_items=args.n_items, dim=64)
        cases.append(("make_bundle-gaussian", gpath, False))
    for name, bpath, coherent in cases:
        bundle = load_bundle(bpath)
        info = bundle.manifest.index
        requests = synthetic_requests(bundle.manifest.n_items, args.requests, 1, coherent=coherent)
        with one_thread():
            for label, cfg in (
                ("auto", base),
                ("exact-onnx", RecommenderConfig(cache_size=0, strict=True, index=IndexConfig(backend="onnx"))),
            ):
                rec = Recommender(bundle, cfg)
                ts = _time_requests(rec, requests, args.rounds)
                emit(bench="recommend", bundle=name, n_items=bundle.manifest.n_items, config=label,
                     index=type(rec._state.index).__name__,
                     nprobe=None if info is None else info.nprobe, filters=True, exclusions=True,
                     **summary(ts), target_p99_ms=5.0 if label == "auto" else None)
                rec.close()
        if name == "clustered":
            _overlap(bundle, requests[:100])


def _overlap(bundle: object, requests: list[dict[str, object]]) -> None:
    """How many of the exact kernel's items the approximate index returns, through recommend()."""
    approx = Recommender(bundle, RecommenderConfig(cache_size=0, strict=True))  # type: ignore[arg-type]
    exact = Recommender(bundle, RecommenderConfig(cache_size=0, strict=True,  # type: ignore[arg-type]
                                                  index=IndexConfig(backend="numpy")))
    hits = []
    for r in requests:
        a = {x.item_id for x in approx.recommend(**r).items}  # type: ignore[arg-type]
        e = [x.item_id for x in exact.recommend(**r).items]  # type: ignore[arg-type]
        hits.append(len(a & set(e)) / max(len(e), 1))
    emit(bench="recommend_recall", bundle="clustered", requests=len(requests),
         recall_at_10_vs_exact=round(float(np.mean(hits)), 4))
    approx.close()
    exact.close()


if __name__ == "__main__":
    main()
