"""How much each int8 quantization scheme of the interest model costs, against its float32 original.

Takes the float32 model a build keeps in its report directory (``<bundle>-report/interest.float32.onnx``) and the
bundle's item vectors, quantizes the model four ways (MatMul/Gemm weights per tensor or per channel, the
embedding-table Gathers quantized or kept float32) and scores each on the leave-one-out validation targets of the
data set (history ``seq[:-2]``, full ranking, seen items excluded). Every row scores with the bundle's int8 item
vectors, so the rows differ in the model only. One JSON line per scheme: NDCG@10, HR@10, the change against the
float32 model, bytes.

Validation targets, not test: the scheme is a build default, chosen without looking at test. A bundle whose final
fit has seen the validation targets scores them high, but every scheme scores the same model on the same users, so
the differences still measure what quantization loses.

Usage:
    python benchmarks/bench_quantization.py --bundle DIR --data FILE
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _bench import add_out_argument, emit, start

from edgerec_sdk.bundle import load_bundle
from edgerec_sdk.train.data import read_interactions
from edgerec_sdk.train.evaluate import _row_map, evaluate_direct, holdout
from edgerec_sdk.train.export import quantize

SCHEMES = {
    "matmul per tensor, tables int8": (False, ["MatMul", "Gemm", "Gather"]),
    "matmul per channel, tables int8": (True, ["MatMul", "Gemm", "Gather"]),
    "matmul per tensor, tables float32": (False, ["MatMul", "Gemm"]),
    "matmul per channel, tables float32": (True, ["MatMul", "Gemm"]),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="a bundle built by `edgerec build` (its report dir beside it)")
    ap.add_argument("--data", required=True, help="the data file the bundle was built from")
    ap.add_argument("--float-model", help="default: <bundle>-report/interest.float32.onnx")
    add_out_argument(ap, "quantization")
    args = ap.parse_args(argv)
    start(args.out)
    bundle_dir = Path(args.bundle)
    float_path = Path(args.float_model or bundle_dir.parent / f"{bundle_dir.name}-report" / "interest.float32.onnx")
    float_bytes = float_path.read_bytes()
    bundle = load_bundle(bundle_dir)
    data = read_interactions(args.data)
    ts = holdout(data, _row_map(bundle_dir, data), n_items=bundle.manifest.n_items, part="valid")
    vectors = bundle.vectors.rows_f32(np.arange(bundle.manifest.n_items, dtype=np.int64))
    max_len = bundle.manifest.max_seq_len
    base = evaluate_direct(float_bytes, vectors, ts, max_len=max_len)
    emit(bench="quantization", bundle=bundle.model_version, scheme="float32", users=int(base["users"]),
         ndcg10=base["NDCG@10"], hr10=base["HR@10"], ndcg10_rel=0.0, model_bytes=len(float_bytes))
    for name, (per_channel, ops) in SCHEMES.items():
        q = quantize(float_bytes, ops, per_channel=per_channel)
        m = evaluate_direct(q, vectors, ts, max_len=max_len)
        emit(bench="quantization", bundle=bundle.model_version, scheme=name, users=int(m["users"]),
             ndcg10=m["NDCG@10"], hr10=m["HR@10"], ndcg10_rel=m["NDCG@10"] / base["NDCG@10"] - 1,
             model_bytes=len(q))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
