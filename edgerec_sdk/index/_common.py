"""The contract shared by every index backend: result type, protocol, argument checks, reference kernel.

Every backend validates its arguments through the helpers here so that the same call raises the same
``ValueError`` everywhere, and :func:`brute_force_topk` is the float64 reference the tests compare against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = ["SearchResult", "VectorIndex", "brute_force_topk"]

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Top-K answer for a batch of queries, padded to a common width.

    The width is ``min(k, n_items)``: a huge ``k`` never allocates beyond the catalog size.

    Attributes:
        rows: ``(b, width)`` int64 item rows, best first; ``-1`` past ``counts[i]``.
        scores: ``(b, width)`` float32 scores matching ``rows``; ``-inf`` past ``counts[i]``.
        counts: ``(b,)`` int64 number of valid entries per query.
    """

    rows: NDArray[np.int64]
    scores: NDArray[np.float32]
    counts: NDArray[np.int64]

    def __repr__(self) -> str:
        b, w = self.rows.shape
        return (
            f"SearchResult(queries={b}, width={w}, counts={self.counts.tolist()[:8]}{'...' if b > 8 else ''})"
        )


@runtime_checkable
class VectorIndex(Protocol):
    """Exact (or approximate) maximum-inner-product top-K over a fixed item matrix.

    Contract: ``score(row) = dot(query, v[row])`` with ``v[row] = float(values[row]) * scales[row]`` for int8
    values. Rows come sorted by descending score, ties broken by the lower row index; excluded rows, rows
    with ``allow`` False and rows with a non-finite score never appear.
    """

    name: str
    n_items: int
    dim: int

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        exclude: Sequence[NDArray[np.int64]] | None = None,
        allow: NDArray[np.bool_] | None = None,
    ) -> SearchResult:
        """Return the top ``k`` rows for each query of the ``(b, dim)`` batch."""
        ...


def check_values(values: NDArray[Any], scales: NDArray[np.float32] | None) -> NDArray[np.float32] | None:
    """Validate an item matrix and its scales; return the scales as a float32 vector (or None)."""
    if not isinstance(values, np.ndarray) or values.ndim != 2:
        raise ValueError("values must be a 2-D numpy array (n_items, dim)")
    if values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError(f"values must have at least one row and one column, got shape {values.shape}")
    if values.dtype == np.int8:
        if scales is None:
            raise ValueError("int8 values need per-row float32 scales")
        sc = np.asarray(scales, dtype=np.float32)
        if sc.shape != (values.shape[0],):
            raise ValueError(f"scales must have shape ({values.shape[0]},), got {sc.shape}")
        return sc
    if values.dtype in _FLOAT_DTYPES:
        if scales is not None:
            raise ValueError("scales are only accepted with int8 values")
        return None
    raise ValueError(f"values must be int8, float16 or float32, not {values.dtype}")


def check_k(k: int) -> int:
    """Reject bools, non-integers and ``k <= 0``."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an int, not {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return int(k)


def check_queries(queries: NDArray[Any], dim: int) -> NDArray[np.float32]:
    """Return the queries as a C-contiguous float32 ``(b, dim)`` array, or raise ``ValueError``."""
    q = np.asarray(queries)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (b, {dim}), got {q.shape}")
    if q.dtype.kind not in "fiu":
        raise ValueError(f"queries must be numeric, not {q.dtype}")
    return np.ascontiguousarray(q, dtype=np.float32)


def check_allow(allow: NDArray[np.bool_] | None, n: int) -> NDArray[np.bool_] | None:
    """Validate the shared ``(n,)`` allow mask."""
    if allow is None:
        return None
    a = np.asarray(allow)
    if a.shape != (n,) or a.dtype != np.bool_:
        raise ValueError(f"allow must be a bool array of shape ({n},), got {a.dtype} {a.shape}")
    return a


def check_exclude(
    exclude: Sequence[NDArray[np.int64]] | None, b: int, n: int, *, sort: bool = True
) -> list[NDArray[np.int64]] | None:
    """Return per-query in-range rows to exclude (out-of-range rows are ignored), sorted and unique unless
    ``sort`` is False: duplicates mask alike, and only the numpy kernel's block ranges need the order."""
    if exclude is None:
        return None
    if len(exclude) != b:
        raise ValueError(f"exclude must hold one array per query ({b}), got {len(exclude)}")
    out: list[NDArray[np.int64]] = []
    for rows in exclude:
        r = np.asarray(rows, dtype=np.int64).reshape(-1)
        if r.size and (r.min() < 0 or r.max() >= n):
            r = r[(r >= 0) & (r < n)]
        out.append(np.unique(r) if sort else r)
    return out if any(r.size for r in out) else None


@dataclass(slots=True)
class SearchCall:
    """One validated ``search()`` call and its padded outputs, shared by every backend.

    Attributes:
        q: the ``(b, dim)`` C-contiguous float32 queries.
        width: ``min(k, n_items)``, the padded result width.
        allow: the validated ``(n_items,)`` mask, or None.
        exclude: per query, sorted unique in-range rows to leave out, or None when there are none.
        live: indices of the queries with only finite entries (the others get no result at all).
        rows, scores, counts: the padded outputs, filled in place by the backend.
    """

    q: NDArray[np.float32]
    width: int
    allow: NDArray[np.bool_] | None
    exclude: list[NDArray[np.int64]] | None
    live: NDArray[np.intp]
    rows: NDArray[np.int64]
    scores: NDArray[np.float32]
    counts: NDArray[np.int64]

    def result(self) -> SearchResult:
        """The outputs as a :class:`SearchResult`."""
        return SearchResult(self.rows, self.scores, self.counts)

    def put(self, i: int, rows: NDArray[np.int64], scores: NDArray[np.float32]) -> None:
        """Store query ``i``'s answer (at most ``width`` rows, best first)."""
        c = rows.size
        self.rows[i, :c] = rows
        self.scores[i, :c] = scores
        self.counts[i] = c


def prepare_search(
    queries: NDArray[Any],
    k: int,
    *,
    dim: int,
    n_items: int,
    exclude: Sequence[NDArray[np.int64]] | None,
    allow: NDArray[np.bool_] | None,
) -> SearchCall:
    """Validate the arguments of ``VectorIndex.search`` and allocate its outputs.

    Why one helper: every backend must raise the same error for the same bad call, in the same order
    (``k`` first, then queries, masks, exclusions).
    """
    k = check_k(k)
    q = check_queries(queries, dim)
    b = q.shape[0]
    allow_m = check_allow(allow, n_items)
    excl = check_exclude(exclude, b, n_items)
    width = min(k, n_items)
    rows, scores, counts = empty_result(b, width)
    # A finite sum means every entry is finite: one reduction for the common case instead of two passes.
    live = np.arange(b) if math.isfinite(q.sum()) else np.flatnonzero(finite_rows(q))
    return SearchCall(q, width, allow_m, excl, live, rows, scores, counts)


def finite_rows(q: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Queries with a NaN or infinite entry score every row non-finite: they get no result at all."""
    return np.asarray(np.isfinite(q).all(axis=1), dtype=np.bool_)


def empty_result(b: int, width: int) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
    """Allocate padded output arrays."""
    rows = np.empty((b, width), np.int64)
    rows.fill(-1)
    scores = np.empty((b, width), np.float32)
    scores.fill(-np.inf)
    return rows, scores, np.zeros(b, dtype=np.int64)


def order_by_score_then_row(scores: NDArray[Any], rows: NDArray[np.int64]) -> NDArray[np.intp]:
    """Indices sorting by descending score, ties by ascending row."""
    return np.lexsort((rows, -scores))


def brute_force_topk(
    values: NDArray[Any],
    scales: NDArray[np.float32] | None,
    queries: NDArray[np.float32],
    k: int,
    *,
    exclude: Sequence[NDArray[np.int64]] | None = None,
    allow: NDArray[np.bool_] | None = None,
) -> SearchResult:
    """Float64 reference: score every row, mask, sort. Slow and simple on purpose.

    Args:
        values: ``(n, d)`` int8, float16 or float32 item matrix.
        scales: per-row float32 scales for int8 values, else None.
        queries: ``(b, d)`` queries.
        k: number of rows wanted per query (> 0).
        exclude: per query, rows that must not appear.
        allow: shared ``(n,)`` mask; False rows never appear.

    Returns:
        The exact top-K in float64 arithmetic, scores rounded to float32.

    Example:
        >>> import numpy as np
        >>> v = np.eye(3, dtype=np.float32)
        >>> brute_force_topk(v, None, v[:1], 2).rows.tolist()
        [[0, 1]]
    """
    sc = check_values(values, scales)
    k = check_k(k)
    n, d = values.shape
    q = check_queries(queries, d).astype(np.float64)
    allow_m = check_allow(allow, n)
    excl = check_exclude(exclude, q.shape[0], n)
    v = np.asarray(values, dtype=np.float64)
    if sc is not None:
        v = v * sc.astype(np.float64)[:, None]
    width = min(k, n)
    rows_out, scores_out, counts = empty_result(q.shape[0], width)
    all_rows = np.arange(n, dtype=np.int64)
    for i in range(q.shape[0]):
        with np.errstate(all="ignore"):
            s = v @ q[i]
        ok = np.isfinite(s)
        if allow_m is not None:
            ok &= allow_m
        if excl is not None:
            ok[excl[i]] = False
        cand = all_rows[ok]
        order = order_by_score_then_row(s[cand], cand)[:width]
        c = order.size
        rows_out[i, :c] = cand[order]
        scores_out[i, :c] = s[cand[order]].astype(np.float32)
        counts[i] = c
    return SearchResult(rows_out, scores_out, counts)


def in_sorted(sorted_rows: NDArray[np.int64], rows: NDArray[np.int64]) -> NDArray[np.bool_]:
    """``rows`` found in ``sorted_rows`` (a sorted search: np.isin sorts both sides on every call)."""
    if not len(sorted_rows):
        return np.zeros(len(rows), dtype=np.bool_)
    at = np.minimum(np.searchsorted(sorted_rows, rows), len(sorted_rows) - 1)
    found: NDArray[np.bool_] = sorted_rows[at] == rows
    return found
