"""Leave-one-out, full-ranking evaluation of a bundle on its served path, with baselines.

Protocol (the one of the data sets' PROVENANCE files): for each user with at least 3 items, the last item is
the test target and the model reads ``seq[:-1]``; all catalog items are ranked, the user's own history is
excluded, ties are broken pessimistically. HR@K and NDCG@K for K = 5, 10, 20, and catalog coverage@10 (the
share of the catalog that appears in at least one top-10 list).

Three paths are measured:

* ``served``: the bundle loaded by :class:`edgerec_sdk.Recommender` (int8 encoder, int8 vectors), history
  passed in as external item ids, seen items excluded by the recommender itself. This is the number that
  counts.
* ``direct``: the same ONNX model and vectors scored here with numpy (used for the float32 comparison, where
  the float32 model is not part of the bundle).
* baselines ``popularity`` (counts over ``seq[:-1]``) and ``itemknn`` (cosine, recency-weighted), on the same
  users in the same run.

Example:
    >>> metrics = evaluate_bundle("bundles/beauty", "Beauty.txt")   # doctest: +SKIP
    >>> metrics["served"]["NDCG@10"]                                 # doctest: +SKIP
    0.0612
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._impl.files import sha256_file as file_sha256
from ..errors import ModelFormatError
from .baselines import ItemKNN, popularity_counts
from .data import InteractionData, leave_one_out, read_interactions
from .metrics import DEFAULT_KS, metrics_from_ranks, rank_in_list, ranks_from_scores
from .samples import pad_left

logger = logging.getLogger(__name__)

__all__ = [
    "PROTOCOL",
    "Holdout",
    "baseline_metrics",
    "evaluate_bundle",
    "evaluate_direct",
    "evaluate_served",
    "file_sha256",
    "holdout",
]

PROTOCOL = "leave-one-out; test = last item, input seq[:-1]; full ranking; history excluded; pessimistic ties"
SOURCE_ID_COLUMN = "source_id"


@dataclass(frozen=True)
class Holdout:
    """The leave-one-out test users in bundle rows (``histories`` = ``seq[:-1]``)."""

    n_items: int
    histories: list[NDArray[np.int64]]
    targets: NDArray[np.int64]
    train_full: list[NDArray[np.int64]]


def holdout(data: InteractionData, row_map: NDArray[np.int64] | None = None, n_items: int | None = None, *,
            part: str = "test") -> Holdout:
    """Build the test set; ``row_map[data_row]`` gives the bundle row (``-1``: not in the bundle).

    ``part="valid"``: the validation set instead (history ``seq[:-2]``, target ``seq[-2]``), for choosing a
    serving setting without looking at test. A bundle's final fit has trained on those targets, so it is a
    choice made on seen data (conservative for anything a query must add on top of the history).
    """
    if part not in ("test", "valid"):
        raise ValueError(f"part must be 'test' or 'valid', not {part!r}")
    split = leave_one_out(data.sequences)
    if row_map is None:
        row_map = np.arange(data.n_items, dtype=np.int64)
    n = int(n_items if n_items is not None else data.n_items)

    def conv(s: NDArray[np.int64]) -> NDArray[np.int64]:
        r = row_map[s]
        return r[r >= 0]

    if part == "valid":
        return Holdout(n, [conv(split.train[u]) for u in split.valid_users], row_map[split.valid_targets],
                       [conv(s) for s in split.train])
    hist = [conv(split.train_full[u]) for u in split.test_users]
    targets = row_map[split.test_targets]
    return Holdout(n, hist, targets, [conv(s) for s in split.train_full])


def _finish(ranks: NDArray[np.int64], top10: list[NDArray[np.int64]], n_items: int) -> dict[str, float]:
    out: dict[str, float] = metrics_from_ranks(ranks, DEFAULT_KS)
    seen = np.unique(np.concatenate(top10)) if top10 else np.zeros(0, np.int64)
    out["coverage@10"] = float(len(seen) / max(n_items, 1))
    out["users"] = len(ranks)
    return out


def _evaluate_scores(
    score_fn: Callable[[list[NDArray[np.int64]]], NDArray[np.float32]], ts: Holdout, *, batch: int = 1024
) -> dict[str, float]:
    ranks, top10 = [], []
    missing = ts.targets < 0
    for start in range(0, len(ts.histories), batch):
        hist = ts.histories[start : start + batch]
        tgt = np.maximum(ts.targets[start : start + batch], 0)
        scores = score_fn(hist)
        r = ranks_from_scores(scores, tgt, hist)  # history rows now -inf
        scores[np.arange(len(tgt)), tgt] = -np.inf  # the target too: top-10 of the rest is close enough
        top10.append(np.argpartition(-scores, 10, axis=1)[:, :10].ravel() if scores.shape[1] > 10 else
                     np.arange(scores.shape[1]))
        ranks.append(r)
    all_ranks = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
    all_ranks[missing] = ts.n_items
    return _finish(all_ranks, top10, ts.n_items)


def baseline_metrics(ts: Holdout, *, decay: float = 0.5) -> dict[str, dict[str, float]]:
    """Popularity and recency-weighted ItemKNN on the test set, fitted on ``seq[:-1]``."""
    t0 = time.perf_counter()
    pop = popularity_counts(ts.train_full, ts.n_items)
    out = {"popularity": _evaluate_scores(lambda h: np.tile(pop, (len(h), 1)), ts)}
    knn = ItemKNN.fit(ts.train_full, n_items=ts.n_items, decay=decay)
    out["itemknn"] = _evaluate_scores(knn.scores, ts, batch=512)
    out["itemknn"]["decay"] = decay
    logger.info("baselines evaluated in %.1f s", time.perf_counter() - t0)
    return out


def evaluate_direct(
    model_bytes: bytes, vectors: NDArray[np.floating], ts: Holdout, *, max_len: int
) -> dict[str, float]:
    """Score with onnxruntime and numpy directly (float32 or dequantized int8 vectors)."""
    from .export import onnx_session, run_onnx

    sess = onnx_session(model_bytes)
    v = np.asarray(vectors, dtype=np.float32)

    def score(hist: list[NDArray[np.int64]]) -> NDArray[np.float32]:
        interest = run_onnx(sess, pad_left(hist, max_len))
        scores: NDArray[np.float32] = interest @ v.T
        return scores

    return _evaluate_scores(score, ts)


def evaluate_served(bundle_dir: str | os.PathLike[str], ts: Holdout, *, batch: int = 256) -> dict[str, float]:
    """Evaluate through :class:`~edgerec_sdk.Recommender` (the served path), k = 20."""
    from ..bundle import load_bundle
    from ..config import RecommenderConfig
    from ..recommender import Recommender

    k = max(DEFAULT_KS)
    bundle = load_bundle(bundle_dir)
    catalog_ids = list(bundle.catalog.ids)
    # retrieval quality: the later stages (diversity, rules) are measured on their own (bench_diversity.py)
    rec = Recommender(bundle, RecommenderConfig(strict=True, cache_size=0, diversity=0.0))
    try:
        ranks = np.empty(len(ts.histories), dtype=np.int64)
        top10: list[NDArray[np.int64]] = []
        row_of = {item: r for r, item in enumerate(catalog_ids)}
        for start in range(0, len(ts.histories), batch):
            hist = ts.histories[start : start + batch]
            histories = [[catalog_ids[r] for r in h] for h in hist]
            users = [f"eval-{start + i}" for i in range(len(hist))]
            results = rec.recommend_many(users, k, histories=histories)
            for i, res in enumerate(results):
                items = list(res.item_ids)
                t = int(ts.targets[start + i])
                ranks[start + i] = rank_in_list(items, catalog_ids[t]) if t >= 0 else 1 << 30
                top10.append(np.array([row_of[x] for x in items[:10] if x in row_of], dtype=np.int64))
    finally:
        rec.close()
    return _finish(ranks, top10, ts.n_items)


def _row_map(bundle_dir: str | os.PathLike[str], data: InteractionData) -> NDArray[np.int64]:
    """Map data-file item ids to bundle rows, through the catalog's ``source_id`` column when present."""
    from ..bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    ids = list(bundle.catalog.ids)
    source = bundle.catalog.columns.get(SOURCE_ID_COLUMN)
    keys = [str(s) if s is not None else ids[r] for r, s in enumerate(source)] if source is not None else ids
    row = {k: r for r, k in enumerate(keys)}
    mapped = np.array([row.get(i, -1) for i in data.item_ids], dtype=np.int64)
    if (mapped >= 0).sum() == 0:
        raise ModelFormatError("no item of the data file is in the bundle catalog", path=str(bundle_dir))
    return mapped


def evaluate_bundle(
    bundle_dir: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    *,
    baselines: bool = True,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate a bundle on a data file (served path plus baselines) and store the result in its manifest.

    Metrics already in the manifest under other keys (the build's ``float32`` and ``direct_int8`` numbers)
    are kept; ``served``, ``popularity``, ``itemknn`` and ``data`` are replaced.
    """
    from ..bundle import load_bundle, update_metrics

    t0 = time.perf_counter()
    data = read_interactions(data_path)
    bundle = load_bundle(bundle_dir)
    ts = holdout(data, _row_map(bundle_dir, data), n_items=bundle.manifest.n_items)
    metrics: dict[str, Any] = dict(bundle.manifest.metrics or {})
    test = dict(metrics.get("test", {}))
    test["served_int8"] = evaluate_served(bundle_dir, ts)
    if baselines:
        test.update(baseline_metrics(ts))
    metrics["test"] = test
    metrics["protocol"] = PROTOCOL
    metrics["data"] = {"file": Path(data_path).name, "sha256": file_sha256(data_path),
                       "users": len(data.user_ids), "evaluated_users": len(ts.histories)}
    f32 = test.get("float32", {}).get("NDCG@10")
    if f32:
        metrics["int8_vs_float32_ndcg10_rel"] = test["served_int8"]["NDCG@10"] / f32 - 1.0
    metrics["evaluate_s"] = round(time.perf_counter() - t0, 1)
    if write:
        update_metrics(bundle_dir, metrics)
    return metrics
