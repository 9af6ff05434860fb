"""The onnxruntime top-K graphs of :class:`~edgerec_sdk.index.OnnxTopKIndex` (shapes explained there)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _onnx_proto as pb

__all__ = ["BLOCK", "BLOCKED_MIN_ROWS", "block_order", "blocked", "build_graph", "float32_items"]

BLOCK = 256
"""Rows per block of the two-stage selection (graph and :func:`~edgerec_sdk.index.onnx_topk._select`)."""


BLOCKED_MIN_ROWS = 65_536
"""Catalog size from which the int8 graph selects in two stages. Below it a flat TopK is as fast, and the
blocked graph gains nothing (100k rows: 1.38 vs 1.32 ms flat, ``benchmarks/bench_graph_variants.py``) and its
padding candidates cost the demo bundle 0.3 ms per ``search()`` in its first version."""


def blocked(n_items: int) -> bool:
    """Whether the int8 graph of ``n_items`` rows uses the two-stage selection."""
    return n_items >= BLOCKED_MIN_ROWS


def block_order(scales: NDArray[np.float32]) -> NDArray[np.int64]:
    """Row at each column of the blocked int8 graph: rows by ascending scale, padded to whole blocks by
    repeating the last row.

    Sorting makes the rows of a block share nearly one scale, so an int32 block maximum times the block's
    largest (or, when negative, smallest) scale bounds every score in it tightly, and the graph never
    scales the million scores it does not keep. Padding with a real row keeps that bound a bound on real
    scores (zero rows would put a 0 into every bound of an all-negative query).
    """
    n = int(scales.shape[0])
    order = np.argsort(scales, kind="stable")
    padded = -(-n // BLOCK) * BLOCK
    return np.concatenate((order, np.full(padded - n, order[-1], order.dtype))).astype(np.int64, copy=False)


def build_graph(
    values: NDArray[Any],
    scales: NDArray[np.float32] | None,
    *,
    int8: bool,
    bound: bool = False,
    order: NDArray[np.int64] | None = None,
) -> bytes:
    """The top-K graph; ``order`` (from :func:`block_order`) is required for a blocked int8 graph."""
    n, d = values.shape
    inputs = [pb.value_info("q", pb.FLOAT, ["b", d]), pb.value_info("k", pb.INT64, [1])]
    if int8:
        if scales is None:  # internal invariant: int8 values always come with scales
            raise RuntimeError("internal invariant broken: scales is None")
        if not blocked(n):
            nodes = [*_int8_scores(), pb.node("TopK", ["s", "k"], ["vals", "idx"])]
            inits = [pb.tensor("Wt", np.ascontiguousarray(values.T)), pb.tensor("ws", scales)]
            return pb.model(nodes, inputs, _outputs("idx", n), inits, opsets={"": 17})
        if order is None:  # internal invariant: the index computes the order once and keeps it
            raise RuntimeError("internal invariant broken: blocked graph without a column order")
        return _blocked_int8_graph(values, scales, order, inputs)
    nodes = [pb.node("Gemm", ["q", "W"], ["s"], transB=1), pb.node("TopK", ["s", "k"], ["vals", "idx"])]
    inits = [] if bound else [pb.tensor("W", float32_items(values, scales))]
    if bound:
        inputs.append(pb.value_info("W", pb.FLOAT, [n, d]))
    return pb.model(nodes, inputs, _outputs("idx", n), inits, opsets={"": 17})


def _blocked_int8_graph(
    values: NDArray[Any], scales: NDArray[np.float32], order: NDArray[np.int64], inputs: list[pb.Chunks]
) -> bytes:
    """Two-stage int8 graph over columns in :func:`block_order` (see ``onnx_topk._topk`` for the check
    that makes its answer exact)."""
    padded = order.shape[0]
    nb = padded // BLOCK
    wt = np.ascontiguousarray(np.asarray(values)[order].T)
    ws = np.ascontiguousarray(scales[order].reshape(nb, BLOCK), dtype=np.float32)
    nodes = [
        pb.node("DynamicQuantizeLinear", ["q"], ["qa", "qs", "qz"]),
        pb.node("MatMulInteger", ["qa", "Wt", "qz"], ["si"]),
        pb.node("Reshape", ["si", "blocks_shape"], ["si3"]),
        pb.node("ReduceMax", ["si3", "last_axis"], ["imax"], keepdims=0),
        # Upper bound of each block's scores: its int32 maximum times its largest scale (smallest when the
        # maximum is negative), i.e. the larger of the two products.
        pb.node("Cast", ["imax"], ["fmax"], to=pb.FLOAT),
        pb.node("Mul", ["fmax", "hi"], ["ub_hi"]),
        pb.node("Mul", ["fmax", "lo"], ["ub_lo"]),
        pb.node("Max", ["ub_hi", "ub_lo"], ["ub"]),
        pb.node("TopK", ["ub", "kb"], ["bounds", "blocks"]),
        # Only the chosen blocks' scores are scaled.
        pb.node("Unsqueeze", ["blocks", "last_axis"], ["blocks3"]),
        pb.node("GatherND", ["si3", "blocks3"], ["cand_i"], batch_dims=1),
        pb.node("Gather", ["ws", "blocks"], ["cand_ws"], axis=0),
        pb.node("Cast", ["cand_i"], ["cand_f"], to=pb.FLOAT),
        pb.node("Mul", ["cand_f", "cand_ws"], ["cand3"]),
        pb.node("Reshape", ["cand3", "flat_shape"], ["cand"]),
        pb.node("TopK", ["cand", "k"], ["vals", "local"]),
    ]
    inits = [
        pb.tensor("Wt", wt),
        pb.tensor("ws", ws),
        pb.tensor("lo", ws.min(axis=1)),
        pb.tensor("hi", ws.max(axis=1)),
        pb.tensor("blocks_shape", np.array([0, nb, BLOCK], np.int64)),
        pb.tensor("flat_shape", np.array([0, -1], np.int64)),
        pb.tensor("last_axis", np.array([2], np.int64)),
    ]
    inputs = [*inputs, pb.value_info("kb", pb.INT64, [1])]
    outputs = [
        pb.value_info("vals", pb.FLOAT, ["b", "k_out"]),
        pb.value_info("local", pb.INT64, ["b", "k_out"]),
        pb.value_info("blocks", pb.INT64, ["b", "kb_out"]),
        pb.value_info("bounds", pb.FLOAT, ["b", "kb_out"]),
        pb.value_info("si", pb.INT32, ["b", padded]),
    ]
    return pb.model(nodes, inputs, outputs, inits, opsets={"": 18})


def _int8_scores() -> list[pb.Chunks]:
    return [
        pb.node("DynamicQuantizeLinear", ["q"], ["qa", "qs", "qz"]),
        pb.node("MatMulInteger", ["qa", "Wt", "qz"], ["si"]),
        pb.node("Cast", ["si"], ["sf"], to=pb.FLOAT),
        pb.node("Mul", ["sf", "ws"], ["s"]),
    ]


def _outputs(index_name: str, n_scores: int) -> list[pb.Chunks]:
    return [
        pb.value_info("vals", pb.FLOAT, ["b", "k_out"]),
        pb.value_info(index_name, pb.INT64, ["b", "k_out"]),
        pb.value_info("s", pb.FLOAT, ["b", n_scores]),
    ]


def float32_items(values: NDArray[Any], scales: NDArray[np.float32] | None) -> NDArray[np.float32]:
    w = values.astype(np.float32)
    if scales is not None:
        w *= scales[:, None]
    return np.ascontiguousarray(w)
