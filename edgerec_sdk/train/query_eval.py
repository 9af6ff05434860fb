"""Query intent and the cold-item slice, measured on the served path (``edgerec evaluate --query-intent``).

Protocol, on the leave-one-out test users (the same split as :mod:`.evaluate`):

* **query intent**: the query is two or three words of the target item's catalogue title (words of two or
  more letters that are not stop words, kept in title order, picked at random with a fixed seed); users whose
  target title has fewer than two such words are skipped. HR@10 is measured with and without the query for
  *warm* users (history ``seq[:-1]``) and for *cold* users (the same targets, no history: without a query
  that is the popularity list). Every call goes through :class:`~edgerec_sdk.Recommender` (strict, no cache),
  one user per call, and its wall time gives the latency percentiles of the plain and the query path.
* **cold-item slice**: test users whose target has at most 5 training events (in ``seq[:-1]`` of all users);
  HR@10 of the plain served path on them. Run it on a bundle built with and one built without item text.

Example:
    >>> m = evaluate_query_intent("bundles/beauty", "Beauty.txt", users=2000)   # doctest: +SKIP
    >>> m["warm"]["ratio"]                                                    # doctest: +SKIP
    3.4
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from typing import Any, Final

import numpy as np

from .data import read_interactions
from .evaluate import _row_map, holdout

__all__ = ["STOP_WORDS", "evaluate_query_intent", "title_query"]

STOP_WORDS: Final = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it", "of", "on", "or", "the", "to", "with", "without", "your", "you", "our", "this", "that", "new", "oz", "ml", "fl", "pack", "count", "pcs", "set", "size", "inch", "x"]
)
_WORD = re.compile(r"[^\W\d_]{2,}")
COLD_ITEM_MAX_EVENTS: Final = 5


def title_query(title: str, rng: np.random.Generator) -> str | None:
    """Two or three non-stop words of ``title`` in title order, or ``None`` when it has fewer than two."""
    words = list(dict.fromkeys(w for w in _WORD.findall(title.lower()) if w not in STOP_WORDS))
    if len(words) < 2:
        return None
    n = min(len(words), int(rng.integers(2, 4)))
    keep = sorted(rng.choice(len(words), size=n, replace=False).tolist())
    return " ".join(words[i] for i in keep)


def _pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000.0
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3), "p99_ms": round(float(np.percentile(arr, 99)), 3),
            "calls": len(values)} if len(arr) else {}


def evaluate_query_intent(
    bundle_dir: str | os.PathLike[str], data_path: str | os.PathLike[str], *, users: int = 2000, seed: int = 0,
    k: int = 10, query_weight: float | None = None, part: str = "test", query_match_weight: float | None = None,
) -> dict[str, Any]:
    """Query-intent HR@k (warm and cold users, with and without the query), latencies, cold-item slice.

    ``part="valid"`` measures on the validation targets (see :func:`~edgerec_sdk.train.evaluate.holdout`).
    """
    from ..bundle import load_bundle
    from ..config import RecommenderConfig
    from ..recommender import Recommender

    data = read_interactions(data_path)
    bundle = load_bundle(bundle_dir)
    ts = holdout(data, _row_map(bundle_dir, data), n_items=bundle.manifest.n_items, part=part)
    ids = bundle.catalog.ids
    titles = bundle.catalog.columns.get("title") or (None,) * len(ids)
    rng = np.random.default_rng(seed)
    candidates = []
    for u in rng.permutation(len(ts.histories)).tolist():
        t = int(ts.targets[u])
        title = titles[t] if t >= 0 else None
        q = title_query(title, rng) if isinstance(title, str) else None
        if q is not None:
            candidates.append((u, q))
        if len(candidates) >= users:
            break
    counts = np.bincount(np.concatenate(ts.train_full), minlength=len(ids)) if ts.train_full else np.zeros(0)
    cfg = RecommenderConfig(strict=True, cache_size=0)
    if query_weight is not None:
        cfg = dataclasses.replace(cfg, query_weight=query_weight)
    if query_match_weight is not None:
        cfg = dataclasses.replace(cfg, query_match_weight=query_match_weight)
    rec = Recommender(bundle, cfg)
    hits = {name: 0 for name in ("warm", "warm_query", "cold", "cold_query")}
    times: dict[str, list[float]] = {name: [] for name in hits}
    try:
        for n, (u, q) in enumerate(candidates):
            target = ids[int(ts.targets[u])]
            history = [ids[r] for r in ts.histories[u]]
            for name, hist, query in (("warm", history, None), ("warm_query", history, q),
                                      ("cold", [], None), ("cold_query", [], q)):
                t0 = time.perf_counter()
                out = rec.recommend(f"qi-{n}", k, history=hist, query=query)
                times[name].append(time.perf_counter() - t0)
                hits[name] += target in out.item_ids
        slice_users = [u for u in range(len(ts.histories))
                       if ts.targets[u] >= 0 and counts[int(ts.targets[u])] <= COLD_ITEM_MAX_EVENTS]
        slice_hits = 0
        for start in range(0, len(slice_users), 256):
            chunk = slice_users[start : start + 256]
            answers = rec.recommend_many([f"ci-{u}" for u in chunk], k,
                                         histories=[[ids[r] for r in ts.histories[u]] for u in chunk])
            slice_hits += sum(ids[int(ts.targets[u])] in a.item_ids for u, a in zip(chunk, answers, strict=True))
    finally:
        rec.close()
    m = max(len(candidates), 1)

    def side(plain: str, query: str) -> dict[str, Any]:
        hr, hq = hits[plain] / m, hits[query] / m
        return {f"HR@{k}": round(hr, 4), f"HR@{k}_query": round(hq, 4),
                "ratio": round(hq / hr, 2) if hr > 0 else None}

    return {
        "bundle": bundle.model_version,
        "text_tower": bundle.manifest.output_names.get("text") is not None,
        "users": len(candidates),
        "seed": seed,
        "split": part,
        "query_weight": cfg.query_weight,
        "query_match_weight": cfg.query_match_weight,
        "warm": side("warm", "warm_query"),
        "cold": side("cold", "cold_query"),
        "latency": {name: _pct(v) for name, v in times.items()},
        "cold_items": {"max_train_events": COLD_ITEM_MAX_EVENTS, "targets": len(slice_users),
                       f"HR@{k}": round(slice_hits / max(len(slice_users), 1), 4)},
    }
