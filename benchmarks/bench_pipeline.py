"""What the stages after retrieval cost: ``recommend()`` on the demo bundle, plain vs the full chain.

The full chain is the CTR ranker (over ``rank_candidates`` = 100 candidates), diversity at the configured
default, and five merchandising rules (a pin, two boosts, a bury, a never-show list), on a copy of the demo
bundle with a ranker attached (its weights fitted to random rows: latency does not depend on them). Plain and
full requests alternate call by call, so both see the same machine; the result cache is off, histories come
from the demo shoppers with varied lengths. One JSON line per variant and one with the differences. A second,
separate pass of the full chain times each stage in place (a timer around each stage function; that pass's totals
are not the ones reported above), one line per stage: where the added time goes.

Usage:
    python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import add_out_argument, emit, one_thread, start, summary
from bench_recommend import demo_requests

import edgerec_sdk._impl.serving as serving
import edgerec_sdk.rank.features as features
import edgerec_sdk.rank.pipeline as pipeline
import edgerec_sdk.rank.ranker as ranker
from edgerec_sdk import Recommender, RecommenderConfig
from edgerec_sdk.config import DEFAULT_DIVERSITY
from edgerec_sdk.rank.features import FEATURES
from edgerec_sdk.recommender import demo_bundle_path
from edgerec_sdk.train.ranker import attach_ranker, fit_logistic, ranker_onnx


def ranked_demo(out: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, len(FEATURES)))
    y = (rng.random(2000) < 0.1).astype(np.float64)
    fit = fit_logistic(x, y)
    return attach_ranker(demo_bundle_path(), out, ranker_bytes=ranker_onnx(fit), features=FEATURES,
                         means=fit.mean.tolist(), report={"purpose": "latency benchmark"})


def stage_times(rec: Recommender, requests: list[dict[str, object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each stage of ``rec``'s chain, timed in place (the functions are wrapped, then restored)."""
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times.setdefault(name, []).append(time.perf_counter() - t0)
        return wrapper

    saved = (serving.ServingState.rank, ranker.Ranker.probabilities, features.RankFeatures.matrix,
             pipeline.diversify, pipeline.shape_with_rules)
    serving.ServingState.rank = timed("retrieve (model + kernel, 100 candidates)", saved[0])  # type: ignore[method-assign]
    ranker.Ranker.probabilities = timed("ranker: model (numpy when affine)", saved[1])  # type: ignore[method-assign]
    features.RankFeatures.matrix = timed("ranker: features", saved[2])  # type: ignore[method-assign]
    pipeline.diversify = timed("diversify (MMR)", saved[3])  # type: ignore[assignment]
    pipeline.shape_with_rules = timed("rules", saved[4])  # type: ignore[assignment]
    try:
        for _ in range(rounds):
            for r in requests:
                rec.recommend(**r)  # type: ignore[arg-type]
    finally:
        (serving.ServingState.rank, ranker.Ranker.probabilities, features.RankFeatures.matrix,  # type: ignore[method-assign]
         pipeline.diversify, pipeline.shape_with_rules) = saved
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    add_out_argument(ap, "pipeline")
    args = ap.parse_args(argv)
    start(args.out)
    requests = demo_requests(args.requests, seed=0)
    with tempfile.TemporaryDirectory() as tmp, one_thread():
        plain = Recommender.demo(config=RecommenderConfig(cache_size=0, diversity=0.0))
        full = Recommender.from_bundle(ranked_demo(Path(tmp) / "ranked"), config=RecommenderConfig(
            cache_size=0, diversity=DEFAULT_DIVERSITY or 0.2))
        ids = list(plain.items)
        full.set_rules({"version": "bench", "rules": [
            {"id": "hero", "action": "pin", "item": ids[100], "position": 0},
            {"id": "boost-a", "action": "boost", "items": ids[200:260], "factor": 1.5},
            {"id": "boost-b", "action": "boost", "where": {"category": "attr-1"}, "add": 0.01},
            {"id": "bury", "action": "bury", "items": ids[300:400]},
            {"id": "never", "action": "never", "items": ids[400:420]},
        ]})
        for r in requests[:20]:
            plain.recommend(**r)  # type: ignore[arg-type]
            full.recommend(**r)  # type: ignore[arg-type]
        t_plain, t_full = [], []
        for _ in range(args.rounds):
            for r in requests:
                t0 = time.perf_counter()
                plain.recommend(**r)  # type: ignore[arg-type]
                t1 = time.perf_counter()
                full.recommend(**r)  # type: ignore[arg-type]
                t2 = time.perf_counter()
                t_plain.append(t1 - t0)
                t_full.append(t2 - t1)
        a, b = np.asarray(t_plain), np.asarray(t_full)
        emit(bench="pipeline", variant="plain", **summary(a))
        emit(bench="pipeline", variant="ranker+diversity+5 rules", diversity=full.config.diversity, **summary(b))
        emit(bench="pipeline_overhead", p50_added_ms=round(float(np.median(b) - np.median(a)) * 1e3, 4),
             p99_added_ms=round(float(np.quantile(b, 0.99) - np.quantile(a, 0.99)) * 1e3, 4),
             target_p50_ms=0.3, target_p99_ms=1.0)
        for stage, ts in stage_times(full, requests, max(args.rounds // 2, 1)).items():
            emit(bench="pipeline_stage", stage=stage, median_us=round(float(np.median(ts)) * 1e6, 1),
                 p99_us=round(float(np.quantile(ts, 0.99)) * 1e6, 1), calls=len(ts))
        plain.close()
        full.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
