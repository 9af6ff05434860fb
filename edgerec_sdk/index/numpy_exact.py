"""Exact blocked top-K scan in numpy (float32 BLAS on dequantized chunks).

Why this shape:

* The item matrix may be a read-only ``np.memmap`` shared by every worker of a host, so it is never copied
  whole per call. Rows are scored in blocks of ``block_rows``; inside a block, int8/float16 rows are
  converted to float32 in cache-sized chunks (:data:`_CHUNK_ROWS`) into one reused buffer and multiplied
  with float32 BLAS. On the 2-core dev box (shared, numbers are best-of-7, one BLAS thread) converting
  1024-row chunks scans 1M x 64 int8 in ~18 ms, faster than a precomputed float32 copy (~26 ms: it reads
  four times the bytes). numpy has no fast int8 matmul (int8 ``@`` is ~10x slower than converting).
* Small matrices (at most :data:`PRECOMPUTE_MAX_BYTES` as float32) are dequantized once at construction:
  a 12k x 64 matrix is 3 MB and stays in cache, and the per-call conversion would dominate.
* Exclusions and the allow mask are written as ``-inf`` into the block scores before selection, so they
  cost nothing extra and never push eligible rows out of the top-K.
* Selection keeps the running k-th best score as a threshold: after the first block most blocks only need
  one vectorized comparison. Candidates equal to a block's k-th score are all kept, and the final order is a
  lexsort on (-score, row), so ties are broken by the lower row exactly (no argpartition arbitrariness).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._common import SearchResult, check_values, order_by_score_then_row, prepare_search

__all__ = ["PRECOMPUTE_MAX_BYTES", "NumpyExactIndex"]

logger = logging.getLogger(__name__)

PRECOMPUTE_MAX_BYTES = 16 * 1024 * 1024
"""Matrices whose float32 copy fits in this many bytes are dequantized once at construction."""
_CHUNK_ROWS = 1024
_NEG_INF = np.float32(-np.inf)


class _TopK:
    """Running top-k of one query across blocks: candidate scores/rows and the k-th best score."""

    __slots__ = ("k", "rows", "scores", "thr")

    def __init__(self, k: int) -> None:
        self.k = k
        self.scores: NDArray[np.float32] = np.empty(0, np.float32)
        self.rows: NDArray[np.int64] = np.empty(0, np.int64)
        self.thr = _NEG_INF  # scores must be strictly above this to enter once k are held

    def push(self, s: NDArray[np.float32], start: int) -> None:
        """Offer one block's scores (``-inf`` = ineligible); rows are ``start + position``."""
        idx = self._select(s)
        if idx is None:  # overflowed to +inf/NaN somewhere: sanitize this block once and retry
            s = np.where(np.isfinite(s), s, _NEG_INF).astype(np.float32, copy=False)
            idx = self._select(s)
            if idx is None:  # pragma: no cover - cannot happen after sanitizing
                return
        if idx.size == 0:
            return
        scores = np.concatenate((self.scores, s[idx]))
        rows = np.concatenate((self.rows, idx.astype(np.int64) + start))
        if scores.size > self.k:
            keep = order_by_score_then_row(scores, rows)[: self.k]
            scores, rows = scores[keep], rows[keep]
        if scores.size >= self.k:
            self.thr = scores.min()
        self.scores, self.rows = scores, rows

    def _select(self, s: NDArray[np.float32]) -> NDArray[np.intp] | None:
        need = self.k - self.scores.size
        if need <= 0:
            # Later blocks hold higher rows, so an equal score loses the tie: strictly greater only.
            idx = np.flatnonzero(s > self.thr)
        elif s.size > need:
            t = np.partition(s, s.size - need)[s.size - need]
            if np.isnan(t):
                return None
            idx = np.flatnonzero(s >= t) if t > _NEG_INF else np.flatnonzero(s > _NEG_INF)
        else:
            idx = np.flatnonzero(s > _NEG_INF)
        if idx.size and not np.isfinite(s[idx]).all():
            return None
        return idx

    def result(self) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        order = order_by_score_then_row(self.scores, self.rows)
        return self.rows[order], self.scores[order]


class NumpyExactIndex:
    """Exact maximum-inner-product search over int8 (+ per-row scales), float16 or float32 rows.

    Args:
        values: ``(n, d)`` item matrix; may be a read-only memmap (never copied whole, unless it is small
            enough to be dequantized once, see :data:`PRECOMPUTE_MAX_BYTES`).
        scales: per-row float32 scales, required for int8 values and refused otherwise.
        block_rows: rows scored per block; bounds the temporary memory of one scan to about
            ``block_rows * (4 * batch + 4 * 1024 / block_rows * d)`` bytes.

    Example:
        >>> import numpy as np
        >>> idx = NumpyExactIndex(np.eye(4, dtype=np.float32))
        >>> idx.search(np.eye(4, dtype=np.float32)[2:3], 1).rows.tolist()
        [[2]]
    """

    name = "numpy"

    def __init__(
        self, values: NDArray[Any], scales: NDArray[np.float32] | None = None, *, block_rows: int = 65536
    ) -> None:
        if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
            raise ValueError(f"block_rows must be a positive int, got {block_rows!r}")
        self._scales = check_values(values, scales)
        self.n_items, self.dim = int(values.shape[0]), int(values.shape[1])
        self.block_rows = block_rows
        self._values = values
        self._dense: NDArray[np.float32] | None = None
        if values.dtype == np.float32:
            self._dense = values  # BLAS reads it in place, memmap included
        elif self.n_items * self.dim * 4 <= PRECOMPUTE_MAX_BYTES:
            dense = np.asarray(values, dtype=np.float32)
            if self._scales is not None:
                dense = dense * self._scales[:, None]
            self._dense = np.ascontiguousarray(dense, dtype=np.float32)
        logger.debug(
            "numpy index: %d x %d %s, %s",
            self.n_items,
            self.dim,
            values.dtype,
            "dense float32" if self._dense is not None else "chunked dequantization",
        )

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        exclude: Sequence[NDArray[np.int64]] | None = None,
        allow: NDArray[np.bool_] | None = None,
    ) -> SearchResult:
        """Return the exact top ``k`` rows per query (see :class:`~edgerec_sdk.index.VectorIndex`).

        Args:
            queries: ``(b, dim)`` float32 queries.
            k: rows wanted per query; the result width is ``min(k, n_items)``.
            exclude: per query, rows that must not appear (out-of-range rows are ignored).
            allow: shared ``(n_items,)`` mask; False rows never appear.
        """
        call = prepare_search(queries, k, dim=self.dim, n_items=self.n_items, exclude=exclude, allow=allow)
        live, n, allow_m, excl = call.live, self.n_items, call.allow, call.exclude
        if live.size == 0:
            return call.result()
        ql = call.q[live]
        qt = np.ascontiguousarray(ql.T)
        tops = [_TopK(call.width) for _ in range(live.size)]
        block = min(self.block_rows, n)
        scores = np.empty((live.size, block), dtype=np.float32)
        chunk = (
            np.empty((min(_CHUNK_ROWS, block), self.dim), dtype=np.float32) if self._dense is None else None
        )
        for start in range(0, n, block):
            stop = min(start + block, n)
            s = scores[:, : stop - start]
            self._score_block(ql, qt, start, stop, s, chunk)
            if allow_m is not None:
                np.copyto(s, _NEG_INF, where=~allow_m[start:stop])
            for j, top in enumerate(tops):
                if excl is not None:
                    r = excl[live[j]]
                    lo, hi = np.searchsorted(r, (start, stop))
                    s[j, r[lo:hi] - start] = _NEG_INF
                top.push(s[j], start)
        for j, top in enumerate(tops):
            call.put(int(live[j]), *top.result())
        return call.result()

    def _score_block(
        self,
        q: NDArray[np.float32],
        qt: NDArray[np.float32],
        start: int,
        stop: int,
        out: NDArray[np.float32],
        chunk: NDArray[np.float32] | None,
    ) -> None:
        """Write ``q @ v[start:stop].T`` into ``out`` (shape ``(b, stop - start)``)."""
        with np.errstate(all="ignore"):
            if self._dense is not None:
                _matmul_into(self._dense[start:stop], q, qt, out)
                return
            if chunk is None:  # internal invariant, not an argument check
                raise RuntimeError("internal invariant broken: chunk is None")
            c = chunk.shape[0]
            for lo in range(start, stop, c):
                hi = min(lo + c, stop)
                buf = chunk[: hi - lo]
                np.copyto(buf, self._values[lo:hi], casting="unsafe")
                _matmul_into(buf, q, qt, out[:, lo - start : hi - start])
            if self._scales is not None:
                out *= self._scales[start:stop]


def _matmul_into(
    v: NDArray[Any], q: NDArray[np.float32], qt: NDArray[np.float32], out: NDArray[np.float32]
) -> None:
    if q.shape[0] == 1:
        np.matmul(v, q[0], out=out[0])  # gemv, contiguous output
    else:
        out[...] = q @ v.T
