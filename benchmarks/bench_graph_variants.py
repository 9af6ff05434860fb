"""Alternative int8 top-K graphs, timed against each other in one process (JSON lines).

The evidence behind the shape of ``edgerec_sdk/index/_topk_graph.py`` (docs/benchmarks.md, "Why the exact
graph looks the way it does"): every variant scores the same int8 matrix for the same queries, calls are
interleaved (one query per variant in turn) so machine noise hits them alike, and the answers are compared
with the flat graph's. ``--profile`` adds onnxruntime's per-node times for the flat and blocked graphs.

Variants: ``flat`` (DynamicQuantizeLinear, MatMulInteger, Cast, Mul, TopK), ``blocked`` (the same scores,
then block maxima and a TopK over the best blocks: the graph shipped from 65,536 rows until 2026-11-23),
``sorted`` (the graph shipped now, built by ``_topk_graph.build_graph``: columns in ``block_order``, block
maxima taken on the int32 scores and bounded by the block's scales, only the gathered blocks scaled; its
``bound_check_failures`` counts the queries ``OnnxTopKIndex`` would rank from all scores), ``dqmm``
(com.microsoft DynamicQuantizeMatMul), ``mmi2f`` (com.microsoft MatMulIntegerToFloat), ``dequant``
(DequantizeLinear on the int32 scores instead of Cast + Mul, blocked), ``chunked16`` (the matrix split
into 16 column chunks whose block maxima are concatenated, blocked).

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_graph_variants.py --n 1000000 --profile
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from typing import Any

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import add_out_argument, emit, start

from edgerec_sdk.bundle import quantize_rows_int8
from edgerec_sdk.index import _onnx_proto as pb
from edgerec_sdk.index._topk_graph import block_order, build_graph
from edgerec_sdk.index.onnx_topk import _SPARE_BLOCKS

BLOCK = 256
_MS = {"com.microsoft": 1}


def _quant() -> list[Any]:
    return [pb.node("DynamicQuantizeLinear", ["q"], ["qa", "qs", "qz"])]


def _scores() -> list[Any]:
    return [*_quant(), pb.node("MatMulInteger", ["qa", "Wt", "qz"], ["si"]),
            pb.node("Cast", ["si"], ["sf"], to=pb.FLOAT), pb.node("Mul", ["sf", "ws"], ["s"])]


def _two_stage(bm: str = "bm") -> list[Any]:
    """From ``s`` (and block maxima ``bm``): the best ``kb`` blocks, then TopK inside them."""
    return [pb.node("TopK", [bm, "kb"], ["bv", "blocks"]), pb.node("Unsqueeze", ["blocks", "ax"], ["b3"]),
            pb.node("Reshape", ["s", "shape3"], ["s3g"]),
            pb.node("GatherND", ["s3g", "b3"], ["g"], batch_dims=1), pb.node("Reshape", ["g", "shape2"], ["g2"]),
            pb.node("TopK", ["g2", "k"], ["vals", "local"])]


def _block_max(src: str = "s", out: str = "bm") -> list[Any]:
    return [pb.node("Reshape", [src, "shape3"], [src + "3"]),
            pb.node("ReduceMax", [src + "3", "ax"], [out], keepdims=0)]


Spec = tuple[list[Any], list[Any], dict[str, int], bool]  # nodes, initializers, extra opsets, two-stage


def variants(wt: np.ndarray, ws: np.ndarray, chunks: int = 16) -> dict[str, Spec]:
    npad = wt.shape[1]
    nb = npad // BLOCK
    mats = [pb.tensor("Wt", wt), pb.tensor("ws", ws)]
    shapes = [pb.tensor("shape3", np.array([0, nb, BLOCK], np.int64)),
              pb.tensor("shape2", np.array([0, -1], np.int64)), pb.tensor("ax", np.array([2], np.int64))]
    out: dict[str, Spec] = {
        "flat": ([*_scores(), pb.node("TopK", ["s", "k"], ["vals", "idx"])], mats, {}, False),
        "blocked": ([*_scores(), *_block_max(), *_two_stage()], mats + shapes, {}, True),
        "dqmm": ([pb.node("DynamicQuantizeMatMul", ["q", "Wt", "ws"], ["s"], domain="com.microsoft"),
                  pb.node("TopK", ["s", "k"], ["vals", "idx"])], mats, _MS, False),
        "mmi2f": ([*_quant(), pb.node("MatMulIntegerToFloat", ["qa", "Wt", "qs", "ws", "qz"], ["s"],
                                      domain="com.microsoft"),
                   pb.node("TopK", ["s", "k"], ["vals", "idx"])], mats, _MS, False),
        "dequant": ([*_quant(), pb.node("MatMulInteger", ["qa", "Wt", "qz"], ["si"]),
                     pb.node("DequantizeLinear", ["si", "ws"], ["s"], axis=1), *_block_max(), *_two_stage()],
                    mats + shapes, {}, True),
    }
    if npad % (BLOCK * chunks) == 0:
        nc = npad // chunks
        nodes, inits = _quant(), [*shapes, pb.tensor("shape3c", np.array([0, nc // BLOCK, BLOCK], np.int64))]
        for c in range(chunks):
            part = slice(c * nc, (c + 1) * nc)
            inits += [pb.tensor(f"c{c}_Wt", np.ascontiguousarray(wt[:, part])), pb.tensor(f"c{c}_ws", ws[part])]
            nodes += [pb.node("MatMulInteger", ["qa", f"c{c}_Wt", "qz"], [f"c{c}_si"]),
                      pb.node("Cast", [f"c{c}_si"], [f"c{c}_sf"], to=pb.FLOAT),
                      pb.node("Mul", [f"c{c}_sf", f"c{c}_ws"], [f"c{c}_s"]),
                      pb.node("Reshape", [f"c{c}_s", "shape3c"], [f"c{c}_s3"]),
                      pb.node("ReduceMax", [f"c{c}_s3", "ax"], [f"c{c}_bm"], keepdims=0)]
        nodes += [pb.node("Concat", [f"c{c}_bm" for c in range(chunks)], ["bm"], axis=1),
                  pb.node("Concat", [f"c{c}_s" for c in range(chunks)], ["s"], axis=1), *_two_stage()]
        out[f"chunked{chunks}"] = (nodes, inits, {}, True)
    return out


def session(spec: Spec, d: int, *, profile: bool) -> tuple[Any, bool]:
    nodes, inits, opsets, two_stage = spec
    outs = [pb.value_info("vals", pb.FLOAT, ["b", "ko"]),
            pb.value_info("local" if two_stage else "idx", pb.INT64, ["b", "ko"])]
    if two_stage:
        outs.append(pb.value_info("blocks", pb.INT64, ["b", "kbo"]))
    ins = [pb.value_info("q", pb.FLOAT, ["b", d]), pb.value_info("k", pb.INT64, [1])]
    if two_stage:
        ins.append(pb.value_info("kb", pb.INT64, [1]))
    return open_session(pb.model(nodes, ins, outs, inits, opsets={"": 18, **opsets}), profile=profile), two_stage


class Sorted:
    """The shipped blocked graph and the column order it needs (``rows_of`` maps columns back to rows)."""

    def __init__(self, v8: np.ndarray, s8: np.ndarray, *, profile: bool) -> None:
        self.n = v8.shape[0]
        self.order = block_order(s8)
        self.sess = open_session(build_graph(v8, s8, int8=True, order=self.order), profile=profile)
        self.failures = 0

    def rows(self, q: np.ndarray, k: int) -> np.ndarray:
        nb = self.order.shape[0] // BLOCK
        kb = min(nb, k + 1 + _SPARE_BLOCKS)
        feeds = {"q": q, "k": np.array([min(k + self.order.shape[0] - self.n, kb * BLOCK)], np.int64),
                 "kb": np.array([kb], np.int64)}
        vals, local, blocks, bounds = self.sess.run(["vals", "local", "blocks", "bounds"], feeds)
        col = np.take_along_axis(blocks, local // BLOCK, axis=1) * BLOCK + local % BLOCK
        out = []
        for j in range(q.shape[0]):
            real = col[j] < self.n
            self.failures += int(kb < nb and not vals[j][real][k - 1] >= bounds[j, -1])
            out.append(self.order[col[j][real]][:k])
        return np.stack(out)


def open_session(blob: bytes, *, profile: bool) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(os.environ.get("TMPDIR", "/tmp"), "edgerec-graph-profile")
    return ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])


def rows_of(sess: Any, two_stage: bool, q: np.ndarray, k: int, kb: int) -> np.ndarray:
    if isinstance(sess, Sorted):
        return sess.rows(q, k)
    feeds = {"q": q, "k": np.array([k], np.int64)}
    if not two_stage:
        return np.asarray(sess.run(["idx"], feeds)[0])
    feeds["kb"] = np.array([kb], np.int64)
    _, local, blocks = sess.run(["vals", "local", "blocks"], feeds)
    return np.asarray(np.take_along_axis(blocks, local // BLOCK, axis=1) * BLOCK + local % BLOCK)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--k", type=int, default=42, help="candidates fetched (10 + the rescoring margin of 32)")
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--profile", action="store_true", help="per-node times of the flat and blocked graphs")
    add_out_argument(p, "graph_variants")
    args = p.parse_args(argv)
    start(args.out)
    rng = np.random.default_rng(0)
    v8, s8 = quantize_rows_int8(rng.standard_normal((args.n, args.d), dtype=np.float32))
    npad = -(-args.n // (BLOCK * 16)) * BLOCK * 16  # whole blocks, and whole chunks for the chunked variant
    wt = np.zeros((args.d, npad), np.int8)
    wt[:, : args.n] = v8.T
    ws = np.zeros(npad, np.float32)
    ws[: args.n] = s8
    qs = rng.standard_normal((64, args.d), dtype=np.float32)
    kb = args.k + 1
    sessions: dict[str, tuple[Any, bool]] = {
        name: session(spec, args.d, profile=False) for name, spec in variants(wt, ws).items()}
    sessions["sorted"] = (Sorted(v8, s8, profile=False), True)
    ref = rows_of(*sessions["flat"], qs[:8], args.k, kb)
    times: dict[str, list[float]] = defaultdict(list)
    for r in range(args.rounds):
        q = qs[r % 64 : r % 64 + 1]
        for name, (sess, two) in sessions.items():
            t0 = time.perf_counter()
            rows_of(sess, two, q, args.k, kb)
            times[name].append(time.perf_counter() - t0)
    for name, (sess, two) in sessions.items():
        got = rows_of(sess, two, qs[:8], args.k, kb)
        same = float(np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(ref, got, strict=True)]))
        t = np.asarray(times[name]) * 1e3
        extra = {"bound_check_failures": sess.failures, "calls": len(t) + 8} if isinstance(sess, Sorted) else {}
        emit(bench="graph_variant", variant=name, n=args.n, d=args.d, k=args.k, median_ms=round(float(np.median(t)), 3),
             best_ms=round(float(t.min()), 3), top10_overlap_with_flat=same, **extra)
    if args.profile:
        specs = variants(wt, ws)
        for name in ("flat", "blocked", "sorted"):
            sess, two = (Sorted(v8, s8, profile=True), True) if name == "sorted" else session(
                specs[name], args.d, profile=True)
            for r in range(40):
                rows_of(sess, two, qs[r % 64 : r % 64 + 1], args.k, kb)
            path = (sess.sess if isinstance(sess, Sorted) else sess).end_profiling()
            per_node: dict[str, list[float]] = defaultdict(list)
            with open(path) as fh:
                for ev in json.load(fh):
                    if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
                        per_node[ev["name"].removesuffix("_kernel_time")].append(ev["dur"])
            os.unlink(path)
            emit(bench="graph_profile", variant=name, n=args.n, d=args.d,
                 median_us={node: float(np.median(v[5:])) for node, v in per_node.items()})


if __name__ == "__main__":
    main()
