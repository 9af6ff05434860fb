"""Build an :class:`~edgerec_sdk.index.IvfLayout`: k-means lists, list-ordered int8 copy, a tuned ``nprobe``.

Runs when a bundle is written (never on the request path), in numpy only: k-means is a few float32 GEMMs
per iteration on a sample of at most ``48 * nlist`` rows, then one blocked pass puts every row in the list
whose centroid has the largest inner product with it (see :func:`_assign`).
The result is deterministic for a given ``seed`` and input (up to BLAS rounding across machines).

``nprobe`` is tuned on the data itself: a seeded sample of item vectors is used as queries (each with its
own row excluded, the "similar items" case), their exact top-10 is computed by brute force, and the
smallest ``nprobe`` whose mean recall@10 reaches ``target_recall`` is kept.

The default target is :data:`DEFAULT_TARGET_RECALL` (0.99), not the 0.95 an ANN index is usually quoted
at: one more list costs little (on a clustered 1M x 64 catalog 2 -> 3 lists is +0.013-0.023 ms a query,
recall 0.9775 -> 0.9925), a miss is an item the shopper never sees, and above ~0.98 the IVF is also faster
than hnswlib at equal recall while below it the two are level (``docs/benchmarks.md``, "Acceptance").
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._common import check_values
from .ivf import IvfIndex, IvfLayout

__all__ = ["DEFAULT_TARGET_RECALL", "build_ivf", "default_nlist"]

logger = logging.getLogger(__name__)

DEFAULT_TARGET_RECALL = 0.99
"""recall@10 a tuned ``nprobe`` reaches on the build's sample queries unless told otherwise (see above)."""

_BLOCK = 32768
_TRAIN_PER_LIST = 48
_ITERATIONS = 10


def default_nlist(n_items: int) -> int:
    """``2 * sqrt(n)`` lists of at least 32 rows each (1M items: 2000 lists of ~500 rows)."""
    return max(1, min(round(2 * math.sqrt(n_items)), n_items // 32))


def build_ivf(
    values: NDArray[np.int8],
    scales: NDArray[np.float32],
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    seed: int = 0,
    tune_queries: int = 200,
) -> IvfLayout:
    """Partition int8 item vectors into k-means lists and lay them out for :class:`IvfIndex`.

    Args:
        values: ``(n, dim)`` int8 item vectors (a memmap is fine).
        scales: ``(n,)`` float32 per-row scales.
        nlist: number of lists; default :func:`default_nlist`.
        nprobe: lists probed by default; None tunes it to ``target_recall`` (see the module docstring).
        target_recall: recall@10 the tuned ``nprobe`` must reach on the sample queries.
        seed: seeds the k-means sample, initialisation and the tuning queries.
        tune_queries: number of sample queries used for tuning.

    Returns:
        The layout (arrays in memory; the bundle writer saves them as ``ivf.*.npy``).

    Raises:
        ValueError: values are not int8 with scales, or a parameter is out of range.

    Example:
        >>> import numpy as np
        >>> v = np.random.default_rng(0).integers(-127, 128, (1000, 8), dtype=np.int8)
        >>> build_ivf(v, np.ones(1000, np.float32), nlist=10).nlist
        10
    """
    if values.dtype != np.int8:
        raise ValueError("build_ivf takes int8 values with per-row scales")
    sc = check_values(values, scales)
    if sc is None:  # pragma: no cover - check_values demands scales for int8
        raise ValueError("int8 values need scales")
    n = values.shape[0]
    lists = default_nlist(n) if nlist is None else nlist
    if isinstance(lists, bool) or not isinstance(lists, int) or not 1 <= lists <= n:
        raise ValueError(f"nlist must be an int in [1, {n}], got {lists!r}")
    number = isinstance(target_recall, (int, float)) and not isinstance(target_recall, bool)
    if not number or not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be a number in (0, 1], got {target_recall!r}")
    rng = np.random.default_rng(seed)
    centroids = _kmeans(values, sc, lists, rng)
    assign = _assign(values, sc, centroids)
    order = np.argsort(assign, kind="stable").astype(np.int32)
    counts = np.bincount(assign, minlength=lists)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    layout = IvfLayout(
        centroids=centroids,
        offsets=offsets,
        order=order,
        values=np.ascontiguousarray(values[order]),
        scales=np.ascontiguousarray(sc[order]),
        nprobe=1,
    )
    measured: float | None = None
    if nprobe is None:
        nprobe, measured = _tune_nprobe(layout, values, sc, target_recall, rng, tune_queries)
    elif isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1:
        raise ValueError(f"nprobe must be a positive int, got {nprobe!r}")
    logger.info(
        "ivf: %d rows in %d lists (largest %d), nprobe %d", n, lists, int(counts.max()), min(nprobe, lists)
    )
    return IvfLayout(
        centroids=layout.centroids,
        offsets=layout.offsets,
        order=layout.order,
        values=layout.values,
        scales=layout.scales,
        nprobe=min(nprobe, lists),
        recall=measured,
    )


def _dequant(values: NDArray[Any], scales: NDArray[np.float32], lo: int, hi: int) -> NDArray[np.float32]:
    out = np.asarray(values[lo:hi], dtype=np.float32)
    out *= scales[lo:hi, None]
    return out


def _kmeans(
    values: NDArray[np.int8], scales: NDArray[np.float32], nlist: int, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Lloyd's k-means (squared L2) on a seeded sample; empty lists are re-seeded from far points."""
    n = values.shape[0]
    m = min(n, max(nlist * _TRAIN_PER_LIST, nlist))
    pick = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    x = np.asarray(values[pick], dtype=np.float32) * scales[pick, None]
    c = x[rng.choice(m, size=nlist, replace=False)].copy()
    for _ in range(_ITERATIONS):
        a, dist = _nearest(x, c)
        counts = np.bincount(a, minlength=nlist)
        sums = np.zeros_like(c)
        _segment_sum(x, a, sums)
        nonempty = counts > 0
        c[nonempty] = sums[nonempty] / counts[nonempty, None]
        empty = np.flatnonzero(~nonempty)
        if empty.size:
            far = np.argsort(-dist)[: empty.size]
            c[empty] = x[far]
    return np.ascontiguousarray(c, dtype=np.float32)


def _segment_sum(x: NDArray[np.float32], a: NDArray[np.intp], out: NDArray[np.float32]) -> None:
    by = np.argsort(a, kind="stable")
    sa = a[by]
    starts = np.flatnonzero(np.concatenate(([True], sa[1:] != sa[:-1])))
    out[sa[starts]] = np.add.reduceat(x[by], starts, axis=0)


def _nearest(x: NDArray[np.float32], c: NDArray[np.float32]) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """Nearest centroid of each row of ``x`` and the squared distance to it, in blocks."""
    half = 0.5 * np.einsum("ij,ij->i", c, c)
    a = np.empty(x.shape[0], np.intp)
    dist = np.empty(x.shape[0], np.float32)
    for lo in range(0, x.shape[0], _BLOCK):
        blk = x[lo : lo + _BLOCK]
        s = blk @ c.T
        s -= half
        best = np.argmax(s, axis=1)
        a[lo : lo + _BLOCK] = best
        dist[lo : lo + _BLOCK] = np.einsum("ij,ij->i", blk, blk) - 2 * s[np.arange(blk.shape[0]), best]
    return a, dist


def _assign(
    values: NDArray[np.int8], scales: NDArray[np.float32], centroids: NDArray[np.float32]
) -> NDArray[np.intp]:
    """Each row's list: the centroid with the largest inner product, the ranking a query probes by.

    Why not the nearest centroid (the k-means assignment): a query ``q`` close to an item ``v`` ranks
    lists by ``q . c ~ v . c``, so ``v`` is found first where ``v . c`` is largest. On the clustered
    1M x 64 benchmark vectors this took recall@10 at 2 of 2,000 lists from 0.93 to 0.98 and at 3 lists
    from 0.984 to 0.993 (``benchmarks/bench_kernels.py``; docs/benchmarks.md).
    """
    out = np.empty(values.shape[0], np.intp)
    for lo in range(0, values.shape[0], _BLOCK):
        hi = min(lo + _BLOCK, values.shape[0])
        out[lo:hi] = np.argmax(_dequant(values, scales, lo, hi) @ centroids.T, axis=1)
    return out


def _tune_nprobe(
    layout: IvfLayout,
    values: NDArray[np.int8],
    scales: NDArray[np.float32],
    target: float,
    rng: np.random.Generator,
    count: int,
) -> tuple[int, float | None]:
    """Smallest ``nprobe`` (doubling, then bisection) whose recall@10 on sample queries reaches ``target``,
    and that recall."""
    n = values.shape[0]
    if layout.nlist == 1:
        return 1, 1.0
    rows = np.sort(rng.choice(n, size=min(count, n), replace=False))
    q = np.asarray(values[rows], dtype=np.float32) * scales[rows, None]
    exclude = [np.array([r], np.int64) for r in rows.tolist()]
    k = min(10, n - 1)
    if k < 1:
        return layout.nlist, None
    truth = _exact_topk(values, scales, q, rows, k)
    seen: dict[int, float] = {}

    def recall(nprobe: int) -> float:
        if nprobe not in seen:
            got = IvfIndex(layout, nprobe=nprobe, check=False).search(q, k, exclude=exclude).rows
            seen[nprobe] = float(
                np.mean([len(set(g) & set(t)) / k for g, t in zip(got.tolist(), truth, strict=True)])
            )
        return seen[nprobe]

    lo, hi = 0, 1
    while hi < layout.nlist and recall(hi) < target:
        lo, hi = hi, min(2 * hi, layout.nlist)
    while hi - lo > 1 and hi > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if recall(mid) >= target else (mid, hi)
    best = max(hi, 1)
    return best, round(recall(best), 4)


def _exact_topk(
    values: NDArray[np.int8],
    scales: NDArray[np.float32],
    q: NDArray[np.float32],
    self_rows: NDArray[np.int64],
    k: int,
) -> list[list[int]]:
    """Brute-force top-``k`` rows of each query, its own row left out (blocked float32 GEMM)."""
    best_s = np.full((q.shape[0], k), -np.inf, np.float32)
    best_r = np.full((q.shape[0], k), -1, np.int64)
    for lo in range(0, values.shape[0], _BLOCK):
        hi = min(lo + _BLOCK, values.shape[0])
        s = q @ _dequant(values, scales, lo, hi).T
        inside = (self_rows >= lo) & (self_rows < hi)
        s[np.flatnonzero(inside), self_rows[inside] - lo] = -np.inf
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if s.shape[1] > k else np.argsort(-s, axis=1)
        cand_s = np.concatenate((best_s, np.take_along_axis(s, top, axis=1)), axis=1)
        cand_r = np.concatenate((best_r, top + lo), axis=1)
        keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(cand_s, keep, axis=1)
        best_r = np.take_along_axis(cand_r, keep, axis=1)
    out: list[list[int]] = best_r.tolist()
    return out
