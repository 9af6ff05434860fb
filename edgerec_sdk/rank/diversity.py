"""Diversity: maximal marginal relevance (MMR) over item vectors, and an optional per-category cap.

Why MMR: a retrieval top-K is often ten variants of one product; MMR trades a little relevance for lists that
cover more of the user's interests, with one knob. Relevance is rescaled to ``[0, 1]`` over the candidates before
mixing, so the knob means the same for raw inner products, ranker probabilities or any other score scale.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "blended_similarity", "category_similarity", "cosine_similarity", "intra_list_similarity", "mmr_order",
]


def _unit_rows(vectors: NDArray[np.floating]) -> NDArray[np.float32]:
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    out: NDArray[np.float32] = (v / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return out


def mmr_order(
    vectors: NDArray[np.floating],
    relevance: NDArray[np.floating],
    k: int,
    *,
    diversity: float,
    categories: Sequence[Hashable | None] | None = None,
    max_per_category: int | None = None,
    similarity: NDArray[np.floating] | None = None,
) -> NDArray[np.int64]:
    """Pick up to ``k`` candidates, best first, by maximal marginal relevance.

    Args:
        vectors: one row per candidate (any scale; their cosine is the similarity unless ``similarity`` is given).
        relevance: one score per candidate, higher is better (any scale).
        k: how many to pick.
        diversity: ``0`` keeps the relevance order; ``1`` ignores relevance after the first pick. Each pick
            maximises ``(1 - diversity) * rel - diversity * max_cos(candidate, picked)`` with ``rel`` in [0, 1].
        categories: one key per candidate for the cap (``None``: no category).
        max_per_category: at most this many picks share a category key; the cap yields when nothing else is
            left, so a list is never cut short by it.
        similarity: a precomputed ``[n, n]`` similarity of the candidates (e.g. :func:`blended_similarity`).

    Returns:
        Candidate indices in answer order.
    """
    n = len(relevance)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    rel = np.asarray(relevance, dtype=np.float64)
    finite = np.isfinite(rel)
    rel = np.where(finite, rel, -np.inf)
    if diversity <= 0.0 and max_per_category is None:
        return np.argsort(-rel, kind="stable")[:k].astype(np.int64)
    lo, hi = float(np.min(rel[finite])) if finite.any() else 0.0, float(np.max(rel[finite])) if finite.any() else 1.0
    span = hi - lo if hi > lo else 1.0
    norm_rel = np.where(finite, (rel - lo) / span, -np.inf)
    sims = cosine_similarity(vectors) if similarity is None else np.asarray(similarity)
    max_sim = np.zeros(n, dtype=np.float64)  # redundancy below 0 (dissimilar) is not rewarded
    codes, counts = _category_codes(categories, n)
    order: list[int] = []
    lam = min(max(float(diversity), 0.0), 1.0)
    base = (1.0 - lam) * norm_rel
    gain = np.empty(n, dtype=np.float64)
    for _ in range(k):
        # a taken candidate's relevance is -inf, so its gain is too
        np.multiply(max_sim, lam, out=gain)
        np.subtract(base, gain, out=gain)
        if max_per_category is not None and codes is not None:
            capped = (codes >= 0) & (counts[np.maximum(codes, 0)] >= max_per_category)
            if np.any(~capped & np.isfinite(gain)):
                gain[capped] = -np.inf
        best = int(np.argmax(gain))
        if not np.isfinite(gain[best]):  # everything left is taken or has no finite relevance
            break
        order.append(best)
        if codes is not None and codes[best] >= 0:
            counts[codes[best]] += 1
        np.maximum(max_sim, sims[best], out=max_sim)
        base[best] = -np.inf
    return np.asarray(order, dtype=np.int64)


def _category_codes(
    categories: Sequence[Hashable | None] | None, n: int
) -> tuple[NDArray[np.int64] | None, NDArray[np.int64]]:
    if categories is None:
        return None, np.zeros(0, dtype=np.int64)
    index: dict[Hashable, int] = {}
    codes = np.fromiter((-1 if c is None else index.setdefault(c, len(index)) for c in categories),
                        dtype=np.int64, count=n)
    return codes, np.zeros(max(len(index), 1), dtype=np.int64)


def cosine_similarity(vectors: NDArray[np.floating]) -> NDArray[np.float32]:
    """``[n, n]`` cosine similarity of the rows (one small matmul; MMR then reads one row of it per pick)."""
    unit = _unit_rows(vectors)
    out: NDArray[np.float32] = unit @ unit.T
    return out


def category_similarity(codes: NDArray[np.int64]) -> NDArray[np.float32]:
    """``[n, n]`` Jaccard similarity of the candidates' category sets (``codes``: ``-1``-padded category ids)."""
    present = codes >= 0
    pc = codes[present]
    if len(pc) == 0:
        return np.zeros((len(codes), len(codes)), dtype=np.float32)
    # local category ids without a sort: mark the codes present, number them in code order
    mark = np.zeros(int(pc.max()) + 1, dtype=np.int32)
    mark[pc] = 1
    local = np.cumsum(mark) - 1
    onehot = np.zeros((len(codes), int(local[-1]) + 1), dtype=np.float32)
    onehot[np.nonzero(present)[0], local[pc]] = 1.0
    inter = onehot @ onehot.T
    sizes = onehot.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - inter
    np.maximum(union, 1.0, out=union)  # items without categories: 0 / 1
    out: NDArray[np.float32] = inter / union
    return out


def blended_similarity(vectors: NDArray[np.floating], codes: NDArray[np.int64] | None) -> NDArray[np.float32]:
    """The similarity diversity penalises: the mean of the item vectors' cosine (behaviour) and the category
    sets' Jaccard (what a shopper sees as "the same kind of product") when the catalogue has categories."""
    cos = cosine_similarity(vectors)
    if codes is None:
        return cos
    out: NDArray[np.float32] = 0.5 * cos + 0.5 * category_similarity(codes)
    return out


def intra_list_similarity(vectors: NDArray[np.floating]) -> float:
    """Mean pairwise cosine similarity of a list's item vectors (``0`` for fewer than two items)."""
    n = len(vectors)
    if n < 2:
        return 0.0
    unit = _unit_rows(vectors)
    sims = unit @ unit.T
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))
