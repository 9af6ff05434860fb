"""What impression logging adds to ``recommend()``: the same requests with it off and on, side by side.

One process, the demo bundle behind a real ``EdgeSync`` (its SQLite outbox in a temporary directory; the hub
address is unreachable and the uploader idle, so nothing but the request path is timed). Configurations run
interleaved request by request: ``off``; ``on`` (logging as shipped: one impression row per answer); ``on_rotation``
(logging with the opt-in impression decay, ``rotation_step=1``: the shows are counted and the users shown an item
more than ``rotation_free_shows`` times get it reordered, as every user here is after a few rounds). Between rounds, untimed, the queued rows are moved into the outbox as the uploader thread
would. Cache off: every request computes. One JSON line per configuration, one with the p50 differences (and
the median of the back-to-back differences of the same request), and one per added part timed alone
(remembering the answer, which every request does; remembering and logging it; the rotation step over the
candidates a request with the default stages reorders).

Usage:
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_impressions.py [--users 300] [--rounds 12]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib import resources

import numpy as np
from _bench import add_out_argument, emit, start, summary, timings

from edgerec_sdk import FeedbackConfig, Recommender, RecommenderConfig
from edgerec_sdk.bundle import load_bundle
from edgerec_sdk.recommender import demo_bundle_path
from edgerec_sdk.sync import SyncConfig

CONFIGS = {
    "off": FeedbackConfig(log_impressions=False),
    "on": FeedbackConfig(log_impressions=True),
    "on_rotation": FeedbackConfig(log_impressions=True, rotation_step=1.0),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("-k", type=int, default=10)
    add_out_argument(ap, "impressions")
    args = ap.parse_args(argv)
    start(args.out)
    shoppers = json.loads((resources.files("edgerec_sdk") / "_demo_histories.json").read_text())
    rng = np.random.default_rng(0)
    histories = [list(rng.permutation(shoppers[i % len(shoppers)]["history"])[:8]) for i in range(args.users)]
    bundle = load_bundle(demo_bundle_path())
    recs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fb in CONFIGS.items():
            sync = SyncConfig(hub_url="http://127.0.0.1:9", token="t", user_id_key="k", signing_key="s",
                              state_dir=f"{tmp}/{name}",
                              upload_interval_s=3600.0, poll_interval_s=3600.0, smoke_in_subprocess=False)
            rec = Recommender.connect("http://127.0.0.1:9", token="t", user_id_key="k", state_dir=f"{tmp}/{name}",
                                      config=RecommenderConfig(cache_size=0, feedback=fb), sync_config=sync,
                                      start=False)
            rec.swap(bundle)
            # every configuration runs the uploader thread, as a deployment does (logging would start it, and
            # one extra thread in one arm only would be timed as the cost of logging)
            rec._sync.uploader.start()  # type: ignore[attr-defined]
            recs[name] = rec
        times: dict[str, list[float]] = {name: [] for name in CONFIGS}
        names = list(CONFIGS)
        for rec in recs.values():  # warm up every session and code path
            for u in range(20):
                rec.recommend(f"u{u}", k=args.k, history=histories[u])
        for _ in range(args.rounds):
            for u, hist in enumerate(histories):  # the configurations take turns request by request,
                for j in range(len(names)):        # each going first as often (the first pays the cold caches)
                    name = names[(u + j) % len(names)]
                    rec = recs[name]
                    t0 = time.perf_counter()
                    rec.recommend(f"u{u}", k=args.k, history=hist)
                    times[name].append(time.perf_counter() - t0)
            for rec in recs.values():
                rec._sync.store_later()  # the uploader thread's work, untimed
        stats = {name: summary(np.asarray(ts)) for name, ts in times.items()}
        for name, s in stats.items():
            counters = recs[name].status().counters
            emit(bench="impressions", config=name, k=args.k, users=args.users, rounds=args.rounds,
                 impressions_logged=counters.get("impressions_logged", 0),
                 outbox_pending=recs[name].status().sync["outbox"]["pending"], **s)
        off = np.asarray(times["off"])
        # the same request, timed back to back: the median of the pairwise differences resists load swings
        emit(bench="impressions_overhead",
             **{f"{name}_minus_off_p50_us": round((stats[name]["median_ms"] - stats["off"]["median_ms"]) * 1e3, 1)
                for name in ("on", "on_rotation")},
             **{f"{name}_minus_off_paired_median_us": round(float(np.median(np.asarray(times[name]) - off)) * 1e6, 1)
                for name in ("on", "on_rotation")})
        # the added work alone, per call: what recommend() does after ranking, and the rotation step
        on = recs["on_rotation"]
        answer = on.recommend("probe", k=args.k, history=histories[0])
        log = on._answer_log
        catalog = bundle.catalog
        rows = np.arange(min(on.config.rank_candidates, len(catalog)), dtype=np.int64)
        shown = [catalog.ids[r] for r in rows[: args.k].tolist()]
        for _ in range(on.config.feedback.rotation_free_shows + 2):
            log.shown.shown("probe", shown)
        over = log.over_free_shows("probe")
        parts = {
            "remember_only": lambda: log.answered(["probe"], [answer], on._sync, False),
            "remember_and_log": lambda: log.answered(["probe"], [answer], on._sync, True),
            "rotation": lambda: log.rotation_of_rows(rows, log.over_free_shows("probe"), catalog.row),
        }
        for part, fn in parts.items():
            ts = np.concatenate([timings(fn, min_repeat=2000, max_repeat=2000) for _ in range(5)])
            on._sync.store_later()
            emit(bench="impressions_part", part=part, median_us=round(float(np.median(ts)) * 1e6, 2),
                 p99_us=round(float(np.quantile(ts, 0.99)) * 1e6, 2), calls=int(ts.size), over_free=len(over))
        for rec in recs.values():
            rec.close(0.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
