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

``--vectors`` scores the float32 model with its item table three ways instead: float32 (the table inside the
float32 ONNX model), per-row int8 (what bundles store) and float16, so the item vectors' share of the int8 loss
is measured apart from the encoder's (results in ``quantization_vectors.jsonl``; ``--bundle`` and ``--data`` may
repeat, pairwise). ``--part test`` scores the test items (history ``seq[:-1]``) instead of the validation ones,
the split `docs/quality.md` reports.

Without a build at hand, ``--train-epochs N`` trains a model here instead (the default recipe, N epochs on
``seq[:-2]``, no refit, so the validation targets are unseen) and quantizes that.

Usage:
    python benchmarks/bench_quantization.py --bundle DIR --data FILE
    python benchmarks/bench_quantization.py --vectors --part test --bundle DIR --data FILE [--bundle DIR2 --data FILE2 ...]
    python benchmarks/bench_quantization.py --train-epochs 10 --data FILE [--titles T --attributes A]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _bench import RESULTS, emit, start

from edgerec_sdk.bundle import load_bundle
from edgerec_sdk.train.data import leave_one_out, read_interactions
from edgerec_sdk.train.evaluate import Holdout, _row_map, evaluate_direct, holdout
from edgerec_sdk.train.export import quantize

SCHEMES = {
    "matmul per tensor, tables int8": (False, ["MatMul", "Gemm", "Gather"]),
    "matmul per channel, tables int8": (True, ["MatMul", "Gemm", "Gather"]),
    "matmul per tensor, tables float32": (False, ["MatMul", "Gemm"]),
    "matmul per channel, tables float32": (True, ["MatMul", "Gemm"]),
}


def trained_model(args: argparse.Namespace, data_arg: str) -> tuple[bytes, np.ndarray, Holdout, int, str]:
    """A model trained here: float32 ONNX bytes, int8-dequantized item vectors, validation users, max_len, name."""
    from edgerec_sdk.bundle import quantize_rows_int8
    from edgerec_sdk.train.export import export_model
    from edgerec_sdk.train.metadata import item_metadata
    from edgerec_sdk.train.samples import pad_left
    from edgerec_sdk.train.text import encode_items, train_tokenizer
    from edgerec_sdk.train.train import TrainConfig, train

    data = read_interactions(data_arg)
    tokens, vocab = None, 0
    if args.titles or args.attributes:
        meta = item_metadata(data, titles_path=args.titles, attributes_path=args.attributes)
        tok = train_tokenizer(meta.titles, meta.attributes)
        tokens, vocab = encode_items(tok, meta.titles, meta.attributes), tok.get_vocab_size()
    cfg = TrainConfig(max_epochs=args.train_epochs, patience=args.train_epochs, fit="search", threads=1)
    result = train(leave_one_out(data.sequences), data.n_items, cfg, item_tokens=tokens, vocab_size=vocab,
                   progress=False)
    ts = holdout(data, part="valid")
    pick = np.random.default_rng(0).choice(len(ts.histories), size=min(1024, len(ts.histories)), replace=False)
    exported = export_model(result.model, pad_left([ts.histories[i] for i in pick], cfg.max_len))
    q, scales = quantize_rows_int8(exported.vectors)
    name = f"{Path(data_arg).stem}, {args.train_epochs} epochs{', text' if tokens is not None else ''}"
    return exported.float_bytes, q.astype(np.float32) * scales[:, None], ts, cfg.max_len, name


def built_model(args: argparse.Namespace, bundle_arg: str, data_arg: str) -> tuple[bytes, np.ndarray, Holdout, int, str]:
    """A build's float32 model (kept in its report dir), its bundle's int8 item vectors, validation users."""
    bundle_dir = Path(bundle_arg)
    float_path = Path(args.float_model or bundle_dir.parent / f"{bundle_dir.name}-report" / "interest.float32.onnx")
    bundle = load_bundle(bundle_dir)
    data = read_interactions(data_arg)
    ts = holdout(data, _row_map(bundle_dir, data), n_items=bundle.manifest.n_items, part=args.part)
    vectors = bundle.vectors.rows_f32(np.arange(bundle.manifest.n_items, dtype=np.int64))
    return float_path.read_bytes(), vectors, ts, bundle.manifest.max_seq_len, bundle.model_version


def table_vectors(float_bytes: bytes) -> np.ndarray:
    """The float32 item vectors inside an exported float32 model (its ``table`` initializer, padding row dropped)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(float_bytes).graph
    table = next((t for t in graph.initializer if t.name == "table"), None)
    if table is None:
        raise SystemExit("the float32 model has no 'table' initializer (not an edgerec export?)")
    return np.asarray(numpy_helper.to_array(table), dtype=np.float32)[1:]


def vector_rows(float_bytes: bytes, ts: Holdout, max_len: int, model: str) -> None:
    """The float32 model scored with float32, per-row int8 and float16 item vectors."""
    from edgerec_sdk.bundle import quantize_rows_int8

    exact = table_vectors(float_bytes)
    q, scales = quantize_rows_int8(exact)
    variants = {"float32": exact, "int8 per row": q.astype(np.float32) * scales[:, None],
                "float16": exact.astype(np.float16).astype(np.float32)}
    # per-row int8 suffers when a few dimensions dwarf the rest: the row's scale follows its largest entry
    col_rms = np.sqrt((exact.astype(np.float64) ** 2).mean(axis=0))
    spread = {"column_rms_max": float(col_rms.max()), "column_rms_median": float(np.median(col_rms))}
    base = None
    for name, vectors in variants.items():
        m = evaluate_direct(float_bytes, vectors, ts, max_len=max_len)
        base = base or m["NDCG@10"]
        rel = np.linalg.norm(vectors - exact, axis=1) / np.maximum(np.linalg.norm(exact, axis=1), 1e-12)
        emit(bench="quantization_vectors", model=model, vectors=name, users=int(m["users"]), ndcg10=m["NDCG@10"],
             hr10=m["HR@10"], ndcg10_rel=m["NDCG@10"] / base - 1, vectors_mean_rel_l2=float(rel.mean()), **spread)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, action="append",
                    help="the data file (the one the bundle was built from); with --vectors, one per --bundle")
    ap.add_argument("--bundle", action="append",
                    help="a bundle built by `edgerec build` (its report dir beside it); repeatable with --vectors")
    ap.add_argument("--float-model", help="default: <bundle>-report/interest.float32.onnx")
    ap.add_argument("--train-epochs", type=int, help="train a model here for this many epochs instead of --bundle")
    ap.add_argument("--titles", help="with --train-epochs: titles table (a text tower)")
    ap.add_argument("--attributes", help="with --train-epochs: attributes JSON")
    ap.add_argument("--vectors", action="store_true",
                    help="score the float32 model with float32, int8 and float16 item vectors (not the schemes)")
    ap.add_argument("--part", choices=("valid", "test"), default="valid",
                    help="with --bundle: the leave-one-out items scored (default valid)")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="results file, replaced when the run completes (default: benchmarks/results/"
                         "quantization.jsonl, quantization_vectors.jsonl with --vectors; '-' for stdout only)")
    args = ap.parse_args(argv)
    if (args.bundle is None) == (args.train_epochs is None):
        ap.error("give exactly one of --bundle and --train-epochs")
    sources = len(args.bundle) if args.bundle else 1
    if len(args.data) != sources or (sources > 1 and not args.vectors):
        ap.error("one --data per --bundle (one with --train-epochs), and several bundles only with --vectors")
    start(args.out or str(RESULTS / ("quantization_vectors.jsonl" if args.vectors else "quantization.jsonl")))
    if args.train_epochs:
        models = iter([trained_model(args, args.data[0])])
    else:  # one bundle at a time: each holds its data set's holdout in memory
        models = (built_model(args, b, d) for b, d in zip(args.bundle, args.data, strict=True))
    for float_bytes, vectors, ts, max_len, model in models:
        if args.vectors:
            vector_rows(float_bytes, ts, max_len, model)
        else:
            scheme_rows(float_bytes, vectors, ts, max_len, model)
    return 0


def scheme_rows(float_bytes: bytes, vectors: np.ndarray, ts: Holdout, max_len: int, model: str) -> None:
    """The float32 model and each quantization scheme of it, scored with the same item vectors."""
    base = evaluate_direct(float_bytes, vectors, ts, max_len=max_len)
    emit(bench="quantization", model=model, scheme="float32", users=int(base["users"]),
         ndcg10=base["NDCG@10"], hr10=base["HR@10"], ndcg10_rel=0.0, model_bytes=len(float_bytes))
    for name, (per_channel, ops) in SCHEMES.items():
        q = quantize(float_bytes, ops, per_channel=per_channel)
        m = evaluate_direct(q, vectors, ts, max_len=max_len)
        emit(bench="quantization", model=model, scheme=name, users=int(m["users"]),
             ndcg10=m["NDCG@10"], hr10=m["HR@10"], ndcg10_rel=m["NDCG@10"] / base["NDCG@10"] - 1,
             model_bytes=len(q))


if __name__ == "__main__":
    raise SystemExit(main())
