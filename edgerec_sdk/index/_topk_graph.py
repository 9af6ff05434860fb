"""The onnxruntime top-K graphs of :class:`~edgerec_sdk.index.OnnxTopKIndex` (shapes explained there)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _onnx_proto as pb

__all__ = ["BLOCK", "BLOCKED_MIN_ROWS", "blocked", "build_graph", "float32_items"]

BLOCK = 256
"""Rows per block of the two-stage selection (graph and :func:`~edgerec_sdk.index.onnx_topk._select`)."""


BLOCKED_MIN_ROWS = 65_536
"""Catalog size from which the int8 graph selects in two stages. Below it a flat TopK is as fast, and the
blocked graph gains nothing (100k rows: 1.38 vs 1.32 ms flat, ``benchmarks/bench_graph_variants.py``) and its
padding candidates cost the demo bundle 0.3 ms per ``search()`` in its first version."""


def blocked(n_items: int) -> bool:
    """Whether the int8 graph of ``n_items`` rows uses the two-stage selection."""
    return n_items >= BLOCKED_MIN_ROWS


def build_graph(
    values: NDArray[Any], scales: NDArray[np.float32] | None, *, int8: bool, bound: bool = False
) -> bytes:
    n, d = values.shape
    inputs = [pb.value_info("q", pb.FLOAT, ["b", d]), pb.value_info("k", pb.INT64, [1])]
    if int8:
        if scales is None:  # internal invariant: int8 values always come with scales
            raise RuntimeError("internal invariant broken: scales is None")
        if not blocked(n):
            nodes = [*_int8_scores(), pb.node("TopK", ["s", "k"], ["vals", "idx"])]
            inits = [pb.tensor("Wt", np.ascontiguousarray(values.T)), pb.tensor("ws", scales)]
            return pb.model(nodes, inputs, _outputs("idx", n), inits, opsets={"": 17})
        # Padded to whole blocks with zero rows (score exactly 0, row >= n: dropped after the graph).
        padded = -(-n // BLOCK) * BLOCK
        wt = np.zeros((d, padded), np.int8)
        wt[:, :n] = values.T
        ws = np.zeros(padded, np.float32)
        ws[:n] = scales
        nodes = [
            *_int8_scores(),
            # Two-stage TopK (see _select): block maxima, the best ``kb`` blocks, TopK inside them.
            pb.node("Reshape", ["s", "blocks_shape"], ["s3"]),
            pb.node("ReduceMax", ["s3", "last_axis"], ["bmax"], keepdims=0),
            pb.node("TopK", ["bmax", "kb"], ["bvals", "blocks"]),
            pb.node("Unsqueeze", ["blocks", "last_axis"], ["blocks3"]),
            pb.node("GatherND", ["s3", "blocks3"], ["cand3"], batch_dims=1),
            pb.node("Reshape", ["cand3", "flat_shape"], ["cand"]),
            pb.node("TopK", ["cand", "k"], ["vals", "local"]),
        ]
        inits = [
            pb.tensor("Wt", wt),
            pb.tensor("ws", ws),
            pb.tensor("blocks_shape", np.array([0, padded // BLOCK, BLOCK], np.int64)),
            pb.tensor("flat_shape", np.array([0, -1], np.int64)),
            pb.tensor("last_axis", np.array([2], np.int64)),
        ]
        inputs.append(pb.value_info("kb", pb.INT64, [1]))
        outputs = _outputs("local", padded)
        outputs.insert(2, pb.value_info("blocks", pb.INT64, ["b", "kb_out"]))
        return pb.model(nodes, inputs, outputs, inits, opsets={"": 18})
    nodes = [pb.node("Gemm", ["q", "W"], ["s"], transB=1), pb.node("TopK", ["s", "k"], ["vals", "idx"])]
    inits = [] if bound else [pb.tensor("W", float32_items(values, scales))]
    if bound:
        inputs.append(pb.value_info("W", pb.FLOAT, [n, d]))
    return pb.model(nodes, inputs, _outputs("idx", n), inits, opsets={"": 17})


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
