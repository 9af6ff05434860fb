"""Diversity against accuracy: mean intra-list similarity (ILS) and NDCG@10 of the top-10 over the MMR knob.

Every leave-one-out test user of a data set is served through the public API (``recommend_many`` with
``history=`` the user's sequence minus its last item, ``diversity=`` each knob value); the last item is the
target. ILS is the mean pairwise similarity of the ten answered items: the cosine of their item vectors, and the
Jaccard similarity of their catalogue categories (content-based ILS, Ziegler et al., WWW 2005). One JSON line per knob
value, and one summary line comparing the configured default with diversity 0.

The bundle must hold the data set's items with the data set's ids in its ``source_id`` column, like the demo
bundle (Beauty, trained on the same split: the target items were never seen in training).

Usage:
    python benchmarks/bench_diversity.py                                 # demo bundle on Beauty
    python benchmarks/bench_diversity.py --bundle DIR --data $EDGEREC_DATA_DIR/amazon_toys/Toys.txt
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _bench import add_out_argument, emit, start

from edgerec_sdk import Recommender, RecommenderConfig
from edgerec_sdk.config import DEFAULT_DIVERSITY
from edgerec_sdk.rank import intra_list_similarity
from edgerec_sdk.recommender import demo_bundle_path
from edgerec_sdk.train.metrics import metrics_from_ranks, rank_in_list

KNOBS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def category_similarity(cats: object, rows: np.ndarray) -> float:
    """Mean pairwise Jaccard similarity of the answered items' category sets (the classic content-based ILS)."""
    sets = [set(cats[int(r)] or ()) for r in rows]  # type: ignore[index]
    pairs = [(a, b) for i, a in enumerate(sets) for b in sets[i + 1:]]
    return float(np.mean([len(a & b) / len(a | b) if a | b else 0.0 for a, b in pairs])) if pairs else 0.0


def _users(data: Path, source_to_id: dict[str, str], limit: int) -> tuple[list[list[str]], list[str]]:
    histories, targets = [], []
    with data.open() as fh:
        for line in fh:
            parts = line.split()
            items = [source_to_id[s] for s in parts[1:] if s in source_to_id]
            if len(items) >= 3:
                histories.append(items[:-1])
                targets.append(items[-1])
    if limit and len(histories) > limit:  # a fixed, spread sample rather than the first users
        pick = np.linspace(0, len(histories) - 1, num=limit).astype(int)
        histories, targets = [histories[i] for i in pick], [targets[i] for i in pick]
    return histories, targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(demo_bundle_path()))
    data_dir = Path(os.environ.get("EDGEREC_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--data", default=str(data_dir / "amazon_beauty" / "Beauty.txt"))
    ap.add_argument("--users", type=int, default=0, help="evaluate a spread sample of this many users (0: all)")
    ap.add_argument("--knobs", type=float, nargs="*", default=list(KNOBS))
    ap.add_argument("--max-per-category", type=int, default=None,
                    help="RecommenderConfig.max_per_category for every knob (default: no cap)")
    add_out_argument(ap, "diversity")
    args = ap.parse_args(argv)
    start(args.out)
    rec = Recommender.from_bundle(args.bundle, config=RecommenderConfig(cache_size=0,
                                                                        max_per_category=args.max_per_category))
    state = rec._state
    assert state is not None
    catalog, vectors = state.bundle.catalog, state.bundle.vectors
    source = catalog.columns.get("source_id")
    if source is None:
        raise SystemExit("the bundle has no source_id column to map the data set's item ids")
    histories, targets = _users(Path(args.data), {str(s): i for s, i in zip(source, catalog.ids, strict=True)},
                                args.users)
    users = [f"u{i}" for i in range(len(histories))]
    cats = catalog.columns.get("category")
    knobs = sorted(set(args.knobs) | {0.0, DEFAULT_DIVERSITY})
    rows: dict[float, dict[str, float]] = {}
    for knob in knobs:
        t0 = time.perf_counter()
        ranks, ils, ils_cat = [], [], []
        for lo in range(0, len(users), 512):
            answers = rec.recommend_many(users[lo:lo + 512], k=10, histories=histories[lo:lo + 512], diversity=knob)
            for answer, target in zip(answers, targets[lo:lo + 512], strict=True):
                ids = answer.item_ids
                ranks.append(rank_in_list(ids, target))
                rows_ = catalog.rows(ids)
                ils.append(intra_list_similarity(vectors.rows_f32(rows_)))
                if cats is not None:
                    ils_cat.append(category_similarity(cats, rows_))
        m = metrics_from_ranks(np.asarray(ranks, dtype=np.int64), ks=(10,))
        rows[knob] = {"ndcg10": m["NDCG@10"], "hr10": m["HR@10"], "ils10": float(np.mean(ils)),
                      "ils10_categories": float(np.mean(ils_cat)) if ils_cat else None}
        emit(bench="diversity", data=Path(args.data).name, diversity=knob, users=len(users), **rows[knob],
             seconds=round(time.perf_counter() - t0, 1))
    base, chosen = rows[0.0], rows[DEFAULT_DIVERSITY]
    emit(bench="diversity_default", data=Path(args.data).name, diversity=DEFAULT_DIVERSITY, users=len(users),
         ils_drop_rel=1 - chosen["ils10"] / base["ils10"],
         ils_categories_drop_rel=1 - chosen["ils10_categories"] / base["ils10_categories"]
         if base["ils10_categories"] else None,
         ndcg10_loss_rel=1 - chosen["ndcg10"] / base["ndcg10"] if base["ndcg10"] else 0.0)
    rec.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
