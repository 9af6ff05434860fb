"""``edgerec build`` and ``edgerec evaluate`` (extra ``[build]``; torch is imported only when they run).

Example:
    edgerec build --data Beauty.txt --titles item_keywords.tsv --attributes Beauty_item2attributes.json \\
        --out bundles/beauty
    edgerec evaluate bundles/beauty --data Beauty.txt --out-json beauty.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from .._impl.optional import require

__all__ = ["register"]

logger = logging.getLogger(__name__)

_ROWS = ("served_int8", "direct_int8", "float32", "itemknn", "popularity")
#: build flags that override a TrainConfig field when given (flag attribute -> field)
_CONFIG_FLAGS = {"epochs": "max_epochs", "patience": "patience", "samples": "samples", "dropout": "dropout",
                 "batch_size": "batch_size", "lr": "lr", "length_pool": "length_pool", "fit": "fit",
                 "negative_boost": "negative_boost", "query_rows": "query_rows",
                 "average_epochs": "average_epochs"}
_COLS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "coverage@10")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``build`` and ``evaluate`` subcommands to the ``edgerec`` parser."""
    b = subparsers.add_parser("build", help="train a model on interaction data and write a bundle")
    b.add_argument("--data", required=True, help="one-user-per-line sequences, or a CSV/JSONL event log")
    b.add_argument("--titles", help="titles table (TSV/CSV with a header; an 'asin' column gives external ids)")
    b.add_argument("--attributes", help='item attributes JSON {"item": [attr, ...]} (catalog category)')
    b.add_argument("--out", required=True, help="bundle directory to write")
    b.add_argument("--epochs", type=int, default=None, help="max epochs of the search fit (default 200)")
    b.add_argument("--patience", type=int, default=None, help="epochs without improvement before stopping")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    b.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="train on the CPU (default), a CUDA GPU, or auto: CUDA when torch sees one")
    b.add_argument("--samples", choices=("prefixes", "sequences"), default=None,
                   help="training rows: every prefix with its next item (default), or one row per user with a "
                        "target at every position (the earlier recipe, for ablations)")
    b.add_argument("--dropout", type=float, default=None, help="dropout rate (default 0.5)")
    b.add_argument("--batch-size", type=int, default=None, help="training rows per step (default 256)")
    b.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    b.add_argument("--fit", choices=("single", "refit", "search"), default=None,
                   help="single (default): one fit, a sample of the users held out on seq[:-2] to choose the "
                        "epoch; refit: a search fit on seq[:-2], then a refit on seq[:-1] (the earlier recipe); "
                        "search: the search fit alone")
    b.add_argument("--no-refit", dest="fit", action="store_const", const="search", help="the same as --fit search")
    b.add_argument("--length-pool", type=int, default=None,
                   help="0 (default): batches of equal-length rows; n: sort by length inside random pools of "
                        "n batches (the earlier recipe used 50; 1 = random batches)")
    b.add_argument("--negative-boost", type=float, default=None,
                   help="event logs: each non-clicked impression or explicit negative of a user counts 1 + this "
                        "many times in the softmax denominator of the user's rows (default 1; 0 = off)")
    b.add_argument("--item-text", action=argparse.BooleanOptionalAction, default=None,
                   help="text tower: titles/attributes in the item vectors and a query input (tokenizer trained "
                        "at build time); default on whenever --titles or --attributes is given")
    b.add_argument("--query-rows", type=int, default=None,
                   help="text tower: rows of each batch whose pseudo query is trained (default 64; 0 = all)")
    b.add_argument("--average-epochs", type=float, default=None,
                   help="validate and export a moving average of the weights over about this many epochs "
                        "(0 = the last step's weights)")
    b.add_argument("--no-evaluate", action="store_true", help="skip the leave-one-out evaluation")
    b.add_argument("--no-baselines", action="store_true", help="skip popularity and ItemKNN")
    b.add_argument("--report", help="report directory (default <out>-report)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing bundle directory")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.add_argument("--out-json", help="also write the metrics to this file")
    b.set_defaults(func=_cmd_build)

    r = subparsers.add_parser("ranker", help="the second-stage CTR ranker")
    r_sub = r.add_subparsers(dest="ranker_command", required=True)
    rt = r_sub.add_parser("train", help="fit the ranker on exported impressions and clicks; write a new bundle")
    rt.add_argument("--bundle", required=True, help="the bundle whose answers were logged")
    rt.add_argument("--events", required=True, help="`edgerec hub export-events` output (CSV or JSON lines)")
    rt.add_argument("--out", required=True, help="new bundle directory (the bundle plus its ranker)")
    rt.add_argument("--signing-key", default=None, help="HMAC key (default: $EDGEREC_SIGNING_KEY)")
    rt.add_argument("--l2", type=float, default=1.0, help="L2 penalty of the logistic regression (default 1)")
    rt.set_defaults(func=_cmd_ranker_train)

    e = subparsers.add_parser("evaluate", help="leave-one-out full-ranking evaluation on the served path")
    e.add_argument("bundle", help="bundle directory")
    e.add_argument("--data", required=True, help="the data file the bundle was built from")
    e.add_argument("--out-json", help="write the metrics to this file")
    e.add_argument("--no-baselines", action="store_true", help="skip popularity and ItemKNN")
    e.add_argument("--no-write", action="store_true", help="do not store the metrics in the manifest")
    e.add_argument("--query-intent", action="store_true",
                   help="instead: HR@10 with a 2-3 word title query vs without (warm and cold users), the "
                        "query path's latency, and the cold-item slice (targets with <= 5 training events)")
    e.add_argument("--users", type=int, default=2000, help="test users sampled for --query-intent")
    e.add_argument("--seed", type=int, default=0, help="sampling seed for --query-intent")
    e.add_argument("--query-match-weight", type=float, default=None,
                   help="RecommenderConfig.query_match_weight for --query-intent (default: the config's, 1)")
    e.add_argument("--split", choices=("test", "valid"), default="test",
                   help="--query-intent on the test targets (default) or the validation targets, to choose a setting")
    e.add_argument("--query-weight", type=float, default=None,
                   help="RecommenderConfig.query_weight for --query-intent (default: the config's, 0.5)")
    e.set_defaults(func=_cmd_evaluate)


def _table(metrics: dict[str, Any]) -> str:
    test = metrics.get("test", {})
    lines = ["model          " + " ".join(f"{c:>11}" for c in _COLS)]
    for name in _ROWS:
        m = test.get(name)
        if isinstance(m, dict):
            lines.append(f"{name:<15}" + " ".join(f"{m.get(c, float('nan')):>11.4f}" for c in _COLS))
    rel = metrics.get("int8_vs_float32_ndcg10_rel")
    if rel is not None:
        lines.append(f"int8 vs float32 NDCG@10: {rel * 100:+.2f} %")
    return "\n".join(lines) + "\n"


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")


def _cmd_ranker_train(args: argparse.Namespace) -> int:
    require("onnx", extra="build")
    import os

    from .ranker import train_ranker

    key = args.signing_key if args.signing_key is not None else os.environ.get("EDGEREC_SIGNING_KEY")
    report = train_ranker(args.bundle, args.events, args.out, signing_key=key, l2=args.l2)
    held = report.get("holdout", {})
    sys.stdout.write(f"ranker: {report['rows']} shown items, {report['clicks']} clicks; held-out AUC "
                     f"{held.get('auc', float('nan')):.3f}; bundle written to {args.out}\n")
    for b in held.get("calibration", []):
        sys.stdout.write(f"  expected {b['expected']:.4f}  observed {b['observed']:.4f}  (n={b['n']})\n")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    require("torch", extra="build")
    require("onnx", extra="build")
    from .pipeline import build_bundle
    from .train import TrainConfig, resolve_device

    resolve_device(args.device)  # a missing GPU is refused before any data is read
    overrides: dict[str, Any] = {"seed": args.seed, "threads": args.threads, "device": args.device}
    for flag, name in _CONFIG_FLAGS.items():
        if getattr(args, flag) is not None:
            overrides[name] = getattr(args, flag)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    res = build_bundle(
        args.data,
        args.out,
        titles=args.titles,
        attributes=args.attributes,
        config=TrainConfig(**overrides),
        item_text=args.item_text,
        evaluate=not args.no_evaluate,
        baselines=not args.no_baselines,
        report_dir=args.report,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    out = sys.stdout
    out.write(f"bundle: {res.bundle_dir}\n")
    if res.report_path:
        out.write(f"report: {res.report_path}\n")
    out.write("timings (s): " + ", ".join(f"{k}={v:.0f}" for k, v in res.timings_s.items()) + "\n")
    if res.metrics.get("test"):
        out.write(_table(res.metrics))
    _write_json(args.out_json, {**res.metrics, "timings_s": res.timings_s})
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_bundle

    if args.query_intent:
        from .query_eval import evaluate_query_intent

        qi = evaluate_query_intent(args.bundle, args.data, users=args.users, seed=args.seed,
                                   query_weight=args.query_weight, part=args.split,
                                   query_match_weight=args.query_match_weight)
        sys.stdout.write(f"query intent on {qi['users']} {args.split} users ({qi['bundle']}, text tower: "
                         f"{qi['text_tower']}, query_weight {qi['query_weight']}, "
                         f"query_match_weight {qi['query_match_weight']})\n")
        for side in ("warm", "cold"):
            m = qi[side]
            sys.stdout.write(f"  {side}: HR@10 {m['HR@10']:.4f} -> {m['HR@10_query']:.4f} with the query "
                             f"(x{m['ratio']})\n")
        for name, lat in qi["latency"].items():
            sys.stdout.write(f"  latency {name}: p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms\n")
        ci = qi["cold_items"]
        sys.stdout.write(f"  cold-item slice ({ci['targets']} targets, <= {ci['max_train_events']} training "
                         f"events): HR@10 {ci['HR@10']:.4f}\n")
        _write_json(args.out_json, qi)
        return 0

    metrics = evaluate_bundle(args.bundle, args.data, baselines=not args.no_baselines, write=not args.no_write)
    sys.stdout.write(_table(metrics))
    _write_json(args.out_json, metrics)
    return 0
