"""Render ``bench_kernels.py`` JSON lines as the Markdown tables of docs/benchmarks.md.

One table per dimension: every exact backend x size x batch x K (median, p99, queries per second, GB/s
scanned, multiple of the read-bandwidth floor, recall against the SDK's exact answer), then the per-size
summary (SDK best single query against faiss ``IndexFlatIP``).

Usage::

    python benchmarks/bench_kernels.py --sizes 100000 1000000 5000000 --dims 64 128 --ann-sizes > grid.jsonl
    python benchmarks/kernel_table.py grid.jsonl
    python benchmarks/kernel_table.py --compact peers.jsonl sdk.jsonl   # merged; a later run's rows win
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def render(lines: list[dict[str, Any]]) -> str:
    exact = [x for x in lines if x.get("bench") == "kernel" and x.get("kind") == "exact"]
    summaries = [x for x in lines if x.get("bench") == "kernel_summary" and x.get("kind") == "exact"]
    out: list[str] = []
    for d in sorted({x["d"] for x in exact}):
        out += [f"d = {d}:", "",
                "| backend | n | batch | k | median ms | p99 ms | qps | scanned GB/s | x floor | recall |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        rows = sorted((x for x in exact if x["d"] == d), key=lambda x: (x["n"], x["backend"], x["batch"], x["k"]))
        for x in rows:
            out.append(
                f"| {x['backend']} | {_size(x['n'])} | {x['batch']} | {x['k']} | {x['median_ms']:.2f} | "
                f"{x['p99_ms']:.2f} | {x['qps']:,.0f} | {x['scanned_gbps']} | {x['x_floor']} | "
                f"{x['recall_vs_sdk_exact']} |"
            )
        out.append("")
    if summaries:
        out += ["| n | d | SDK best ms | faiss IndexFlatIP ms | ratio | floor ms | x floor |",
                "|---|---|---|---|---|---|---|"]
        for x in sorted(summaries, key=lambda x: (x["d"], x["n"])):
            out.append(f"| {_size(x['n'])} | {x['d']} | {x['sdk_best_ms']:.2f} | {x['faiss_flat_ms']:.2f} | "
                       f"{x['ratio_vs_faiss_flat']} | {x['floor_ms']} | {x['x_floor']} |")
    return "\n".join(out)


def render_compact(lines: list[dict[str, Any]], k: int = 10) -> str:
    """One table: a row per (d, n, batch), a column per backend: median ms per call at ``k``."""
    exact = [x for x in lines if x.get("bench") == "kernel" and x.get("kind") == "exact" and x["k"] == k]
    cell = {(x["backend"], x["d"], x["n"], x["batch"]): x["median_ms"] for x in exact}
    backends = sorted({x["backend"] for x in exact})
    out = ["| d | n | batch | " + " | ".join(backends) + " |", "|---|---|---|" + "---|" * len(backends)]
    for d, n, b in sorted({(x["d"], x["n"], x["batch"]) for x in exact}):
        vals = [cell.get((name, d, n, b)) for name in backends]
        best = min(v for v in vals if v is not None)
        shown = ["" if v is None else (f"**{v:,.1f}**" if v == best else f"{v:,.1f}") for v in vals]
        out.append(f"| {d} | {_size(n)} | {b} | " + " | ".join(shown) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", type=Path, nargs="+", help="one or more runs (with --compact a later run's row replaces an earlier one)")
    ap.add_argument("--compact", action="store_true", help="one (d, n, batch) x backend table of medians")
    args = ap.parse_args(argv)
    lines = [json.loads(s) for f in args.jsonl for s in f.read_text().splitlines() if s.startswith("{")]
    print(render_compact(lines) if args.compact else render(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
