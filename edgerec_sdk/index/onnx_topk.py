"""Top-K in one onnxruntime graph: (Dynamic)QGemm or Gemm, an additive mask, TopK.

Graph (built at construction with a hand-written protobuf encoder, so ``onnx`` is not needed)::

    int8:    q ─DynamicQuantizeLinear─> QGemm(transB=1, W int8 [n,d], per-row scales) ─┐
    float:   q ─Gemm(transB=1, W float32 [n,d])───────────────────────────────────────┤
                                                                   bias [1|b, n] ─Add─TopK(k)

The item matrix is an initializer in ``[n, d]`` layout (``transB=1``), so no transposed copy is made; float16
values are widened to float32 (onnxruntime's CPU float16 GEMM is not faster). The bias holds 0 or ``-inf``:
exclusions and the allow mask are applied inside the graph, before TopK. The int8 path quantizes the query
to uint8 per call (DynamicQuantizeLinear), so it returns ``k + max(k, 32)`` candidates that are rescored exactly
in numpy (a gather of a few rows) and re-sorted by (-score, row); the float graph relies on TopK breaking
ties by the lower index (ONNX TopK spec). The CUDA provider gets the float32 graph (QGemm is CPU-only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ModelLoadError
from . import _onnx_proto as pb
from ._common import (
    SearchResult,
    check_allow,
    check_exclude,
    check_k,
    check_queries,
    check_values,
    empty_result,
    finite_rows,
    order_by_score_then_row,
)
from .numpy_exact import NumpyExactIndex

__all__ = ["OnnxTopKIndex"]

logger = logging.getLogger(__name__)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_RESCORE_MARGIN = 32
"""Extra candidates the int8 graph returns per query for exact rescoring (at least ``k`` more)."""


def _build_graph(values: NDArray[Any], scales: NDArray[np.float32] | None, *, int8: bool) -> bytes:
    n, d = values.shape
    if int8:
        if scales is None:  # internal invariant: int8 values always come with scales
            raise RuntimeError("internal invariant broken: scales is None")
        front = [
            pb.node("DynamicQuantizeLinear", ["q"], ["qa", "qs", "qz"]),
            pb.node("QGemm", ["qa", "qs", "qz", "W", "ws", "wz"], ["s"], domain="com.microsoft", transB=1),
        ]
        inits = [pb.tensor("W", values), pb.tensor("ws", scales), pb.tensor("wz", np.zeros(n, np.int8))]
    else:
        w = values if values.dtype == np.float32 else values.astype(np.float32)
        if scales is not None:
            w = w * scales[:, None]
        front = [pb.node("Gemm", ["q", "W"], ["s"], transB=1)]
        inits = [pb.tensor("W", np.ascontiguousarray(w, dtype=np.float32))]
    nodes = [*front, pb.node("Add", ["s", "bias"], ["sb"]), pb.node("TopK", ["sb", "k"], ["vals", "idx"])]
    inputs = [
        pb.value_info("q", pb.FLOAT, ["b", d]),
        pb.value_info("bias", pb.FLOAT, ["bb", n]),
        pb.value_info("k", pb.INT64, [1]),
    ]
    outputs = [
        pb.value_info("vals", pb.FLOAT, ["b", "k_out"]),
        pb.value_info("idx", pb.INT64, ["b", "k_out"]),
    ]
    return pb.model(nodes, inputs, outputs, inits, opsets={"": 17, "com.microsoft": 1})


class OnnxTopKIndex:
    """Top-K through an onnxruntime MatMul + mask + TopK graph with the item matrix as an initializer.

    Args:
        values: ``(n, d)`` int8 (with ``scales``), float16 or float32 item matrix. The session keeps its own
            copy (memmaps are not shared with onnxruntime).
        scales: per-row float32 scales, required for int8 values and refused otherwise.
        providers: onnxruntime providers; default CUDA when :data:`HAS_CUDA`, else CPU.
        intra_op_threads: onnxruntime intra-op threads (spinning is always off).

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
    ) -> None:
        import onnxruntime as ort

        from ._caps import HAS_CUDA

        sc = check_values(values, scales)
        if (
            isinstance(intra_op_threads, bool)
            or not isinstance(intra_op_threads, int)
            or intra_op_threads < 1
        ):
            raise ValueError(f"intra_op_threads must be a positive int, got {intra_op_threads!r}")
        self.n_items, self.dim = int(values.shape[0]), int(values.shape[1])
        asked = list(providers) if providers is not None else ([_CUDA, _CPU] if HAS_CUDA else [_CPU])
        int8 = values.dtype == np.int8 and asked[0] != _CUDA
        self.quantized_query = int8
        self._values, self._scales = values, sc
        self._fallback: NumpyExactIndex | None = None
        so = ort.SessionOptions()
        so.intra_op_num_threads = intra_op_threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            blob = _build_graph(values, sc, int8=int8)
            self._session = ort.InferenceSession(blob, so, providers=asked)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelLoadError(f"onnxruntime refused the top-K graph: {exc}") from exc
        del blob
        got = self._session.get_providers()
        if asked[0] not in got:
            logger.warning("top-K index asked for %s, onnxruntime gave %s", asked[0], got)
        self.providers: tuple[str, ...] = tuple(got)
        self._zero_bias = np.zeros((1, self.n_items), dtype=np.float32)
        logger.debug("onnx index: %d x %d %s on %s", self.n_items, self.dim, values.dtype, got[0])

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
        k = check_k(k)
        q = check_queries(queries, self.dim)
        b, n = q.shape[0], self.n_items
        allow_m = check_allow(allow, n)
        excl = check_exclude(exclude, b, n)
        width = min(k, n)
        rows_out, scores_out, counts = empty_result(b, width)
        live = np.flatnonzero(finite_rows(q))
        if live.size == 0:
            return SearchResult(rows_out, scores_out, counts)
        ql = q if live.size == b else q[live]
        bias = self._bias(live, allow_m, excl)
        # The int8 graph scores a uint8-quantized query: fetch a margin of extra candidates and rescore
        # them exactly, so returned scores and order follow the contract and recall stays ~1.
        fetch = min(n, width + max(width, _RESCORE_MARGIN)) if self.quantized_query else width
        vals, idx = self._session.run(None, {"q": ql, "bias": bias, "k": np.array([fetch], np.int64)})
        bad = np.isnan(vals) | (vals == np.inf)
        for j, i in enumerate(live):
            if bad[j].any():  # float overflow: redo this query exactly in numpy
                self._redo(q[i : i + 1], width, int(i), rows_out, scores_out, counts, excl, allow_m)
                continue
            ok = vals[j] > -np.inf
            rows, scores = idx[j][ok], vals[j][ok]
            if self.quantized_query and rows.size:
                scores = self._exact(q[i], rows)
                keep = np.isfinite(scores)
                rows, scores = rows[keep], scores[keep]
                order = order_by_score_then_row(scores, rows)[:width]
                rows, scores = rows[order], scores[order]
            c = rows.size
            rows_out[i, :c] = rows
            scores_out[i, :c] = scores
            counts[i] = c
        return SearchResult(rows_out, scores_out, counts)

    def _bias(
        self,
        live: NDArray[np.intp],
        allow_m: NDArray[np.bool_] | None,
        excl: list[NDArray[np.int64]] | None,
    ) -> NDArray[np.float32]:
        if allow_m is None and excl is None:
            return self._zero_bias
        base = self._zero_bias if allow_m is None else np.where(allow_m, np.float32(0), np.float32(-np.inf))
        if excl is None:
            return base.reshape(1, -1).astype(np.float32, copy=False)
        bias = np.empty((live.size, self.n_items), dtype=np.float32)
        bias[...] = base
        for j, i in enumerate(live):
            bias[j, excl[i]] = -np.inf
        return bias

    def _exact(self, q: NDArray[np.float32], rows: NDArray[np.int64]) -> NDArray[np.float32]:
        if self._scales is None:  # internal invariant: only the int8 graph rescores
            raise RuntimeError("internal invariant broken: self._scales is None")
        sel = np.sort(rows)  # sorted gathers read a memmap sequentially
        with np.errstate(all="ignore"):
            s = (self._values[sel].astype(np.float32) @ q) * self._scales[sel]
        return s[np.searchsorted(sel, rows)].astype(np.float32, copy=False)

    def _redo(
        self,
        q: NDArray[np.float32],
        width: int,
        i: int,
        rows_out: NDArray[np.int64],
        scores_out: NDArray[np.float32],
        counts: NDArray[np.int64],
        excl: list[NDArray[np.int64]] | None,
        allow_m: NDArray[np.bool_] | None,
    ) -> None:
        if self._fallback is None:
            self._fallback = NumpyExactIndex(self._values, self._scales)
        res = self._fallback.search(q, width, exclude=None if excl is None else [excl[i]], allow=allow_m)
        rows_out[i], scores_out[i], counts[i] = res.rows[0], res.scores[0], res.counts[0]
