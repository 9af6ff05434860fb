"""Top-K kernels against faiss, usearch and hnswlib, all in one process on the same vectors (JSON lines).

Exact grid: every SDK exact backend (numpy, onnx int8; onnx CUDA when present) and faiss ``IndexFlatIP``
(float32, the dequantized vectors), faiss 8-bit scalar quantizer, usearch exact search and hnswlib's
brute-force index, for each size x
dim x batch x K: median, p99, queries per second, bytes scanned per second, and the read-bandwidth floor
(index bytes / read bandwidth measured in this run).

Approximate (top-10, single query): the SDK IVF (nprobe sweep) against hnswlib and usearch HNSW (ef sweep)
and faiss IVF-Flat: recall@10 against the exact answer on the same vectors, latency, and for each method
the cheapest setting reaching ``--target-recall`` (default: the bundle writer's tuning target). Then a
head-to-head: the SDK IVF at its tuned nprobe, one list fewer and one more, each against hnswlib at the
smallest ef reaching the same recall, all in alternating blocks of every query (``kernel_head_to_head``:
medians, p99 and their ratios), the figure the acceptance compares.

Two benchmarks, each with its own current results file (docs/benchmarks.md)::

    python benchmarks/bench_kernels.py                  # the exact grid against faiss, ~25 min: kernels.jsonl
    python benchmarks/bench_kernels.py --acceptance     # 1M x 64: exact and approximate, ~9 min: acceptance.jsonl
    python benchmarks/bench_kernels.py --sizes 100000 --batches 1 --ks 10 --ann-sizes 100000 --out -   # quick trial

Needs ``pip install -e ".[bench]"`` for the peers; a missing peer is skipped with a JSON note.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import (
    RESULTS,
    add_out_argument,
    clustered,
    emit,
    gaussian,
    one_thread,
    read_bandwidth_gbps,
    recall,
    start,
    summary,
    timings,
)

from edgerec_sdk.bundle import quantize_rows_int8
from edgerec_sdk.index import (
    DEFAULT_TARGET_RECALL,
    IvfIndex,
    NumpyExactIndex,
    OnnxTopKIndex,
    build_ivf,
    cuda_usable,
    make_index,
)

Search = Callable[[np.ndarray, int], np.ndarray]  # (queries, k) -> rows


def _peer(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        emit(bench="kernel", note=f"{name} not installed: pip install -e '.[bench]'")
        return None


def exact_backends(v8: np.ndarray, s8: np.ndarray, vf: np.ndarray, peers: set[str]) -> dict[str, Search]:
    """Name -> search function, each over the same vectors (SDK: int8 + scales; faiss flat: float32)."""
    out: dict[str, Search] = {}
    npx = NumpyExactIndex(v8, s8)
    out["sdk-numpy-int8"] = lambda q, k: npx.search(q, k).rows
    onx = OnnxTopKIndex(v8, s8, providers=["CPUExecutionProvider"])
    out["sdk-onnx-int8"] = lambda q, k: onx.search(q, k).rows
    if cuda_usable():  # the item matrix resident on the GPU, bound to each call
        gpu = make_index(v8, s8, device="cuda")
        out["sdk-onnx-cuda"] = lambda q, k: gpu.search(q, k).rows
    d = vf.shape[1]
    faiss = _peer("faiss") if peers & {"faiss"} else None
    if faiss is not None:
        faiss.omp_set_num_threads(1)
        flat = faiss.IndexFlatIP(d)
        flat.add(vf)
        out["faiss-flat-ip-f32"] = lambda q, k: flat.search(q, k)[1]
        sq = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        sq.train(vf[: min(len(vf), 100_000)])
        sq.add(vf)
        out["faiss-sq8-ip"] = lambda q, k: sq.search(q, k)[1]
    usearch = _peer("usearch.index") if peers & {"usearch"} else None
    if usearch is not None:
        from usearch.index import MetricKind
        from usearch.index import search as us_search

        # usearch exact search wants both sides in one dtype: float32 rows and queries.
        def us_f32(q: np.ndarray, k: int) -> np.ndarray:
            m = us_search(vf, q, k, MetricKind.IP, exact=True, threads=1)
            return np.atleast_2d(m.keys)

        out["usearch-exact-f32"] = us_f32
    hnswlib = _peer("hnswlib") if peers & {"hnswlib"} else None
    if hnswlib is not None:
        bf = hnswlib.BFIndex(space="ip", dim=d)  # hnswlib's brute-force index: its exact scan
        bf.init_index(max_elements=len(vf))
        bf.add_items(vf, np.arange(len(vf)))
        out["hnswlib-bf-f32"] = lambda q, k: bf.knn_query(q, k=k, num_threads=1)[0].astype(np.int64)
    return out


def run_exact(args: argparse.Namespace, n: int, d: int, bw: float, peers: set[str]) -> dict[str, float]:
    vf, qs = (clustered if args.data == "clustered" else gaussian)(n, d, queries=256, seed=n + d)
    v8, s8 = quantize_rows_int8(vf)
    vf = v8.astype(np.float32) * s8[:, None]  # every backend scores the same (dequantized) vectors
    backends = exact_backends(v8, s8, vf, peers)
    index_bytes = {"f32": vf.nbytes, "int8": v8.nbytes + s8.nbytes}
    medians: dict[str, float] = {}
    truth = backends["sdk-numpy-int8"](qs[:64], 10)
    for name, fn in backends.items():
        got = fn(qs[:64], 10)
        rec = recall(np.asarray(got)[:, :10], truth)
        nbytes = index_bytes["f32" if "f32" in name or "flat" in name else "int8"]
        if "sq8" in name:
            nbytes = v8.nbytes
        for b in args.batches:
            for k in args.ks:
                cursor = [0]

                def call(b: int = b, k: int = k, fn: Search = fn, cursor: list[int] = cursor) -> None:
                    i = cursor[0] = (cursor[0] + b) % (len(qs) - b)
                    fn(qs[i : i + b], k)

                ts = timings(call, min_repeat=5, budget_s=args.budget_s)
                s = summary(ts, per=b)
                floor_ms = nbytes / (bw * 1e9) * 1e3
                emit(bench="kernel", kind="exact", backend=name, n=n, d=d, batch=b, k=k, **s,
                     index_bytes=nbytes, scanned_gbps=round(nbytes / (s["median_ms"] / 1e3) / 1e9, 2),
                     read_bw_gbps=bw, floor_ms=round(floor_ms, 3),
                     x_floor=round(s["median_ms"] / floor_ms, 2), recall_vs_sdk_exact=round(rec, 4))
                if b == 1 and k == 10:
                    medians[name] = s["median_ms"]
    return medians


def _sweep(name: str, fn: Callable[[np.ndarray, int, int], np.ndarray], settings: list[int],
           qs: np.ndarray, truth: np.ndarray, n: int, d: int, target: float, build_s: float,
           budget_s: float, lines: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """Time ``fn(query, k, setting)`` one query at a time for each setting; return the cheapest on target
    (and append every setting's line to ``lines``)."""
    best: dict[str, Any] | None = None
    for setting in settings:
        rows = np.stack([np.asarray(fn(qs[i : i + 1], 10, setting)).reshape(-1)[:10] for i in range(len(qs))])
        rec = recall(rows, truth)
        cursor = [0]

        def call(setting: int = setting, cursor: list[int] = cursor) -> None:
            i = cursor[0] = (cursor[0] + 1) % len(qs)
            fn(qs[i : i + 1], 10, setting)

        s = summary(timings(call, min_repeat=len(qs), max_repeat=4 * len(qs), budget_s=budget_s))
        line = {"backend": name, "n": n, "d": d, "batch": 1, "k": 10, "setting": setting,
                "recall_at_10": round(rec, 4), **s, "build_s": round(build_s, 1)}
        emit(bench="kernel", kind="ann", **line)
        if lines is not None:
            lines.append(line)
        if rec >= target and best is None:
            best = line
        if rec >= min(0.999, target + 0.04):
            break
    return best


def run_ann(args: argparse.Namespace, n: int, d: int, exact_ms: dict[str, float], peers: set[str]) -> None:
    vf, qs = (clustered if args.data == "clustered" else gaussian)(n, d, queries=args.ann_queries, seed=7 * n + d)
    v8, s8 = quantize_rows_int8(vf)
    vf = v8.astype(np.float32) * s8[:, None]
    truth = NumpyExactIndex(v8, s8).search(qs, 10).rows
    best: dict[str, dict[str, Any] | None] = {}

    t0 = time.perf_counter()
    layout = build_ivf(v8, s8)  # BLAS may use every core here: builds are not timed single-threaded
    build_s = time.perf_counter() - t0
    emit(bench="kernel", kind="ann_build", backend="sdk-ivf", n=n, d=d, nlist=layout.nlist,
         tuned_nprobe=layout.nprobe, build_s=round(build_s, 1))
    ivf = IvfIndex(layout)
    settings = sorted({1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, layout.nprobe, layout.nprobe + 1})
    sdk_lines: list[dict[str, Any]] = []
    with one_thread():
        best["sdk-ivf"] = _sweep(
            "sdk-ivf", lambda q, k, p: _ivf_rows(ivf, q, k, p), settings, qs, truth, n, d,
            args.target_recall, build_s, args.budget_s, sdk_lines)

    hnswlib = _peer("hnswlib") if "hnswlib" in peers else None
    if hnswlib is not None:
        t0 = time.perf_counter()
        h = hnswlib.Index(space="ip", dim=d)
        h.init_index(max_elements=n, ef_construction=args.ef_construction, M=args.hnsw_m, random_seed=1)
        h.add_items(vf, np.arange(n), num_threads=os.cpu_count() or 1)
        build_s = time.perf_counter() - t0
        h.set_num_threads(1)

        def hq(q: np.ndarray, k: int, ef: int) -> np.ndarray:
            h.set_ef(max(ef, k))
            return h.knn_query(q, k=k, num_threads=1)[0]

        h_lines: list[dict[str, Any]] = []
        best["hnswlib"] = _sweep("hnswlib", hq, [10, 16, 24, 32, 48, 64, 96, 128, 192, 256], qs, truth, n, d,
                                 args.target_recall, build_s, args.budget_s, h_lines)
        if args.head_to_head_rounds > 0:
            # At the tuned nprobe, one list fewer and one more, each against the smallest ef reaching the
            # same recall (the sweep's ef grid is coarse, 48, 64, ...: hnswlib is not charged for recall
            # not asked for).
            pairs: list[tuple[Contender, Contender]] = []
            for line in sdk_lines:
                if abs(int(line["setting"]) - layout.nprobe) > 1:
                    continue
                got = _cheapest_ef(lambda ef: recall(np.stack([hq(qs[i : i + 1], 10, ef)[0]
                                                               for i in range(len(qs))]), truth),
                                   h_lines, line["recall_at_10"])
                if got is None:
                    emit(bench="kernel_head_to_head", n=n, d=d, k=10, note=(
                        f"hnswlib reached no recall >= {line['recall_at_10']} (the IVF at nprobe "
                        f"{line['setting']}) up to ef {_EF_CAP}: no pair timed"))
                else:
                    probe = IvfIndex(layout, nprobe=int(line["setting"]), check=False)
                    pairs.append(((f"sdk-ivf-nprobe-{probe.nprobe}", functools.partial(probe.search, k=10),
                                   probe.nprobe, line["recall_at_10"]),
                                  (f"hnswlib-ef-{got[0]}", functools.partial(hq, k=10, ef=got[0]), *got)))
            if pairs:
                with one_thread():
                    head_to_head(pairs, qs, args.head_to_head_rounds, n=n, d=d)
        del h

    usearch = _peer("usearch.index") if "usearch" in peers else None
    if usearch is not None:
        from usearch.index import Index as UsearchIndex

        t0 = time.perf_counter()
        # float32: usearch's i8 mode expects vectors scaled to [-1, 1] and saturates these.
        u = UsearchIndex(ndim=d, metric="ip", dtype="f32", connectivity=args.hnsw_m,
                          expansion_add=args.ef_construction)
        u.add(np.arange(n), vf, threads=os.cpu_count() or 1)
        build_s = time.perf_counter() - t0

        def uq(q: np.ndarray, k: int, ef: int) -> np.ndarray:
            u.expansion_search = max(ef, k)
            return np.atleast_2d(u.search(q, k, threads=1).keys)

        best["usearch-hnsw-f32"] = _sweep("usearch-hnsw-f32", uq, [10, 16, 24, 32, 48, 64, 96, 128, 192, 256],
                                         qs, truth, n, d, args.target_recall, build_s, args.budget_s)
        del u

    faiss = _peer("faiss") if "faiss" in peers else None
    if faiss is not None:
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        t0 = time.perf_counter()
        quant = faiss.IndexFlatIP(d)
        fi = faiss.IndexIVFFlat(quant, d, layout.nlist, faiss.METRIC_INNER_PRODUCT)
        fi.train(vf[:: max(1, n // (64 * layout.nlist))])
        fi.add(vf)
        build_s = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)

        def fq(q: np.ndarray, k: int, p: int) -> np.ndarray:
            fi.nprobe = p
            return fi.search(q, k)[1]

        best["faiss-ivf-flat"] = _sweep("faiss-ivf-flat", fq, settings, qs, truth, n, d, args.target_recall,
                                        build_s, args.budget_s)

    ours = best.get("sdk-ivf")
    exact = min((v for k, v in exact_ms.items() if k.startswith("sdk-")), default=None)
    summary_line: dict[str, Any] = {"bench": "kernel_summary", "kind": "ann", "n": n, "d": d,
                                    "target_recall": args.target_recall}
    for name, line in best.items():
        summary_line[name] = None if line is None else {
            "setting": line["setting"], "recall_at_10": line["recall_at_10"], "median_ms": line["median_ms"],
            "p99_ms": line["p99_ms"]}
    if ours is not None and exact is not None:
        summary_line["ivf_speedup_vs_sdk_exact"] = round(exact / ours["median_ms"], 1)
    if ours is not None and best.get("hnswlib"):
        summary_line["ivf_vs_hnswlib_time_ratio"] = round(ours["median_ms"] / best["hnswlib"]["median_ms"], 2)  # type: ignore[index]
    emit(**summary_line)


_EF_CAP = 1024
"""Largest ef the head-to-head tries when looking for hnswlib's setting at the IVF's recall."""


def _cheapest_ef(recall_at: Callable[[int], float], lines: list[dict[str, Any]],
                 target: float, cap: int = _EF_CAP) -> tuple[int, float] | None:
    """The smallest ef whose recall reaches ``target``: bisection between the sweep's last setting below
    it and its first setting at or above it (recall grows with ef, up to noise); where the sweep stopped
    short of ``target``, ef keeps doubling (up to ``cap``) first."""
    known = sorted((int(line["setting"]), float(line["recall_at_10"])) for line in lines)
    hi = next(((ef, r) for ef, r in known if r >= target), None)
    lo = max((ef for ef, r in known if r < target and (hi is None or ef < hi[0])), default=0)
    while hi is None:
        ef = 2 * max(lo, 8)
        if ef > cap:
            return None
        r = recall_at(ef)
        if r >= target:
            hi = (ef, r)
        else:
            lo = ef
    while hi[0] - lo > 1:
        mid = (lo + hi[0]) // 2
        r = recall_at(mid)
        if r >= target:
            hi = (mid, r)
        else:
            lo = mid
    return hi


Contender = tuple[str, Callable[[np.ndarray], object], int, float]  # name, search(q), setting, recall@10


def head_to_head(pairs: list[tuple[Contender, Contender]], qs: np.ndarray, rounds: int, *, n: int,
                 d: int) -> None:
    """Time every contender in alternating blocks (every query once per block, the order reversed every
    round), so that the machine's drift over minutes and the caches' state hit each of them alike (the
    sweeps above time each method minutes apart, in a tight loop over the same queries); one line per pair.
    """
    everyone = [c for pair in pairs for c in pair]
    clock = time.perf_counter
    times: dict[str, list[float]] = {c[0]: [] for c in everyone}
    for r in range(rounds):
        for name, fn, _, _ in (everyone if r % 2 == 0 else everyone[::-1]):
            out = times[name]
            for i in range(len(qs)):
                q = qs[i : i + 1]
                t0 = clock()
                fn(q)
                out.append(clock() - t0)
    stats = {name: summary(np.asarray(ts)) for name, ts in times.items()}
    for ours, peer in pairs:
        emit(bench="kernel_head_to_head", n=n, d=d, k=10, rounds=rounds, queries=len(qs),
             **{c[0]: {"setting": c[2], "recall_at_10": round(c[3], 4), **stats[c[0]]} for c in (ours, peer)},
             median_ratio=round(stats[ours[0]]["median_ms"] / stats[peer[0]]["median_ms"], 3),
             p99_ratio=round(stats[ours[0]]["p99_ms"] / stats[peer[0]]["p99_ms"], 3))


def _ivf_rows(ivf: IvfIndex, q: np.ndarray, k: int, nprobe: int) -> np.ndarray:
    ivf.nprobe = min(nprobe, ivf.nlist)
    return ivf.search(q, k).rows


# The acceptance run: the exact kernel and the approximate index at 1M x 64 against faiss and hnswlib.
ACCEPTANCE = ["--sizes", "1000000", "--batches", "1", "--ks", "10", "--ann-sizes", "1000000",
              "--peers", "faiss", "hnswlib", "--out", str(RESULTS / "acceptance.jsonl")]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--acceptance", action="store_true",
                   help="shorthand for " + " ".join(ACCEPTANCE[:-1]) + " benchmarks/results/acceptance.jsonl "
                        "(later options override)")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    p.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--ks", type=int, nargs="+", default=[10, 100])
    p.add_argument("--ann-sizes", type=int, nargs="*", default=[])
    p.add_argument("--ann-queries", type=int, default=200)
    p.add_argument("--target-recall", type=float, default=DEFAULT_TARGET_RECALL)
    p.add_argument("--data", choices=["clustered", "gaussian"], default="clustered")
    p.add_argument("--peers", nargs="*", default=["faiss"], help="any of faiss, usearch, hnswlib")
    p.add_argument("--hnsw-m", type=int, default=16)
    # 200: hnswlib's README value. The runs before 2026-11-23 01:33 used 100, a weaker graph that needs a
    # larger ef for the same recall (docs/benchmarks.md).
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--budget-s", type=float, default=1.0, help="time budget per timed case")
    p.add_argument("--head-to-head-rounds", type=int, default=10,
                   help="alternating blocks of SDK IVF against hnswlib at the same recall (0: skip)")
    add_out_argument(p, "kernels")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args([*ACCEPTANCE, *argv] if "--acceptance" in argv else argv)
    peers = set(args.peers)
    start(args.out)
    with one_thread():
        bw = read_bandwidth_gbps()
    emit(bench="read_bandwidth", when="start", **bw)
    exact_ms: dict[tuple[int, int], dict[str, float]] = {}
    for n in args.sizes:
        for d in args.dims:
            with one_thread():
                exact_ms[(n, d)] = run_exact(args, n, d, bw["read_bw_gbps"], peers)
            ms = exact_ms[(n, d)]
            if "faiss-flat-ip-f32" in ms:
                best_sdk = min(ms["sdk-onnx-int8"], ms["sdk-numpy-int8"])
                floor = (n * d + 4 * n) / (bw["read_bw_gbps"] * 1e9) * 1e3
                emit(bench="kernel_summary", kind="exact", n=n, d=d, batch=1, k=10,
                     sdk_best_ms=best_sdk, faiss_flat_ms=ms["faiss-flat-ip-f32"],
                     ratio_vs_faiss_flat=round(best_sdk / ms["faiss-flat-ip-f32"], 3),
                     floor_ms=round(floor, 3), x_floor=round(best_sdk / floor, 2))
    for n in args.ann_sizes:
        run_ann(args, n, 64, exact_ms.get((n, 64), {}), peers)
    with one_thread():
        emit(bench="read_bandwidth", when="end", **read_bandwidth_gbps())
    emit(bench="machine", when="end", load1=round(os.getloadavg()[0], 2))


if __name__ == "__main__":
    main()
