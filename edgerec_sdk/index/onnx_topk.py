"""Top-K in one onnxruntime graph: an int8 (MatMulInteger) or float (Gemm) scan, then TopK.

Graph (built at construction with a hand-written protobuf encoder, so ``onnx`` is not needed)::

    int8:   q ─DynamicQuantizeLinear─> MatMulInteger(W^T int8 [d,n]) ─Cast─Mul(scales [n]) ─> s ─TopK(k)
    int8, from 65,536 rows, columns in block_order (rows by scale, padded to n' = whole blocks):
            q ─DynamicQuantizeLinear─> MatMulInteger(W^T [d,n']) ─> si (int32)
            si ─Reshape [b, n'/256, 256]─ReduceMax─> block max ─x block scale range─> bounds ─TopK(kb)─> blocks
            blocks ─GatherND(si), Gather(scales)─Cast─Mul─TopK(k)─> vals, local
    float:  q ─Gemm(transB=1, W float32 [n,d]) ─> s ─TopK(k)─> vals, idx

Why this shape (measured on the 2-core dev box, docs/benchmarks.md):

* ``MatMulInteger`` with a prepacked ``[d, n]`` weight scans 1M x 64 int8 at least as fast as ``QGemm`` with
  ``transB=1``, and faster than the fused ``DynamicQuantizeMatMul`` / ``MatMulIntegerToFloat`` contrib ops
  (15.9-16.0 ms against 12.1 ms at 1M x 64, ``benchmarks/bench_graph_variants.py``). The per-query
  quantization scale is left out: it is one positive factor per query and does not change the ranking.
* Two-stage TopK for int8: a flat TopK over 1M scores took 2.64 ms of a 12.1 ms call; the block maxima
  (0.52 ms), a TopK over them and over the ``kb`` best blocks' rows take 0.65 ms (see :func:`_select` for
  why that is exact). Scaling every int32 score (``Cast`` + ``Mul``, ~1.7 ms at 1M) is avoided too: the
  columns are sorted by row scale, so a block's int32 maximum times its largest scale (its smallest, for a
  negative maximum) bounds every score in it within a fraction of a percent; the ``kb`` blocks with the
  best bounds are gathered and only they are scaled. ``_topk`` accepts the answer when the ``fetch``-th
  candidate reaches the smallest gathered bound (no block left out can hold a better row) and otherwise
  ranks that query from all scores; ``_SPARE_BLOCKS`` extra blocks make that rare. The padding columns
  repeat a real row (so bounds stay bounds on real scores) and are dropped after the graph.
* No mask inside the graph: onnxruntime ran every node of a masked branch (``Add``/``Where`` + a second
  TopK) even when only the unmasked outputs were requested, adding 3-5 ms to every 1M-row call. Instead
  TopK fetches extra candidates and numpy drops the excluded and disallowed ones: the excluded count (a
  few hundred rows at most), and for an allow mask as many more as its density predicts. A query left
  with too few rows (an unlucky mask) is redone from all scores (output ``s``, or ``si`` times the
  scales): the mask is written in as ``-inf`` and :func:`_select` picks the top exactly. A sparse mask goes
  that way directly.
* The int8 path quantizes the query to uint8 per call (DynamicQuantizeLinear), so it takes
  ``k + max(k, 32)`` candidates that are rescored exactly in numpy (a gather of a few rows) and re-sorted
  by (-score, row); the float graph relies on TopK breaking ties by the lower index (ONNX TopK spec).
* On CUDA the item matrix is a graph *input*, uploaded once into an ``OrtValue`` on the device and bound
  to every call through I/O binding (only the query goes up, only the ``fetch`` candidates come back).
  As an initializer it would have to fit the 2 GB protobuf limit (5M x 128 float32 does not) and the
  serialized copy would sit in host memory. The device copy is float32 (dequantized int8: scores are
  exact, no rescoring; CUDA lacks DynamicQuantizeLinear). Everything CUDA is created per process id,
  lazily after a fork, since a CUDA context does not survive ``os.fork``. The same bound graph runs on the
  CPU provider (``bind_items=True``), which is how the CPU-only test suite covers this code path.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._impl.onnxrt import inference_session, onnxruntime
from ..errors import ModelLoadError
from ._common import (
    SearchCall,
    SearchResult,
    check_values,
    in_sorted,
    order_by_score_then_row,
    prepare_search,
)
from ._topk_graph import BLOCK as _BLOCK
from ._topk_graph import block_order, blocked
from ._topk_graph import build_graph as _build_graph
from ._topk_graph import float32_items as _float32_items
from .numpy_exact import NumpyExactIndex

__all__ = ["OnnxTopKIndex"]

logger = logging.getLogger(__name__)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_RESCORE_MARGIN = 32
"""Extra candidates the int8 graph returns per query for exact rescoring: this many, or a quarter of ``k`` when
that is more. Measured recall of the exact top-k (1,000 queries each): 1.0 at k = 10 and 100 on the demo and Toys
bundles; on Video Games 0.9993 at k = 100 and 0.9985 at k = 500 (a margin of k gave 0.99998 and 0.99996 for
twice the TopK and rescoring work, which the ranking stages' 100 candidates paid on every request)."""
_FILTER_SLACK = 1.25
"""How many more candidates than the allow mask's density predicts TopK fetches before filtering."""
_SPARE_BLOCKS = 4
"""Blocks the blocked int8 graph gathers beyond ``fetch + 1``, so its exactness check rarely fails
(``bench_graph_variants.py`` counts the failures: none in 68 calls at 1M x 64)."""


class OnnxTopKIndex:
    """Exact top-K through the onnxruntime scan + TopK graph of this module (item matrix inside the graph,
    or bound per call on CUDA).

    Args:
        values: ``(n, d)`` int8 (with ``scales``), float16 or float32 item matrix. The session keeps its own
            copy (memmaps are not shared with onnxruntime).
        scales: per-row float32 scales, required for int8 values and refused otherwise.
        providers: onnxruntime providers; default CUDA when :func:`~edgerec_sdk.index.cuda_usable`, else CPU.
        intra_op_threads: onnxruntime intra-op threads (spinning is always off).
        bind_items: keep the item matrix in an ``OrtValue`` bound to each call instead of an initializer;
            default on for CUDA (the matrix stays resident on the device), off for the CPU.

    Raises:
        ModelLoadError: onnxruntime refused the graph.

    Example:
        >>> import numpy as np
        >>> idx = OnnxTopKIndex(np.eye(4, dtype=np.float32))
        >>> idx.search(np.eye(4, dtype=np.float32)[1:2], 1).rows.tolist()
        [[1]]
    """

    name = "onnx"

    def __init__(
        self,
        values: NDArray[Any],
        scales: NDArray[np.float32] | None = None,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 1,
        bind_items: bool | None = None,
    ) -> None:
        from ._caps import cuda_usable

        sc = check_values(values, scales)
        if (
            isinstance(intra_op_threads, bool)
            or not isinstance(intra_op_threads, int)
            or intra_op_threads < 1
        ):
            raise ValueError(f"intra_op_threads must be a positive int, got {intra_op_threads!r}")
        self.n_items, self.dim = int(values.shape[0]), int(values.shape[1])
        asked = list(providers) if providers is not None else ([_CUDA, _CPU] if cuda_usable() else [_CPU])
        on_cuda = asked[0] == _CUDA
        self.bound = on_cuda if bind_items is None else bool(bind_items)
        int8 = values.dtype == np.int8 and not on_cuda and not self.bound
        self.quantized_query = int8
        self._blocked = int8 and blocked(self.n_items)
        self._values, self._scales = values, sc
        # Column order of the blocked graph (rows by scale, padded); None for the other graphs.
        self._order = block_order(sc) if self._blocked and sc is not None else None
        self._rechecks = 0  # blocked-graph answers the bound check refused (redone from all scores)
        self._fallback: NumpyExactIndex | None = None
        self._asked, self._threads = asked, intra_op_threads
        self._lock = threading.Lock()
        self._pid = -1
        self._items: Any = None  # the bound path's OrtValue holding the item matrix
        self._host_items: NDArray[np.float32] | None = None  # what a CPU OrtValue points into
        self._session = self._open(int8)
        got = self._session.get_providers()
        if asked[0] not in got:
            logger.warning("top-K index asked for %s, onnxruntime gave %s", asked[0], got)
        self.providers: tuple[str, ...] = tuple(got)
        self.device = "cuda" if got[0] == _CUDA else "cpu"
        self.scores_path = False
        """Rank every call from all scores in numpy (tests; the default uses it only for sparse masks)."""
        logger.debug("onnx index: %d x %d %s on %s", self.n_items, self.dim, values.dtype, got[0])

    def _open(self, int8: bool) -> Any:
        ort = onnxruntime()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self._threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            blob = _build_graph(self._values, self._scales, int8=int8, bound=self.bound, order=self._order)
            session = inference_session(blob, so, self._asked)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelLoadError(f"onnxruntime refused the top-K graph: {exc}") from exc
        self._pid = os.getpid()
        if self.bound:
            self._items = None  # uploaded on first use, in the process that uses it
        return session

    def _cpu_session(self) -> Any:
        """The unbound session for this process. A single-threaded one serves a forked child as inherited
        (sharing the parent's pages); one with an intra-op pool is rebuilt there, its pool's threads being
        the parent's (fault D21)."""
        if self._threads > 1 and self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._session = self._open(self.quantized_query)
        return self._session

    def _bound_state(self) -> tuple[Any, Any]:
        """This process's session and device-resident item matrix (rebuilt after a fork)."""
        session, items = self._session, self._items
        if items is not None and self._pid == os.getpid():
            return session, items
        with self._lock:
            if self._pid != os.getpid():
                self._session = self._open(False)
            if self._items is None:
                ort = onnxruntime()
                host = _float32_items(self._values, self._scales)
                device = "cuda" if self._session.get_providers()[0] == _CUDA else "cpu"
                try:
                    self._items = ort.OrtValue.ortvalue_from_numpy(host, device, 0)
                except Exception as exc:  # e.g. out of device memory
                    raise ModelLoadError(f"could not place the item matrix on {device}: {exc}") from exc
                # A CPU OrtValue points into ``host``; a device one holds its own copy.
                self._host_items = host if device == "cpu" else None
            return self._session, self._items

    def _topk(self, q: NDArray[np.float32], fetch: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The graph's top ``fetch`` (values descending); the blocked graph's columns mapped back to rows."""
        order = self._order
        if order is None:
            vals, idx = self._run(["vals", "idx"], q, fetch)
            return vals, idx
        n, n_blocks = self.n_items, order.shape[0] // _BLOCK
        pad = order.shape[0] - n
        kb = min(n_blocks, fetch + 1 + _SPARE_BLOCKS)
        kk = min(fetch + pad, kb * _BLOCK)  # room for the padding copies among the candidates
        vals, local, blocks, bounds = self._cpu_session().run(
            ["vals", "local", "blocks", "bounds"],
            {"q": q, "k": np.array([kk], np.int64), "kb": np.array([kb], np.int64)},
        )
        col = np.take_along_axis(blocks, local // _BLOCK, axis=1) * _BLOCK + local % _BLOCK
        real = col < n  # padding columns repeat a real row: drop the copies as -inf
        vals, idx = np.where(real, vals, np.float32(-np.inf)), np.where(real, order[col], 0)
        if kb < n_blocks:
            # Every score in a block left out is at most its bound, and so at most the smallest chosen
            # bound: when the fetch-th candidate reaches it, these are the top ``fetch``. Otherwise (scales
            # spread within the chosen blocks, near-ties, NaN) this query is ranked from all scores.
            for j in range(vals.shape[0]):
                got = vals[j][real[j]]
                if got.size >= fetch and got[fetch - 1] >= bounds[j, -1]:
                    continue
                self._rechecks += 1
                v1, i1 = _select(self._all_scores(q[j : j + 1]), fetch)
                vals[j], idx[j] = -np.inf, 0
                vals[j, : v1.shape[1]], idx[j, : v1.shape[1]] = v1[0], i1[0]
        if vals.shape[0] == 1 and vals.shape[1] > fetch:  # keep the best ``fetch`` real rows only
            keep = np.flatnonzero(vals[0] != -np.inf)[:fetch]  # NaN stays: the caller's overflow signal
            vals, idx = vals[:, keep], idx[:, keep]
        return vals, idx

    def _all_scores(self, ql: NDArray[np.float32]) -> NDArray[np.float32]:
        """Every row's score for each query, in row order (a writable array)."""
        if self._order is None:
            (scores,) = self._run(["s"], ql, 1)
            return scores if scores.flags.writeable else scores.copy()
        if self._scales is None:  # internal invariant: only int8 graphs are blocked
            raise RuntimeError("internal invariant broken: self._scales is None")
        (si,) = self._run(["si"], ql, 1)
        n = self.n_items
        out = np.empty((si.shape[0], n), np.float32)
        out[:, self._order[:n]] = si[:, :n]  # int32 scores, columns back in row order
        out *= self._scales
        return out

    def _run(self, names: list[str], q: NDArray[np.float32], k: int) -> list[NDArray[Any]]:
        """Run the graph for ``names``; the bound path goes through I/O binding."""
        kk = np.array([k], np.int64)
        if not self.bound:
            feeds = {"q": q, "k": kk}
            if self._blocked:
                feeds["kb"] = np.array([1], np.int64)
            return list(self._cpu_session().run(names, feeds))
        session, items = self._bound_state()
        io = session.io_binding()
        io.bind_ortvalue_input("W", items)
        io.bind_cpu_input("q", np.ascontiguousarray(q, dtype=np.float32))
        io.bind_cpu_input("k", kk)
        for name in names:
            io.bind_output(name, "cpu")  # only these come back to the host
        session.run_with_iobinding(io)
        return list(io.copy_outputs_to_cpu())

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        exclude: Sequence[NDArray[np.int64]] | None = None,
        allow: NDArray[np.bool_] | None = None,
    ) -> SearchResult:
        """Return the top ``k`` rows per query (see :class:`~edgerec_sdk.index.VectorIndex`).

        Args:
            queries: ``(b, dim)`` float32 queries.
            k: rows wanted per query; the result width is ``min(k, n_items)``.
            exclude: per query, rows that must not appear (out-of-range rows are ignored).
            allow: shared ``(n_items,)`` mask; False rows never appear.
        """
        call = prepare_search(queries, k, dim=self.dim, n_items=self.n_items, exclude=exclude, allow=allow)
        q, live, width, n, excl = call.q, call.live, call.width, self.n_items, call.exclude
        if live.size == 0:
            return call.result()
        ql = q if live.size == q.shape[0] else q[live]
        # Exclusions and the allow mask are applied after TopK, so TopK fetches enough extra rows: the
        # excluded count, and for a mask, its density's worth (a query left short is redone below from
        # all scores). The int8 graph scores a quantized query: a margin of extra candidates is rescored
        # exactly, so returned scores and order follow the contract and recall stays ~1.
        most_excluded = 0 if excl is None else max(int(excl[i].size) for i in live.tolist())
        need = width + (max(_RESCORE_MARGIN, width // 4) if self.quantized_query else 0)
        fetch = need + most_excluded
        allow_m = call.allow
        if allow_m is not None:
            allowed = int(np.count_nonzero(allow_m))
            if allowed == 0:
                return call.result()
            fetch = int(fetch * n / allowed * _FILTER_SLACK) + 16
        fetch = min(n, fetch)
        complete = self.scores_path or (allow_m is not None and fetch > max(4096, n // 16))
        if complete:  # a sparse mask: ranking all scores in numpy beats a huge TopK
            vals, idx = self._from_scores(ql, need, live, call)
        else:
            vals, idx = self._topk(ql, fetch)
        bad = np.isnan(vals) | (vals == np.inf)
        for j, i in enumerate(live.tolist()):
            if bad[j].any():  # float overflow: redo this query exactly in numpy
                self._redo(call, i)
                continue
            ok = vals[j] > -np.inf
            if allow_m is not None:
                ok &= allow_m[idx[j]]
            if excl is not None and excl[i].size:
                ok &= ~in_sorted(excl[i], idx[j])  # prepare_search sorted them
            rows, scores = idx[j][ok], vals[j][ok]
            if not complete and rows.size < need and fetch < n and not ok.all():
                # Filtered below what is needed while unseen rows remain: rank this query on all scores.
                v1, i1 = self._from_scores(q[i : i + 1], need, np.array([i]), call)
                keep = v1[0] > -np.inf
                rows, scores = i1[0][keep], v1[0][keep]
            if self.quantized_query and rows.size:
                scores = self._exact(q[i], rows)
                keep = np.isfinite(scores)
                rows, scores = rows[keep], scores[keep]
                order = order_by_score_then_row(scores, rows)[:width]
                rows, scores = rows[order], scores[order]
            call.put(i, rows[:width], scores[:width])
        return call.result()

    def _from_scores(
        self, ql: NDArray[np.float32], need: int, live: NDArray[np.intp], call: SearchCall
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """All scores from the graph, masks written in as ``-inf``, then the exact selection of ``_select``."""
        scores = self._all_scores(ql)
        if call.allow is not None:
            np.copyto(scores, np.float32(-np.inf), where=~call.allow)
        if call.exclude is not None:
            for j, i in enumerate(live.tolist()):
                scores[j, call.exclude[i]] = -np.inf
        return _select(scores, need)

    def _exact(self, q: NDArray[np.float32], rows: NDArray[np.int64]) -> NDArray[np.float32]:
        if self._scales is None:  # internal invariant: only the int8 graph rescores
            raise RuntimeError("internal invariant broken: self._scales is None")
        sel = np.sort(rows)  # sorted gathers read a memmap sequentially
        with np.errstate(all="ignore"):
            s = (self._values[sel].astype(np.float32) @ q) * self._scales[sel]
        return s[np.searchsorted(sel, rows)].astype(np.float32, copy=False)

    def _redo(self, call: SearchCall, i: int) -> None:
        if self._fallback is None:
            self._fallback = NumpyExactIndex(self._values, self._scales)
        excl = None if call.exclude is None else [call.exclude[i]]
        res = self._fallback.search(call.q[i : i + 1], call.width, exclude=excl, allow=call.allow)
        call.put(i, res.rows[0, : res.counts[0]], res.scores[0, : res.counts[0]])


def _select(scores: NDArray[np.float32], fetch: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """TopK of each row of ``scores``, as ONNX TopK returns it: values descending, ties by lower index.

    Two stages: the maximum of every block of :data:`_BLOCK` scores, then an exact selection among the rows
    of the blocks whose maximum reaches the ``fetch``-th largest block maximum (ties included). A row of
    the true top ``fetch`` always lies in such a block (fewer than ``fetch`` rows beat it, so fewer than
    ``fetch`` blocks have a larger maximum), so the answer is exact. A NaN or +inf anywhere is passed on
    (as in TopK) for the caller's overflow fallback.
    """
    b, n = scores.shape
    fetch = min(fetch, n)
    nb = n // _BLOCK
    vals = np.full((b, fetch), -np.inf, np.float32)
    idx = np.zeros((b, fetch), np.int64)
    offsets = np.arange(_BLOCK, dtype=np.int64)
    for j in range(b):
        row = scores[j]
        maxima = row[: nb * _BLOCK].reshape(nb, _BLOCK).max(axis=1)
        if n > nb * _BLOCK:
            maxima = np.append(maxima, row[nb * _BLOCK :].max())
        if np.isnan(maxima).any() or (maxima == np.inf).any():
            vals[j, 0] = np.nan
            continue
        m = maxima.size
        if m > fetch:
            thr = np.partition(maxima, m - fetch)[m - fetch]
            blocks = np.flatnonzero(maxima >= thr)
        else:
            blocks = np.arange(m)
        cand = (blocks[:, None] * _BLOCK + offsets).ravel()
        cand = cand[cand < n]
        cs = row[cand]
        if cs.size > fetch:
            t = np.partition(cs, cs.size - fetch)[cs.size - fetch]
            keep = cs >= t
            cand, cs = cand[keep], cs[keep]
        order = np.lexsort((cand, -cs))[:fetch]
        vals[j, : order.size] = cs[order]
        idx[j, : order.size] = cand[order]
    return vals, idx
