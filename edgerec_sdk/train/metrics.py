"""Ranking metrics for leave-one-out evaluation (pure numpy, no I/O).

Ranks are 0-based and **pessimistic**: a target tied with other items is ranked after all of them, so a model
that outputs constant scores gets no credit.

Example:
    >>> import numpy as np
    >>> r = ranks_from_scores(np.array([[0.1, 0.9, 0.5]], dtype=np.float32), np.array([2]), [np.array([1])])
    >>> int(r[0])
    0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["DEFAULT_KS", "metrics_from_ranks", "rank_in_list", "ranks_from_scores"]

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)


def ranks_from_scores(
    scores: NDArray[np.floating],
    targets: NDArray[np.int64],
    exclude: Sequence[NDArray[np.int64]] | None = None,
) -> NDArray[np.int64]:
    """0-based rank of each target among all items, ``exclude[i]`` rows removed from the ranking.

    ``scores`` is ``[batch, n_items]`` and is modified in place (excluded rows set to ``-inf``).
    The target itself is never excluded, even when it appears in ``exclude[i]``.
    """
    b = scores.shape[0]
    rows = np.arange(b)
    target_scores = scores[rows, targets].copy()
    if exclude is not None:
        for i, ex in enumerate(exclude):
            if len(ex):
                scores[i, ex] = -np.inf
    scores[rows, targets] = -np.inf
    t = target_scores[:, None]
    greater_or_equal = (scores >= t).sum(axis=1)
    ranks: NDArray[np.int64] = greater_or_equal.astype(np.int64)
    # a non-finite target score (a NaN) ranks last
    ranks[~np.isfinite(target_scores)] = scores.shape[1]
    return ranks


def rank_in_list(recommended: Sequence[str], target: str) -> int:
    """0-based position of ``target`` in a recommendation list, or a large number when absent."""
    try:
        return list(recommended).index(target)
    except ValueError:
        return 1 << 30


def metrics_from_ranks(ranks: NDArray[np.int64], ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@K (= recall@K with one target) and NDCG@K for every K, averaged over users."""
    ranks = np.asarray(ranks)
    out: dict[str, float] = {}
    if ranks.size == 0:
        return {f"{m}@{k}": 0.0 for k in ks for m in ("HR", "NDCG")}
    gains = 1.0 / np.log2(ranks.astype(np.float64) + 2.0)
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, gains, 0.0).mean())
    return out
