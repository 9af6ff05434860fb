"""The tables and charts of docs/benchmarks.md, made from the current results files.

    python benchmarks/report.py            # rewrite the generated blocks of docs/benchmarks.md and the charts
    python benchmarks/report.py --check    # exit 1 when a block is stale (tests/test_benchmark_report.py)

Each benchmark script writes one current file, ``benchmarks/results/<name>.jsonl`` (``_bench.start``).
docs/benchmarks.md is prose with generated blocks between ``<!-- report:<name> -->`` and
``<!-- /report:<name> -->``; only the blocks are rewritten. A block holds the run line (date, commit,
command, load), the tables, and the chart ``docs/images/bench-<name>.png``.

Adding a benchmark: make its script call ``add_out_argument(parser, NAME)`` and ``start(args.out)``; add a
``NAME_tables(rows) -> list[str]`` and a ``NAME_chart(rows, fig)`` here and one entry in ``BENCHMARKS``; add a
section with the two marker lines to docs/benchmarks.md; run the benchmark, then this script.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "images"
Row = dict[str, Any]


def load(name: str) -> list[Row]:
    path = RESULTS / f"{name}.jsonl"
    return [json.loads(s) for s in path.read_text().splitlines() if s.startswith("{")] if path.exists() else []


def pick(rows: list[Row], bench: str, **match: Any) -> list[Row]:
    return [r for r in rows if r.get("bench") == bench and all(r.get(k) == v for k, v in match.items())]


def size(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def table(head: list[str], body: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in body), ""]


def run_line(name: str, rows: list[Row]) -> list[str]:
    m = rows[0]
    cmd = " ".join(["python", f"benchmarks/{m.get('script', '?')}", *m.get("argv", [])])
    bw = [f"{r['read_bw_gbps']} GB/s at the {r['when']}" for r in pick(rows, "read_bandwidth")]
    env = {k: v for k, v in (m.get("env") or {}).items() if v is not None}
    return [f"Run {m.get('date', '?')} at commit `{m.get('commit', '?')}`: `{cmd}`"
            + (f" ({' '.join(f'{k}={v}' for k, v in env.items())})" if env else "")
            + f"; 1-minute load {m['load1']} at the start" + (f"; read bandwidth {', '.join(bw)}" if bw else "")
            + f". Every line: `benchmarks/results/{name}.jsonl`.", ""]


# -- kernels: the exact grid --------------------------------------------------------------------------------

def kernels_tables(rows: list[Row]) -> list[str]:
    exact = pick(rows, "kernel", kind="exact", k=10)
    backends = sorted({r["backend"] for r in exact})
    cell = {(r["backend"], r["d"], r["n"], r["batch"]): r["median_ms"] for r in exact}
    body = []
    for d, n, b in sorted({(r["d"], r["n"], r["batch"]) for r in exact}):
        vals = [cell.get((x, d, n, b)) for x in backends]
        best = min(v for v in vals if v is not None)
        shown = ["" if v is None else f"{v:,.2f}" if v < 10 else f"{v:,.1f}" for v in vals]
        body.append([d, size(n), b, *(f"**{t}**" if v == best else t for v, t in zip(vals, shown, strict=True))])
    out = ["Median ms per call (a batch is one call), top-10, one thread; fastest in bold:", "",
           *table(["d", "n", "batch", *backends], body),
           "Single query against faiss `IndexFlatIP` and the int8 read-bandwidth floor:", ""]
    summary = sorted(pick(rows, "kernel_summary", kind="exact"), key=lambda r: (r["d"], r["n"]))
    return out + table(["n", "d", "SDK ms", "faiss flat ms", "ratio", "x floor"],
                       [[size(r["n"]), r["d"], f"{r['sdk_best_ms']:.2f}", f"{r['faiss_flat_ms']:.2f}",
                         r["ratio_vs_faiss_flat"], r["x_floor"]] for r in summary])


def kernels_chart(rows: list[Row], fig: Any) -> None:
    dims = sorted({r["d"] for r in pick(rows, "kernel", kind="exact")})
    for i, d in enumerate(dims):
        ax = fig.add_subplot(1, len(dims), i + 1)
        exact = [r for r in pick(rows, "kernel", kind="exact", k=10, batch=1, d=d)]
        for backend in sorted({r["backend"] for r in exact}):
            pts = sorted((r["n"], r["median_ms"]) for r in exact if r["backend"] == backend)
            ax.plot(*zip(*pts, strict=True), marker="o", label=backend)
        floor = sorted((r["n"], r["floor_ms"]) for r in exact if r["backend"] == "sdk-onnx-int8")
        ax.plot(*zip(*floor, strict=True), "k--", label="int8 read floor")
        ax.set(xscale="log", yscale="log", xlabel="items", ylabel="ms per query", title=f"exact top-10, d={d}")
    fig.axes[0].legend(fontsize=7)


# -- acceptance: 1M x 64, exact and approximate ------------------------------------------------------------

def acceptance_tables(rows: list[Row]) -> list[str]:
    exact = sorted(pick(rows, "kernel", kind="exact"), key=lambda r: r["median_ms"])
    out = ["Exact top-10, one query:", "",
           *table(["backend", "median ms", "p99 ms", "x own floor", "recall vs SDK exact"],
                  [[r["backend"], f"{r['median_ms']:.2f}", f"{r['p99_ms']:.2f}", r["x_floor"],
                    r["recall_vs_sdk_exact"]] for r in exact])]
    for s in pick(rows, "kernel_summary", kind="exact"):
        out += [f"SDK / faiss `IndexFlatIP`: **{s['ratio_vs_faiss_flat']}**; the SDK at {s['x_floor']} x the "
                f"int8 read floor ({s['floor_ms']} ms).", ""]
    pairs = [r for r in pick(rows, "kernel_head_to_head") if "median_ratio" in r]
    body = []
    for r in pairs:
        sdk, peer = (r[k] for k in r if isinstance(r[k], dict))
        body.append([f"nprobe {sdk['setting']}", sdk["recall_at_10"], f"{sdk['median_ms']:.3f}",
                     f"ef {peer['setting']}", peer["recall_at_10"], f"{peer['median_ms']:.3f}",
                     f"**{r['median_ratio']}**", r["p99_ratio"]])
    out += ["Approximate, head to head (alternating blocks of the same queries; hnswlib at the smallest ef "
            "reaching the IVF's recall):", "",
            *table(["SDK IVF", "recall@10", "median ms", "hnswlib", "recall@10", "median ms", "median ratio",
                    "p99 ratio"], body)]
    out += [f"Note: {r['note']}." for r in pick(rows, "kernel_head_to_head") if "note" in r]
    for s in pick(rows, "kernel_summary", kind="ann"):
        out += ["", f"The IVF at its tuned setting is **{s['ivf_speedup_vs_sdk_exact']} x** faster than the "
                    "exact kernel."]
    builds = {r["backend"]: r["build_s"] for r in pick(rows, "kernel", kind="ann")}
    sweep = sorted(pick(rows, "kernel", kind="ann"), key=lambda r: (r["backend"], r["setting"]))
    return [*out, "", "Sweep (`setting` = nprobe for IVF, ef for HNSW; each method timed in its own loop, "
                      "so compare across methods with the head-to-head above):", "",
            *table(["backend", "setting", "recall@10", "median ms", "p99 ms", "build s"],
                   [[r["backend"], r["setting"], r["recall_at_10"], f"{r['median_ms']:.3f}",
                     f"{r['p99_ms']:.3f}", builds[r["backend"]]] for r in sweep])]


def acceptance_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    sweep = pick(rows, "kernel", kind="ann")
    color = {"sdk-ivf": "C0", "hnswlib": "C1", "faiss-ivf-flat": "C2"}
    for backend in sorted({r["backend"] for r in sweep}):
        pts = sorted((r["recall_at_10"], r["median_ms"]) for r in sweep if r["backend"] == backend)
        ax.plot(*zip(*pts, strict=True), marker="o", color=color.get(backend), label=f"{backend}, sweep")
    for backend, prefix in (("sdk-ivf", "sdk"), ("hnswlib", "hnswlib")):
        pts = [v for r in pick(rows, "kernel_head_to_head") for key, v in r.items()
               if isinstance(v, dict) and key.startswith(prefix)]
        ax.scatter([v["recall_at_10"] for v in pts], [v["median_ms"] for v in pts], marker="*", s=140, zorder=3,
                   color=color[backend], edgecolors="black", label=f"{backend}, head to head")
    ax.set(xlim=(0.9, 1.002), ylim=(0, None), xlabel="recall@10", ylabel="median ms per query",
           title="1M x 64, approximate top-10, one thread")
    ax.legend(fontsize=7)


# -- graph_variants: the exact int8 onnxruntime graph ------------------------------------------------------

def graph_variants_tables(rows: list[Row]) -> list[str]:
    variants = sorted(pick(rows, "graph_variant"), key=lambda r: r["median_ms"])
    out = table(["variant", "median ms", "best ms", "top-10 as flat"],
                [[r["variant"], f"{r['median_ms']:.2f}", f"{r['best_ms']:.2f}", r["top10_overlap_with_flat"]]
                 for r in variants])
    for p in pick(rows, "graph_profile"):
        per_op: dict[str, float] = {}
        for node, us in p["median_us"].items():
            op = re.sub(r"_[0-9]+$", "", node)
            per_op[op] = per_op.get(op, 0.0) + us
        top = sorted(per_op.items(), key=lambda kv: -kv[1])[:5]
        out.append(f"- `{p['variant']}`, µs per op type (onnxruntime profile): "
                   + ", ".join(f"{op} {us:,.0f}" for op, us in top) + f"; all nodes {sum(per_op.values()):,.0f}")
    return [*out, ""]


def graph_variants_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    variants = sorted(pick(rows, "graph_variant"), key=lambda r: -r["median_ms"])
    ax.barh([r["variant"] for r in variants], [r["median_ms"] for r in variants], color="C0")
    ax.set(xlabel="median ms per query", title=f"exact int8 graph variants, {size(variants[0]['n'])} x "
                                                 f"{variants[0]['d']}")


# -- ivf_breakdown: where an IVF query's time goes ---------------------------------------------------------

STEPS = ("centroids", "pick_lists", "copy", "rows_scales", "gemv_scale", "select", "finish")


def ivf_breakdown_tables(rows: list[Row]) -> list[str]:
    out = []
    for b in pick(rows, "ivf_breakdown"):
        out += [f"One query at nprobe {b['nprobe']}, median µs per step (one-round path):", "",
                *table([*STEPS, "steps", "whole search"],
                       [[*(b[f"{s}_us"] for s in STEPS), b["steps_us"], b["search_us"]]]),
                f"Alternatives measured in the same run: centroid scores row-major {b['centroids_row_major_us']} "
                f"µs, lists picked by `argpartition` {b['pick_lists_by_argpartition_us']} µs.", ""]
    tuned = {r["nlist"]: (r["tuned_nprobe"], r["build_s"]) for r in pick(rows, "ivf_build")}
    sweep = sorted(pick(rows, "ivf_sweep"), key=lambda r: (r["nlist"], r["nprobe"]))
    out += ["Recall and time by list count (`tuned`: what the build picked for the target of that commit, "
            "recall 0.95):", ""]
    return out + table(["lists", "build s", "nprobe", "recall@10", "median µs"],
                       [[r["nlist"], tuned[r["nlist"]][1],
                         f"**{r['nprobe']}** (tuned)" if tuned[r["nlist"]][0] == r["nprobe"] else r["nprobe"],
                         r["recall_at_10"], r["median_us"]] for r in sweep])


def ivf_breakdown_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    b = pick(rows, "ivf_breakdown")[0]
    ax.barh(list(reversed(STEPS)), [b[f"{s}_us"] for s in reversed(STEPS)], color="C2")
    ax.set(xlabel="median µs", title=f"IVF query steps, nprobe {b['nprobe']} (whole search {b['search_us']} µs)")


# -- recommend: end to end ---------------------------------------------------------------------------------

def recommend_tables(rows: list[Row]) -> list[str]:
    out = table(["bundle", "items", "index", "nprobe", "p50 ms", "p99 ms", "requests"],
                [[r["bundle"], f"{r['n_items']:,}", f"{r['index']}" + (f" ({r['config']})" if "config" in r else ""),
                  r.get("nprobe") if r["index"] == "IvfIndex" else "", f"{r['median_ms']:.2f}",
                  f"{r['p99_ms']:.2f}", r["calls"]] for r in pick(rows, "recommend")])
    return [*out, *(f"Through `recommend()` the approximate index returns **{r['recall_at_10_vs_exact']:.1%}** of "
                  f"the exact kernel's top-10 ({r['requests']} requests).\n" for r in pick(rows, "recommend_recall"))]


def paired_bars(ax: Any, labels: list[str], left: tuple[str, list[float]], right: tuple[str, list[float]],
                **ticks: Any) -> None:
    """Two bars per case (e.g. p50 and p99) side by side, labelled under each pair."""
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], left[1], 0.4, label=left[0])
    ax.bar([x + 0.2 for x in xs], right[1], 0.4, label=right[0])
    ax.set_xticks(list(xs), labels, **{"fontsize": 8, **ticks})


def recommend_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    cases = pick(rows, "recommend")
    labels = [f"{r['bundle']}\n{r.get('config', r['index'])}" for r in cases]
    paired_bars(ax, labels, ("p50", [r["median_ms"] for r in cases]), ("p99", [r["p99_ms"] for r in cases]))
    ax.set(yscale="log", ylabel="ms per request", title="recommend(), one thread, cache off")
    ax.legend(fontsize=7)


# -- memory: a served 1M bundle and its forked workers -----------------------------------------------------

def _private(r: Row) -> int:
    return int(r.get("Private_Clean_mib", 0) + r.get("Private_Dirty_mib", 0))


def memory_tables(rows: list[Row]) -> list[str]:
    files = {k: v for r in pick(rows, "bundle_files_mib") for k, v in r.items() if k != "bench"}
    out = ["Bundle files (MiB, those of 1 MiB or more): "
           + ", ".join(f"`{k}` {v}" for k, v in sorted(files.items(), key=lambda kv: -kv[1]) if v),
           "", "MiB per process (RSS split into anonymous and file-backed pages; private = pages no other process "
               "shares; workers: the range over the forked workers after 200 requests each):", ""]
    body = []
    for config in dict.fromkeys(r["config"] for r in pick(rows, "memory")):
        stages = pick(rows, "memory", config=config)
        for stage, label in (("bundle_loaded", "after `load_bundle`"), ("loaded", "serving, one process"),
                             ("worker", "each forked worker")):
            got = [r for r in stages if r["stage"] == stage]
            if not got:
                continue

            def span(key: str, rs: list[Row] = got) -> str:
                vals = sorted(_private(r) if key == "private" else r.get(f"{key}_mib", 0) for r in rs)
                return str(vals[0]) if vals[0] == vals[-1] else f"{vals[0]}-{vals[-1]}"

            index = next((r["index"] for r in stages if "index" in r), "")
            body.append([f"{config} ({index})", label, span("VmRSS"), span("RssAnon"), span("RssFile"),
                         span("private"), span("Pss")])
    return out + table(["index", "stage", "RSS", "anonymous", "file-backed", "private", "PSS"], body)


def memory_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    labels, private, shared = [], [], []
    for config in dict.fromkeys(r["config"] for r in pick(rows, "memory")):
        for stage, label in (("loaded", "serving process"), ("worker", "forked worker")):
            got = [r for r in pick(rows, "memory", config=config) if r["stage"] == stage]
            if got:
                labels.append(f"{config}\n{label}")
                private.append(sum(_private(r) for r in got) / len(got))
                shared.append(sum(r["VmRSS_mib"] - _private(r) for r in got) / len(got))
    ax.bar(labels, private, label="private")
    ax.bar(labels, shared, bottom=private, label="shared with other processes")
    ax.set(ylabel="MiB (RSS)", title="1M x 64 bundle: memory per process")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=7)


# -- impressions: what logging adds to recommend() -----------------------------------------------------------

def impressions_tables(rows: list[Row]) -> list[str]:
    out = table(["configuration", "p50 ms", "p99 ms", "requests", "impression rows"],
                [[r["config"], f"{r['median_ms']:.3f}", f"{r['p99_ms']:.2f}", r["calls"], r["impressions_logged"]]
                 for r in pick(rows, "impressions")])
    for r in pick(rows, "impressions_overhead"):
        out += [f"Added to the p50: **{r['on_minus_off_p50_us']:+.1f} us** with logging as shipped, "
                f"{r['on_rotation_minus_off_p50_us']:+.1f} us with logging and the opt-in rotation; the median of the "
                f"back-to-back differences of the same request: {r['on_minus_off_paired_median_us']:+.1f} us and "
                f"{r['on_rotation_minus_off_paired_median_us']:+.1f} us.", ""]
    out += timing_table("added part, timed alone", "part", pick(rows, "impressions_part"), digits=2)
    return out


def timing_table(label: str, key: str, rows: list[Row], *, digits: int) -> list[str]:
    """One row per timed part: its name (``row[key]``), median and p99 in microseconds, calls."""
    return table([label, "median us", "p99 us", "calls"],
                 [[r[key], f"{r['median_us']:.{digits}f}", f"{r['p99_us']:.{digits}f}", r["calls"]] for r in rows])


def impressions_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    cases = pick(rows, "impressions_part")
    paired_bars(ax, [r["part"] for r in cases], ("median", [r["median_us"] for r in cases]),
                ("p99", [r["p99_us"] for r in cases]))
    ax.axhline(20.0, color="grey", linestyle="--", linewidth=1, label="20 us budget")
    ax.set(ylabel="us per request", title="what impression logging adds to recommend()")
    ax.legend(fontsize=7)


# -- hub: ingest and bundle downloads ----------------------------------------------------------------------

def hub_tables(rows: list[Row]) -> list[str]:
    ingest = table(["storage", "hub processes", "events", "events/s (median)", "each round", "batch p50 ms",
                    "batch p99 ms", "/metrics = sent"],
                   [[r["backend"], r["replicas"], f"{r['events']:,}", f"{r['events_per_s']:,.0f}",
                     ", ".join(f"{x:,.0f}" for x in r.get("events_per_s_rounds", [])), r["batch_p50_ms"],
                     r["batch_p99_ms"], {True: "yes", False: "**no**"}.get(r.get("metrics_equal_sent"), "")]
                    for r in pick(rows, "ingest")])
    shape = next(iter(pick(rows, "ingest")), {})
    down = table(["bundle files in", "MB", "median MB/s", "best MB/s"],
                 [[r["storage"], r["mb"], r["mb_per_s"], r["best_mb_per_s"]] for r in pick(rows, "download")])
    return [f"{shape.get('edges')} edges, batches of {shape.get('batch')} events (gzip), "
            f"{shape.get('batches_per_edge')} batches each per round, {shape.get('rounds', 1)} interleaved rounds, hub "
            f"with {shape.get('hub_threads')} threads:", "",
            *ingest, *down]


def hub_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 2, 1)
    cases = pick(rows, "ingest")
    ax.bar([f"{r['backend']}\n{r['replicas']} process" + ("es" if r["replicas"] > 1 else "") for r in cases],
           [r["events_per_s"] for r in cases])
    ax.axhline(5000, color="grey", linestyle="--", linewidth=1, label="target 5,000/s")
    ax.set(ylabel="events/s", title="hub ingest")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    downs = pick(rows, "download")
    ax.bar([r["storage"] for r in downs], [r["mb_per_s"] for r in downs])
    ax.set(ylabel="MB/s (median)", title="bundle file download")
    ax.tick_params(axis="x", labelsize=8)
# -- feedback(): the durable outbox beside the memory-only one ----------------------------------------------

FEEDBACK_VARIANTS = ("memory", "durable", "durable_commit_each")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def feedback_tables(rows: list[Row]) -> list[str]:
    body = []
    for v in FEEDBACK_VARIANTS:
        got = pick(rows, "feedback", variant=v)
        if got:
            body.append([v, len(got), f"{_median([r['p50_us'] for r in got]):.1f}",
                         f"{_median([r['p99_us'] for r in got]):.1f}", f"{_median([r['p999_us'] for r in got]):.0f}",
                         sum(r["over_2ms"] for r in got), sum(r["events"] for r in got),
                         sum(r["accepted"] - r["delivered"] - r["pending"] for r in got)])
    return [*table(["outbox", "runs", "p50 us", "p99 us", "p99.9 us", "calls over 2 ms", "calls", "lost"], body),
            "", "Per run (the load is the 1-minute load when the run ended):", "",
            *table(["round", "outbox", "p50 us", "p99 us", "max us", "load"],
                   [[r["round"], r["variant"], r["p50_us"], r["p99_us"], r["max_us"], r["load1"]]
                    for r in pick(rows, "feedback")])]


def feedback_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    for i, v in enumerate(FEEDBACK_VARIANTS):
        got = pick(rows, "feedback", variant=v)
        ax.scatter([i - 0.1] * len(got), [r["p50_us"] for r in got], color="C0", label="p50" if i == 0 else None)
        ax.scatter([i + 0.1] * len(got), [r["p99_us"] for r in got], color="C1", label="p99" if i == 0 else None)
    ax.axhline(2000.0, color="grey", linestyle="--", linewidth=1, label="p99 target 2 ms")
    ax.axhline(40.0, color="grey", linestyle=":", linewidth=1, label="p50 target 40 us")
    ax.set_yscale("log")
    ax.set_xticks(range(len(FEEDBACK_VARIANTS)), FEEDBACK_VARIANTS, fontsize=8)
    ax.set(ylabel="us per feedback() call", title="feedback() with a hub, per run")
    ax.legend(fontsize=7)


# -- gunicorn shutdown and reload ---------------------------------------------------------------------------

def shutdown_tables(rows: list[Row]) -> list[str]:
    return table(["store", "workers", "preload", "round", "SIGTERM to exit s", "clicks acknowledged", "at hub",
                  "pending", "lost", "SIGHUP reload s", "worker timeouts"],
                 [[r["app"], r["worker_class"], r["preload"], r["round"], r["stop_s"], r["clicks_acknowledged"],
                   r["at_hub"], r["pending"], r["lost"], r["reload_s"], r["worker_timeouts"]]
                  for r in pick(rows, "shutdown")])


def shutdown_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    got = pick(rows, "shutdown")
    labels = [f"{r['app']} {r['worker_class']}{' preload' if r['preload'] else ''} #{r['round']}" for r in got]
    paired_bars(ax, labels, ("SIGTERM to exit", [r["stop_s"] for r in got]),
                ("SIGHUP reload", [r["reload_s"] for r in got]), fontsize=6, rotation=45, ha="right")
    ax.axhline(3.0, color="grey", linestyle="--", linewidth=1, label="3 s target")
    ax.set(ylabel="seconds", title="gunicorn --preload -w 3 under load (was 30 s before fault D21)")
    ax.legend(fontsize=7)


def diversity_tables(rows: list[Row]) -> list[str]:
    out = table(["diversity", "users", "NDCG@10", "HR@10", "ILS@10 (item vectors)", "ILS@10 (categories)"],
                [[r["diversity"], r["users"], f"{r['ndcg10']:.4f}", f"{r['hr10']:.4f}", f"{r['ils10']:.3f}",
                  f"{r['ils10_categories']:.3f}" if r.get("ils10_categories") is not None else "-"]
                 for r in pick(rows, "diversity")])
    for r in pick(rows, "diversity_default"):
        out += [f"The default (diversity {r['diversity']}) against 0: ILS@10 over item vectors "
                f"**{-100 * r['ils_drop_rel']:+.1f} %**, over categories "
                f"**{-100 * r.get('ils_categories_drop_rel', float('nan')):+.1f} %**, NDCG@10 "
                f"**{-100 * r['ndcg10_loss_rel']:+.1f} %**.", ""]
    return out


def diversity_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    cases = pick(rows, "diversity")
    base = next((r for r in cases if r["diversity"] == 0.0), cases[0])
    for key, label in (("ils10", "item vectors"), ("ils10_categories", "categories")):
        pts = [(r[key] / base[key], r["ndcg10"] / base["ndcg10"], r["diversity"]) for r in cases if r.get(key)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"ILS over {label}")
        for x, y, d in pts:
            ax.annotate(f"{d:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.95, color="grey", linestyle="--", linewidth=1, label="5 % NDCG loss")
    ax.axvline(0.70, color="grey", linestyle=":", linewidth=1, label="30 % lower ILS")
    ax.set(xlabel="ILS@10 relative to diversity 0", ylabel="NDCG@10 relative to diversity 0",
           title="diversity knob: similarity against accuracy (labels: knob value)")
    ax.invert_xaxis()
    ax.legend(fontsize=7)


def pipeline_tables(rows: list[Row]) -> list[str]:
    out = table(["variant", "p50 ms", "p99 ms", "best ms", "calls"],
                [[r["variant"], f"{r['median_ms']:.3f}", f"{r['p99_ms']:.2f}", f"{r['best_ms']:.3f}", r["calls"]]
                 for r in pick(rows, "pipeline")])
    for r in pick(rows, "pipeline_overhead"):
        out += [f"Added by the chain: p50 **{r['p50_added_ms']:+.3f} ms** (target {r['target_p50_ms']}), "
                f"p99 **{r['p99_added_ms']:+.3f} ms** (target {r['target_p99_ms']}).", ""]
    stages = pick(rows, "pipeline_stage")
    if stages:
        out += ["Per stage, timed in place in a separate pass of the full chain:", ""]
        out += timing_table("stage", "stage", stages, digits=1)
    return out


def pipeline_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    cases = pick(rows, "pipeline")
    paired_bars(ax, [r["variant"] for r in cases], ("p50", [r["median_ms"] for r in cases]),
                ("p99", [r["p99_ms"] for r in cases]))
    ax.set(ylabel="ms per recommend()", title="the rank chain on the demo bundle")
    ax.legend(fontsize=7)


def quantization_tables(rows: list[Row]) -> list[str]:
    return table(["scheme", "validation users", "NDCG@10", "HR@10", "NDCG@10 vs float32", "model MB"],
                 [[r["scheme"], r["users"], f"{r['ndcg10']:.4f}", f"{r['hr10']:.4f}", f"{100 * r['ndcg10_rel']:+.2f} %",
                   f"{r['model_bytes'] / 1e6:.2f}"] for r in pick(rows, "quantization")])


def quantization_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    cases = pick(rows, "quantization")
    ax.barh([r["scheme"] for r in cases], [100 * r["ndcg10_rel"] for r in cases], color="tab:blue")
    ax.axvline(-0.5, color="grey", linestyle="--", linewidth=1, label="-0.5 %")
    ax.set(xlabel="validation NDCG@10 against the float32 model (%)", title="int8 quantization schemes")
    ax.legend(fontsize=7)


def quantization_vectors_tables(rows: list[Row]) -> list[str]:
    return table(["model", "item vectors", "users", "NDCG@10", "HR@10", "NDCG@10 vs float32", "mean relative L2 error"],
                 [[r["model"], r["vectors"], r["users"], f"{r['ndcg10']:.5f}", f"{r['hr10']:.4f}",
                   f"{100 * r['ndcg10_rel']:+.2f} %", f"{r['vectors_mean_rel_l2']:.4f}"]
                  for r in pick(rows, "quantization_vectors")])


def quantization_vectors_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    cases = [r for r in pick(rows, "quantization_vectors") if r["vectors"] != "float32"]
    ax.barh([f"{r['model']}\n{r['vectors']}" for r in cases], [100 * r["ndcg10_rel"] for r in cases],
            color=["tab:red" if r["vectors"].startswith("int8") else "tab:blue" for r in cases])
    ax.axvline(-0.5, color="grey", linestyle="--", linewidth=1, label="-0.5 %")
    ax.tick_params(axis="y", labelsize=7)
    ax.set(xlabel="NDCG@10 against float32 item vectors (%), float32 encoder", title="item-vector precision")
    ax.legend(fontsize=7)


def train_epoch_tables(rows: list[Row]) -> list[str]:
    return table(["variant", "rows", "targets", "steps", "padding share", "epoch s", "loss", "load after"],
                 [[r["variant"], r["rows"], r["targets"], r["steps"], f"{r['padding_share']:.4f}",
                   f"{r['epoch_s']:.1f}", f"{r['loss']:.3f}", r.get("load1_after", "-")]
                  for r in pick(rows, "train_epoch")])


def train_epoch_chart(rows: list[Row], fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    cases = pick(rows, "train_epoch")
    ax.bar(range(len(cases)), [r["epoch_s"] for r in cases])
    ax.set_xticks(list(range(len(cases))), [r["variant"] for r in cases], fontsize=8)
    ax.set(ylabel="seconds per epoch (1 thread)", title="one Beauty training epoch per sample layout")


BENCHMARKS: dict[str, tuple[Callable[[list[Row]], list[str]], Callable[[list[Row], Any], None]]] = {
    "kernels": (kernels_tables, kernels_chart),
    "acceptance": (acceptance_tables, acceptance_chart),
    "graph_variants": (graph_variants_tables, graph_variants_chart),
    "ivf_breakdown": (ivf_breakdown_tables, ivf_breakdown_chart),
    "recommend": (recommend_tables, recommend_chart),
    "memory": (memory_tables, memory_chart),
    "impressions": (impressions_tables, impressions_chart),
    "hub": (hub_tables, hub_chart),
    "feedback": (feedback_tables, feedback_chart),
    "shutdown": (shutdown_tables, shutdown_chart),
    "diversity": (diversity_tables, diversity_chart),
    "pipeline": (pipeline_tables, pipeline_chart),
    "quantization": (quantization_tables, quantization_chart),
    "quantization_vectors": (quantization_vectors_tables, quantization_vectors_chart),
    "train_epoch": (train_epoch_tables, train_epoch_chart),
}


def machine_block() -> list[str]:
    body = []
    for name in sorted(p.stem for p in RESULTS.glob("*.jsonl")):
        m = load(name)[0]
        body.append([f"`{name}`", m.get("date", "?"), m["cpu"], m["cores"], m["load1"], m["python"], m["numpy"],
                     m.get("onnxruntime", ""), ", ".join(f"{b['internal_api']} {b['architecture']}"
                                                        for b in m.get("blas", []) if isinstance(b, dict))])
    return table(["results", "date", "CPU", "cores", "load at start", "Python", "numpy", "onnxruntime", "BLAS"],
                 body)


def block(name: str) -> list[str]:
    if name == "machine":
        return machine_block()
    rows = load(name)
    if not rows:
        return [f"No current results: run the command above (writes `benchmarks/results/{name}.jsonl`).", ""]
    tables, _ = BENCHMARKS[name]
    return [*run_line(name, rows), *tables(rows), f"![{name} chart](images/bench-{name}.png)"]


def render(text: str) -> str:
    def fill(m: re.Match[str]) -> str:
        return f"<!-- report:{m[1]} -->\n" + "\n".join(block(m[1])).strip() + f"\n<!-- /report:{m[1]} -->"

    return re.sub(r"<!-- report:(\w+) -->.*?<!-- /report:\1 -->", fill, text, flags=re.S)


def charts() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, (_, draw) in BENCHMARKS.items():
        rows = load(name)
        if not rows:
            continue
        fig = plt.figure(figsize=(8, 3.6), dpi=100)
        draw(rows, fig)
        fig.tight_layout()
        fig.savefig(IMAGES / f"bench-{name}.png", metadata={"Software": None})
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/benchmarks.md's blocks are stale")
    args = ap.parse_args(argv)
    text = DOC.read_text()
    new = render(text)
    if args.check:
        if new != text:
            sys.stderr.write("docs/benchmarks.md is stale: run `python benchmarks/report.py`\n")
            return 1
        return 0
    DOC.write_text(new)
    charts()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
