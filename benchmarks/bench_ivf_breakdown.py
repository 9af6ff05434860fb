"""Where one IVF query's time goes, and how the list count trades recall for time (JSON lines).

On the clustered 1M x 64 vectors of ``bench_kernels.py`` (same seed), single-threaded: for each ``--nlists``,
the build time and recall@10 / median per nprobe around the tuned one; then, for the first ``--nlists`` value
at its tuned nprobe, the median time of each step of ``IvfIndex``'s one-round path (centroid scores, picking
the lists, int8-to-float32 copy of the probed slices, their rows and scales, gemv and scaling, selection,
ordering the result) next to a whole ``IvfIndex.search``, and two alternatives: picking the lists by
``argpartition``, and scoring row-major ``(nlist, dim)`` centroids.

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_ivf_breakdown.py --nlists 2000 4000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import add_out_argument, clustered, emit, one_thread, recall, start

from edgerec_sdk.bundle import quantize_rows_int8
from edgerec_sdk.index import IvfIndex, NumpyExactIndex, build_ivf
from edgerec_sdk.index._common import order_by_score_then_row


def breakdown(ivf: IvfIndex, qs: np.ndarray, rounds: int) -> None:
    """Median time of each step of ``IvfIndex``'s one-round path (``_fast``), at the tuned nprobe."""
    values, scales, order, starts, ends = ivf._values, ivf._scales, ivf._order, ivf._starts, ivf._ends
    nprobe, want = ivf.nprobe, 10
    buf = np.empty((16_384, ivf.dim), np.float32)
    names = ("centroids", "pick_lists", "copy", "rows_scales", "gemv_scale", "select", "finish", "steps")
    steps: dict[str, list[float]] = {k: [] for k in names}
    steps["pick_lists_by_argpartition"] = []  # the alternative to the argmax passes, outside the step sum
    steps["centroids_row_major"] = []  # the (nlist, dim) layout IvfIndex stored before, outside the sum
    rowwise = np.ascontiguousarray(ivf._centroids_t.T)
    clock = time.perf_counter
    nlist = ivf.nlist
    for _ in range(rounds):
        for q in qs:
            ta = clock()
            rowwise @ q
            steps["centroids_row_major"].append(clock() - ta)
            cs = q @ ivf._centroids_t
            ta = clock()
            np.argpartition(cs, nlist - nprobe)[nlist - nprobe :].tolist()
            steps["pick_lists_by_argpartition"].append(clock() - ta)
            t0 = clock()
            cs = q @ ivf._centroids_t
            t1 = clock()
            picked = []
            for _ in range(nprobe):  # IvfIndex picks a few lists by repeated argmax
                li = int(cs.argmax())
                picked.append(li)
                cs[li] = -np.inf
            spans = [(starts[li], ends[li]) for li in picked]
            t2 = clock()
            at = sum(b - a for a, b in spans)
            np.concatenate([values[a:b] for a, b in spans], out=buf[:at], casting="unsafe")
            t3 = clock()
            rows = np.concatenate([order[a:b] for a, b in spans])
            sc = np.concatenate([scales[a:b] for a, b in spans])
            t4 = clock()
            s = buf[:at] @ q
            s *= sc
            t5 = clock()
            part = np.argpartition(s, at - want - 1)[at - want - 1 :]
            near = s[part]
            best = near[1:]
            _final = best.min() > near[0] and best.max() < np.inf
            t6 = clock()
            r = rows[part[1:]].astype(np.int64)
            o = order_by_score_then_row(best, r)
            r, best = r[o], best[o]
            t7 = clock()
            for name, (a, b) in zip(names, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6), (t6, t7),
                                            (t0, t7)), strict=True):
                steps[name].append(b - a)
    whole = []
    for _ in range(rounds):
        for q in qs:
            t0 = clock()
            ivf.search(q[None, :], 10)
            whole.append(clock() - t0)
    emit(bench="ivf_breakdown", nprobe=nprobe, **{f"{k}_us": round(float(np.median(v)) * 1e6, 1)
                                                  for k, v in steps.items()},
         search_us=round(float(np.median(whole)) * 1e6, 1))


def sweep(v8: np.ndarray, s8: np.ndarray, qs: np.ndarray, truth: np.ndarray, nlist: int, rounds: int) -> IvfIndex:
    t0 = time.perf_counter()
    layout = build_ivf(v8, s8, nlist=nlist)
    emit(bench="ivf_build", nlist=nlist, tuned_nprobe=layout.nprobe, build_s=round(time.perf_counter() - t0, 1))
    ivf = IvfIndex(layout)
    for nprobe in sorted({max(1, layout.nprobe - 1), layout.nprobe, layout.nprobe + 1}):
        ivf.nprobe = nprobe
        with one_thread():
            rows = np.stack([ivf.search(q[None, :], 10).rows[0] for q in qs])
            ts = []
            for _ in range(rounds):
                for q in qs:
                    t1 = time.perf_counter()
                    ivf.search(q[None, :], 10)
                    ts.append(time.perf_counter() - t1)
        emit(bench="ivf_sweep", nlist=nlist, nprobe=nprobe, recall_at_10=round(recall(rows, truth), 4),
             median_us=round(float(np.median(ts)) * 1e6, 1))
    ivf.nprobe = layout.nprobe
    return ivf


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nlists", type=int, nargs="+", default=[2000])
    p.add_argument("--rounds", type=int, default=4)
    add_out_argument(p, "ivf_breakdown")
    args = p.parse_args(argv)
    start(args.out)
    n, d = 1_000_000, 64
    vf, qs = clustered(n, d, queries=200, seed=7 * n + d)  # the vectors of bench_kernels.py's ANN part
    v8, s8 = quantize_rows_int8(vf)
    truth = NumpyExactIndex(v8, s8).search(qs, 10).rows
    for i, nlist in enumerate(args.nlists):
        ivf = sweep(v8, s8, qs, truth, nlist, args.rounds)
        if i == 0:  # the step breakdown, on the first list count, at its tuned nprobe
            with one_thread():
                breakdown(ivf, qs, args.rounds)


if __name__ == "__main__":
    main()
