"""Top-K in one onnxruntime graph: an int8 (MatMulInteger) or float (Gemm) scan, an optional mask, TopK.

Graph (built at construction with a hand-written protobuf encoder, so ``onnx`` is not needed)::

    int8:   q ─DynamicQuantizeLinear─> MatMulInteger(W^T int8 [d,n]) ─Cast─Mul(scales [n]) ─┐ s
    float:  q ─Gemm(transB=1, W float32 [n,d])──────────────────────────────────────────────┤
                                                   plain:  s ──────────────────────TopK(k)─> vals0, idx0
                                                   masked: s ─Where(allow, s, -inf)─TopK(k)─> vals1, idx1

One session holds both branches; a call asks for the outputs of one, and onnxruntime runs only the nodes
that branch needs (the ``allow`` input is fed a cached all-true mask when unused). Why ``MatMulInteger``
with a prepacked ``[d, n]`` weight: on the AVX-512 VNNI dev box it scans 1M x 64 int8 in about half the
time of ``QGemm`` with ``transB=1`` (see ``docs/benchmarks.md``). The per-query quantization scale is left
out: it is one positive factor per query and does not change the ranking.

The int8 path quantizes the query to uint8 per call (DynamicQuantizeLinear), so it returns
``k + max(k, 32)`` candidates that are rescored exactly in numpy (a gather of a few rows) and re-sorted by
(-score, row); the float graph relies on TopK breaking ties by the lower index (ONNX TopK spec).
Exclusions (a few hundred rows at most: history plus ``exclude``) are not masked inside the graph: TopK
fetches that many extra candidates and they are dropped afterwards, which is exact and avoids building an
``(b, n)`` mask per call. The allow mask is a ``(1, n)`` bool input. The CUDA provider gets the float32 graph.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ModelLoadError
from . import _onnx_proto as pb
from ._common import SearchCall, SearchResult, check_values, order_by_score_then_row, prepare_search
from .numpy_exact import NumpyExactIndex

__all__ = ["OnnxTopKIndex"]

logger = logging.getLogger(__name__)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_RESCORE_MARGIN = 32
"""Extra candidates the int8 graph returns per query for exact rescoring (at least ``k`` more)."""
_PLAIN = ["vals0", "idx0"]
_MASKED = ["vals1", "idx1"]


def _build_graph(values: NDArray[Any], scales: NDArray[np.float32] | None, *, int8: bool) -> bytes:
    n, d = values.shape
    if int8:
        if scales is None:  # internal invariant: int8 values always come with scales
            raise RuntimeError("internal invariant broken: scales is None")
        front = [
            pb.node("DynamicQuantizeLinear", ["q"], ["qa", "qs", "qz"]),
            pb.node("MatMulInteger", ["qa", "Wt", "qz"], ["si"]),
            pb.node("Cast", ["si"], ["sf"], to=pb.FLOAT),
            pb.node("Mul", ["sf", "ws"], ["s"]),
        ]
        inits = [pb.tensor("Wt", np.ascontiguousarray(values.T)), pb.tensor("ws", scales)]
    else:
        w = values if values.dtype == np.float32 else values.astype(np.float32)
        if scales is not None:
            w = w * scales[:, None]
        front = [pb.node("Gemm", ["q", "W"], ["s"], transB=1)]
        inits = [pb.tensor("W", np.ascontiguousarray(w, dtype=np.float32))]
    inits.append(pb.tensor("ninf", np.array([-np.inf], np.float32)))
    nodes = [
        *front,
        pb.node("TopK", ["s", "k"], ["vals0", "idx0"]),
        pb.node("Where", ["allow", "s", "ninf"], ["sm"]),
        pb.node("TopK", ["sm", "k"], ["vals1", "idx1"]),
    ]
    inputs = [
        pb.value_info("q", pb.FLOAT, ["b", d]),
        pb.value_info("allow", pb.BOOL, [1, n]),
        pb.value_info("k", pb.INT64, [1]),
    ]
    outputs = [
        pb.value_info(f"{name}{branch}", pb.FLOAT if name == "vals" else pb.INT64, ["b", "k_out"])
        for branch in "01"
        for name in ("vals", "idx")
    ]
    return pb.model(nodes, inputs, outputs, inits, opsets={"": 17})


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
        self._all_true = np.ones((1, self.n_items), dtype=np.bool_)
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
        call = prepare_search(queries, k, dim=self.dim, n_items=self.n_items, exclude=exclude, allow=allow)
        q, live, width, n, excl = call.q, call.live, call.width, self.n_items, call.exclude
        if live.size == 0:
            return call.result()
        ql = q if live.size == q.shape[0] else q[live]
        # Exclusions are dropped after TopK, so fetch that many more. The int8 graph scores a quantized
        # query: fetch a margin of extra candidates and rescore them exactly, so returned scores and order
        # follow the contract and recall stays ~1.
        most_excluded = 0 if excl is None else max(int(excl[i].size) for i in live.tolist())
        margin = max(width, _RESCORE_MARGIN) if self.quantized_query else 0
        fetch = min(n, width + margin + most_excluded)
        feeds = {
            "q": ql,
            "k": np.array([fetch], np.int64),
            "allow": self._all_true if call.allow is None else call.allow.reshape(1, n),
        }
        names = _MASKED if call.allow is not None else _PLAIN
        vals, idx = self._session.run(names, feeds)
        bad = np.isnan(vals) | (vals == np.inf)
        for j, i in enumerate(live.tolist()):
            if bad[j].any():  # float overflow: redo this query exactly in numpy
                self._redo(call, i)
                continue
            ok = vals[j] > -np.inf
            if excl is not None and excl[i].size:
                ok &= ~np.isin(idx[j], excl[i])
            rows, scores = idx[j][ok], vals[j][ok]
            if self.quantized_query and rows.size:
                scores = self._exact(q[i], rows)
                keep = np.isfinite(scores)
                rows, scores = rows[keep], scores[keep]
                order = order_by_score_then_row(scores, rows)[:width]
                rows, scores = rows[order], scores[order]
            call.put(i, rows[:width], scores[:width])
        return call.result()

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
