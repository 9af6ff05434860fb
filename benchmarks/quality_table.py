"""Print the quality table of trained bundles: one JSON line per (dataset, model) and a Markdown table.

Reads the metrics that ``edgerec build`` / ``edgerec evaluate`` stored in each bundle's manifest; with
``--evaluate DATA`` it re-runs the served-path evaluation first (one DATA per bundle, same order).

Usage:
    python benchmarks/quality_table.py runs/beauty runs/toys runs/games
    python benchmarks/quality_table.py runs/beauty --evaluate $EDGEREC_DATA_DIR/amazon_beauty/Beauty.txt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "coverage@10")
ROWS = ("served_int8", "float32", "itemknn", "popularity")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--evaluate", nargs="*", default=None, help="data files to re-evaluate on (one per bundle)")
    args = ap.parse_args(argv)
    if args.evaluate:
        from edgerec_sdk.train.evaluate import evaluate_bundle

        for bundle, data in zip(args.bundles, args.evaluate, strict=False):
            evaluate_bundle(bundle, data)
    table = ["| dataset | model | " + " | ".join(COLS) + " |", "|---|---|" + "---|" * len(COLS)]
    for bundle in args.bundles:
        manifest = json.loads((Path(bundle) / "manifest.json").read_text())
        metrics = manifest.get("metrics", {})
        extra = manifest.get("extra", {})
        name = extra.get("data", {}).get("file", Path(bundle).name)
        timings = extra.get("timings_s", {})
        for row in ROWS:
            m = metrics.get("test", {}).get(row)
            if not m:
                continue
            sys.stdout.write(json.dumps({"dataset": name, "model": row, **{c: m.get(c) for c in COLS},
                                         "users": m.get("users"), "model_version": manifest["model_version"],
                                         "train_s": timings.get("train_s")}) + "\n")
            table.append(f"| {name} | {row} | " + " | ".join(f"{m.get(c, float('nan')):.4f}" for c in COLS) + " |")
        rel = metrics.get("int8_vs_float32_ndcg10_rel")
        if rel is not None:
            sys.stdout.write(json.dumps({"dataset": name, "int8_vs_float32_ndcg10_rel": rel,
                                         "best_epoch": extra.get("best_epoch"), "timings_s": timings}) + "\n")
    sys.stdout.write("\n" + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
