"""Approximate top-K for large catalogs: an inverted file (IVF) over int8 vectors, scored exactly.

Layout (:class:`IvfLayout`, written into the bundle by :func:`~edgerec_sdk.index.build_ivf`): k-means
centroids partition the items into ``nlist`` lists; the int8 rows and their scales are stored a second time,
*in list order*, so every list is one contiguous slice (``offsets[l]:offsets[l + 1]``), and ``order`` maps a
list position back to the item row.

Search, per query:

1. score the centroids (one small gemv) and take the ``nprobe`` best lists;
2. copy the probed slices into a thread-local float32 buffer (int8 -> float32 on the fly) and score them
   with one gemv, times the per-row scales: these are the *exact* contract scores of those rows, so no
   rescoring is needed for int8 bundles (float16/float32 bundles rescore the best candidates from the
   stored vectors, see ``exact_values``);
3. exclusions and the allow mask are applied to the candidates before selection, so a filtered request
   still gets ``k`` rows: when fewer than ``k`` eligible candidates were found, the next-best lists are
   probed too (doubling) until ``k`` are found or every list was scanned.

Most requests take a one-round path (``_fast``) with about half the numpy calls, since at 1M rows those
calls, not the arithmetic, are most of a query; any request whose answer could differ from the rounds above
(a score tie at the ``k`` boundary, too few eligible rows, a non-finite score) is handed to them. A
one-query request with well-formed arguments (the web request) also skips the batch bookkeeping
(``_single``).
Items are listed under the centroid with the largest *inner product* (``build_ivf``), the same ranking
the probe uses.

The result is approximate only in *which* rows are considered: returned scores, order and tie-breaking
follow the :class:`~edgerec_sdk.index.VectorIndex` contract. Recall against the exact kernel is measured by
``benchmarks/bench_kernels.py`` and tuned at build time (``nprobe`` in the manifest's ``index`` section).

Example:
    >>> import numpy as np
    >>> from edgerec_sdk.index import IvfIndex, build_ivf
    >>> v = np.random.default_rng(0).integers(-127, 128, (2000, 16), dtype=np.int8)
    >>> layout = build_ivf(v, np.ones(2000, np.float32), nlist=16)
    >>> IvfIndex(layout, nprobe=16).search(v[:1].astype(np.float32), 1).rows.tolist()
    [[0]]
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._common import (
    SearchCall,
    SearchResult,
    check_exclude,
    check_values,
    order_by_score_then_row,
    prepare_search,
)

__all__ = ["IvfIndex", "IvfLayout"]

logger = logging.getLogger(__name__)

_NEG_INF = np.float32(-np.inf)
_RESCORE_MARGIN = 32
"""Extra int8 candidates rescored from the stored float vectors of float16/float32 bundles."""
_ARGMAX_PROBES = 8
"""Up to this ``nprobe`` the one-round path picks lists by repeated argmax instead of argpartition."""


@dataclass(frozen=True, slots=True, eq=False)  # identity equality: arrays have no single truth value
class IvfLayout:
    """The arrays of an IVF index, as stored in a bundle (``ivf.*.npy``).

    Attributes:
        centroids: ``(nlist, dim)`` float32 list centroids.
        offsets: ``(nlist + 1,)`` int64 list boundaries in list order; ``offsets[0] == 0``,
            ``offsets[-1] == n_items``, non-decreasing.
        order: ``(n_items,)`` int32 item row at each list position (a permutation).
        values: ``(n_items, dim)`` int8 rows in list order (``values[p] == items[order[p]]``).
        scales: ``(n_items,)`` float32 scales in list order.
        nprobe: lists probed by default (tuned when the bundle was written).
        recall: recall@10 measured with ``nprobe`` on the build's sample queries, when it was tuned.
    """

    centroids: NDArray[np.float32]
    offsets: NDArray[np.int64]
    order: NDArray[np.int32]
    values: NDArray[np.int8]
    scales: NDArray[np.float32]
    nprobe: int
    recall: float | None = None

    @property
    def nlist(self) -> int:
        """Number of lists."""
        return int(self.centroids.shape[0])

    @property
    def n_items(self) -> int:
        """Number of indexed rows."""
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.values.shape[1])

    def check(self, *, check_permutation: bool = True) -> None:
        """Raise ``ValueError`` unless the arrays form a valid layout (shapes, dtypes, bounds, finiteness)."""
        c, off, order, v, sc = self.centroids, self.offsets, self.order, self.values, self.scales
        if v.ndim != 2 or v.dtype != np.int8 or v.shape[0] < 1 or v.shape[1] < 1:
            raise ValueError(f"ivf values must be a non-empty (n, dim) int8 matrix, got {v.dtype} {v.shape}")
        n, d = v.shape
        if c.ndim != 2 or c.dtype != np.float32 or c.shape[1] != d or not 1 <= c.shape[0] <= n:
            raise ValueError(f"ivf centroids must be float32 (nlist <= {n}, {d}), got {c.dtype} {c.shape}")
        if not bool(np.isfinite(c).all()):
            raise ValueError("ivf centroids must be finite")
        if off.dtype != np.int64 or off.shape != (c.shape[0] + 1,):
            raise ValueError(f"ivf offsets must be int64 ({c.shape[0] + 1},), got {off.dtype} {off.shape}")
        if int(off[0]) != 0 or int(off[-1]) != n or bool((np.diff(off) < 0).any()):
            raise ValueError(f"ivf offsets must rise from 0 to {n}")
        if order.dtype != np.int32 or order.shape != (n,):
            raise ValueError(f"ivf order must be int32 ({n},), got {order.dtype} {order.shape}")
        if sc.dtype != np.float32 or sc.shape != (n,):
            raise ValueError(f"ivf scales must be float32 ({n},), got {sc.dtype} {sc.shape}")
        if not bool(np.isfinite(sc).all()) or bool((sc < 0).any()):
            raise ValueError("ivf scales must be finite and >= 0")
        if isinstance(self.nprobe, bool) or not isinstance(self.nprobe, int) or self.nprobe < 1:
            raise ValueError(f"ivf nprobe must be a positive int, got {self.nprobe!r}")
        if check_permutation and (
            int(order.min()) < 0
            or int(order.max()) >= n
            or int(np.bincount(order, minlength=n).max()) != 1
        ):
            raise ValueError("ivf order must be a permutation of the item rows")


class _Scratch(threading.local):
    """Per-thread reusable buffers: a fresh multi-megabyte array per call costs page faults every time."""

    def __init__(self) -> None:
        self.buf: NDArray[np.float32] = np.empty((0, 0), np.float32)

    def take(self, rows: int, dim: int) -> NDArray[np.float32]:
        if self.buf.shape[0] < rows or self.buf.shape[1] != dim:
            self.buf = np.empty((max(rows, 2 * self.buf.shape[0]), dim), np.float32)
        return self.buf[:rows]


class IvfIndex:
    """Approximate maximum-inner-product top-K over an :class:`IvfLayout` (see the module docstring).

    Args:
        layout: the IVF arrays (from a bundle, or :func:`~edgerec_sdk.index.build_ivf`).
        nprobe: lists probed per query; default ``layout.nprobe``. More lists, higher recall, slower.
        exact_values: the bundle's stored float16/float32 item vectors, when the layout quantized them:
            the best ``k + 32`` int8 candidates are then rescored from these, so scores follow the contract.
        check: validate the layout (a permutation check over ``order`` costs a few ms at 1M rows).

    Raises:
        ValueError: invalid layout, ``nprobe`` or ``exact_values``.
    """

    name = "ivf"

    def __init__(
        self,
        layout: IvfLayout,
        *,
        nprobe: int | None = None,
        exact_values: NDArray[Any] | None = None,
        check: bool = True,
    ) -> None:
        if check:
            layout.check()
        probe = layout.nprobe if nprobe is None else nprobe
        if isinstance(probe, bool) or not isinstance(probe, int) or probe < 1:
            raise ValueError(f"nprobe must be a positive int, got {probe!r}")
        self.n_items, self.dim, self.nlist = layout.n_items, layout.dim, layout.nlist
        self.nprobe = min(probe, self.nlist)
        if exact_values is not None:
            if exact_values.dtype == np.int8:
                raise ValueError("exact_values are only for float16/float32 bundles (int8 scores are exact)")
            check_values(exact_values, None)
            if exact_values.shape != (self.n_items, self.dim):
                raise ValueError(f"exact_values must have shape ({self.n_items}, {self.dim})")
        self._exact = exact_values
        # Stored transposed: ``q @ (dim, nlist)`` runs BLAS's column gemv, 8 us against 22 for the row gemv
        # over ``(nlist, dim)``'s short rows at 2,000 x 64 (``benchmarks/bench_ivf_breakdown.py``).
        self._centroids_t = np.ascontiguousarray(np.asarray(layout.centroids, dtype=np.float32).T)
        self._offsets = np.asarray(layout.offsets, dtype=np.int64)
        self._starts: list[int] = self._offsets[:-1].tolist()
        self._ends: list[int] = self._offsets[1:].tolist()
        self._order = layout.order
        self._values = layout.values
        self._scales = layout.scales
        self._where: NDArray[np.int32] | None = None  # row -> list position, built on first exclusion
        self._lock = threading.Lock()
        self._scratch = _Scratch()
        logger.debug("ivf index: %d x %d, %d lists, nprobe %d", self.n_items, self.dim, self.nlist, self.nprobe)

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        exclude: Sequence[NDArray[np.int64]] | None = None,
        allow: NDArray[np.bool_] | None = None,
    ) -> SearchResult:
        """Return approximately the top ``k`` rows per query (see :class:`~edgerec_sdk.index.VectorIndex`).

        Args:
            queries: ``(b, dim)`` float32 queries.
            k: rows wanted per query; the result width is ``min(k, n_items)``.
            exclude: per query, rows that must not appear (out-of-range rows are ignored).
            allow: shared ``(n_items,)`` mask; False rows never appear.
        """
        single = self._single(queries, k, exclude, allow)
        if single is not None:
            return single
        call = prepare_search(queries, k, dim=self.dim, n_items=self.n_items, exclude=exclude, allow=allow)
        if call.live.size == 0:
            return call.result()
        with np.errstate(all="ignore"):  # overflowed scores are handled as values, never as warnings
            cscores = call.q[call.live] @ self._centroids_t
            for j, i in enumerate(call.live.tolist()):
                excl = None if call.exclude is None else call.exclude[i]
                got = self._fast(call.q[i], cscores[j], call.width, excl, call.allow)
                if got is None:
                    self._one(call, i, cscores[j])
                else:
                    call.put(i, *got)
        return call.result()

    # ------------------------------------------------------------------------------------------------

    def _single(
        self,
        queries: NDArray[np.float32],
        k: int,
        exclude: Sequence[NDArray[np.int64]] | None,
        allow: NDArray[np.bool_] | None,
    ) -> SearchResult | None:
        """The web request (one float32 query, well-formed arguments) without ``prepare_search``'s batch
        bookkeeping, or None to take the general route (which also raises for bad arguments).

        Why: at 1M rows an IVF query is a few dozen small numpy calls, and in a serving process, where the
        caches hold other code between requests, each costs several microseconds
        (``benchmarks/bench_ivf_breakdown.py`` times the whole request against its steps).
        """
        n = self.n_items
        if (
            type(queries) is not np.ndarray
            or queries.shape != (1, self.dim)
            or queries.dtype != np.float32
            or type(k) is not int
            or k < 1
        ):
            return None
        if allow is not None and (
            type(allow) is not np.ndarray or allow.dtype != np.bool_ or allow.shape != (n,)
        ):
            return None
        excl_all = check_exclude(exclude, 1, n, sort=False)  # the masking below needs no order
        excl = None if excl_all is None else excl_all[0]
        q = queries[0]  # its finiteness is checked on the picked centroid scores (see _fast)
        width = min(k, n)
        with np.errstate(all="ignore"):  # overflowed scores are handled as values, never as warnings
            cscore = q @ self._centroids_t
            got = self._fast(q, cscore, width, excl, allow)
            if got is None:  # the general loop answers, on the same centroid scores
                call = prepare_search(queries, k, dim=self.dim, n_items=n, exclude=exclude, allow=allow)
                if call.live.size:  # a non-finite query has no answer: no need to probe every list for it
                    self._one(call, 0, cscore)
                return call.result()
        rows, scores = got
        return SearchResult(rows[None], scores[None], np.array((rows.size,), np.int64))

    def _fast(
        self,
        q: NDArray[np.float32],
        cscore: NDArray[np.float32],
        width: int,
        excl: NDArray[np.int64] | None,
        allow: NDArray[np.bool_] | None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]] | None:
        """The best ``width`` rows of query ``q`` (ordered) in one round over the ``nprobe`` best lists,
        or None, with ``cscore`` as it came.

        The common web request (default ``nprobe``, a few exclusions, a permissive or no mask) needs no
        ranked list order, no tie bookkeeping and no second round, and at 1M rows its fixed numpy overhead
        is most of the query (``benchmarks/bench_ivf_breakdown.py``): so this path makes about half as many
        numpy calls as :meth:`_one`. It gives up (None) whenever its answer could differ from
        :meth:`_one`'s contract answer: a score tie across the ``want`` boundary, fewer than ``want``
        eligible rows among the probed lists, or a non-finite score among the best.
        """
        nlist, nprobe = self.nlist, self.nprobe
        want = width + (_RESCORE_MARGIN if self._exact is not None else 0)
        if nprobe >= nlist:
            return None
        starts, ends = self._starts, self._ends
        if nprobe <= _ARGMAX_PROBES:  # a few argmax passes beat one argpartition over thousands of lists
            taken = []
            for _ in range(nprobe):
                li = int(cscore.argmax())
                taken.append((li, cscore[li]))
                cscore[li] = _NEG_INF
            for li, score in taken:  # the general loop may still need the scores
                cscore[li] = score
            probed = [li for li, _ in taken]
            picked = sum(float(score) for _, score in taken)
        else:
            probed = np.argpartition(cscore, nlist - nprobe)[nlist - nprobe :].tolist()
            picked = float(cscore[probed].sum())
        # A non-finite query makes every centroid score NaN or infinite, and so may an overflow: both are
        # the general loop's to answer, so the query's own finiteness check is saved here.
        if not math.isfinite(picked):
            return None
        spans = [(starts[li], ends[li]) for li in probed]
        total = sum(b - a for a, b in spans)
        if total <= want:
            return None
        s, rows = self._span_scores(q, spans, excl, allow)
        # The best ``want`` rows and the next one in one pass; the answer is final only when all of them
        # lie strictly above that next one (no tie across the boundary, enough eligible rows, no NaN:
        # argpartition sorts NaN last, and a NaN minimum compares false) and none is infinite.
        part = np.argpartition(s, total - want - 1)[total - want - 1 :]
        near = s[part]
        scores = near[1:]
        if not scores.min() > near[0] or not scores.max() < np.inf:
            return None
        best_r, best_s = self._ordered(q, rows[part[1:]].astype(np.int64), scores, width)
        return (best_r, best_s) if best_r.size == width else None  # a float rescore may drop rows

    def _ordered(
        self, q: NDArray[np.float32], rows: NDArray[np.int64], scores: NDArray[np.float32], width: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Rescore (float bundles), order by (-score, row) and keep the best ``width`` rows."""
        if self._exact is not None and rows.size:
            scores, rows = self._rescore(q, rows)
        order = order_by_score_then_row(scores, rows)[:width]
        return rows[order], scores[order]

    def _one(self, call: SearchCall, i: int, cscore: NDArray[np.float32]) -> None:
        """Answer query ``i``: probe lists in rounds until ``width`` eligible rows are held."""
        q = call.q[i]
        excl = None if call.exclude is None else call.exclude[i]
        want = call.width + (_RESCORE_MARGIN if self._exact is not None else 0)
        lists = _rank_lists(cscore, self.nprobe)
        seen: set[int] = set()
        best_s: NDArray[np.float32] = np.empty(0, np.float32)
        best_r: NDArray[np.int64] = np.empty(0, np.int64)
        while True:
            seen.update(lists)
            s, r = self._scan(q, lists, excl, call.allow, want)
            if best_s.size:
                s, r = np.concatenate((best_s, s)), np.concatenate((best_r, r))
            best_s, best_r = _keep_best(s, r, want)
            if best_s.size >= min(want, self.n_items) or len(seen) >= self.nlist:
                break
            # Too few eligible rows (filters, exclusions): probe twice as many lists, best first.
            more = _rank_lists(cscore, min(self.nlist, 2 * len(seen)))
            lists = [li for li in more if li not in seen]
        call.put(i, *self._ordered(q, best_r, best_s, call.width))

    def _scan(
        self,
        q: NDArray[np.float32],
        lists: list[int],
        excl: NDArray[np.int64] | None,
        allow: NDArray[np.bool_] | None,
        want: int,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Exact scores and item rows of the best ``want`` eligible rows of ``lists`` (ties kept)."""
        starts, ends = self._starts, self._ends
        spans = [(starts[li], ends[li]) for li in lists if ends[li] > starts[li]]
        if not spans:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        s, rows = self._span_scores(q, spans, excl, allow)
        if not np.isfinite(s.sum()):  # an overflow somewhere (rare): such rows are never returned
            s[~np.isfinite(s)] = _NEG_INF
        if s.size > want:
            t = np.partition(s, s.size - want)[s.size - want]
            sel = np.flatnonzero(s >= t) if t > _NEG_INF else np.flatnonzero(s > _NEG_INF)
        else:
            sel = np.flatnonzero(s > _NEG_INF)
        return s[sel], np.asarray(rows[sel], dtype=np.int64)

    def _span_scores(
        self,
        q: NDArray[np.float32],
        spans: list[tuple[int, int]],
        excl: NDArray[np.int64] | None,
        allow: NDArray[np.bool_] | None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
        """Exact scores and item rows of every row in ``spans`` (list positions ``a:b``), in span order;
        rows that are excluded or not allowed score ``-inf``.

        The int8 slices are widened straight into a per-thread float32 buffer and scored with one gemv;
        scales and item rows are concatenated alike, so position ``p`` is item ``rows[p]``.
        """
        values, scales, order = self._values, self._scales, self._order
        buf = self._scratch.take(sum(b - a for a, b in spans), self.dim)
        if len(spans) == 1:
            a, b = spans[0]
            np.copyto(buf, values[a:b], casting="unsafe")
            scale, rows = scales[a:b], order[a:b]
        else:  # one call widens every slice into the buffer: per-call cost is most of a query here
            np.concatenate([values[a:b] for a, b in spans], out=buf, casting="unsafe")
            scale = np.concatenate([scales[a:b] for a, b in spans])
            rows = np.concatenate([order[a:b] for a, b in spans])
        s = buf @ q
        s *= scale
        if allow is not None:
            np.copyto(s, _NEG_INF, where=~allow[rows])
        if excl is not None and excl.size:
            s[self._excluded(excl, spans)] = _NEG_INF
        return s, rows

    def _excluded(self, excl: NDArray[np.int64], spans: list[tuple[int, int]]) -> list[int]:
        """Buffer indices of the excluded rows that lie in the scanned ``spans``.

        Why not ``np.isin`` over every candidate: a request excludes tens of rows (history, ``exclude=``)
        while thousands are scanned; mapping the few excluded rows to list positions is cheaper.
        """
        where = self._where
        if where is None:
            with self._lock:
                if self._where is None:
                    inv = np.empty(self.n_items, np.int32)
                    inv[np.asarray(self._order)] = np.arange(self.n_items, dtype=np.int32)
                    self._where = inv
                where = self._where
        at: dict[int, tuple[int, int]] = {}  # span start -> (buffer offset, span end)
        offset = 0
        for a, b in spans:
            at[a] = (offset, b)
            offset += b - a
        pos = where[excl]
        starts = self._offsets[np.searchsorted(self._offsets, pos, side="right") - 1]
        out: list[int] = []
        for p, a in zip(pos.tolist(), starts.tolist(), strict=True):
            hit = at.get(a)
            if hit is not None and p < hit[1]:
                out.append(hit[0] + p - a)
        return out

    def _rescore(
        self, q: NDArray[np.float32], rows: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        if self._exact is None:  # internal invariant, not an argument check
            raise RuntimeError("internal invariant broken: no exact values")
        sel = np.sort(rows)
        with np.errstate(all="ignore"):
            s = np.asarray(self._exact[sel], dtype=np.float32) @ q
        ok = np.isfinite(s)
        return s[ok].astype(np.float32, copy=False), sel[ok]


def _rank_lists(cscore: NDArray[np.float32], count: int) -> list[int]:
    """The ``count`` lists with the highest centroid score, best first (ties by lower list id)."""
    # NaN (an overflowed score) sorts after every number in both argpartition and lexsort, so it is
    # probed last without a separate finiteness pass.
    n = cscore.shape[0]
    neg = -cscore
    part = np.argpartition(neg, count - 1)[:count] if count < n else np.arange(n)
    best = part[np.lexsort((part, neg[part]))]
    out: list[int] = best.tolist()
    return out


def _keep_best(
    s: NDArray[np.float32], r: NDArray[np.int64], want: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The ``want`` highest scores, with every row tied with the last one kept (exact tie-breaking later)."""
    if s.size <= want:
        return s, r
    t = np.partition(s, s.size - want)[s.size - want]
    keep = s >= t
    return s[keep], r[keep]
