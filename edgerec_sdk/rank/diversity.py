"""Diversity: maximal marginal relevance (MMR) over item vectors, and an optional per-category cap.

Why MMR: a retrieval top-K is often ten variants of one product; MMR trades a little relevance for lists that
cover more of the user's interests, with one knob. Relevance is rescaled to ``[0, 1]`` over the candidates before
mixing, so the knob means the same for raw inner products, ranker probabilities or any other score scale.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..bundle.vectors import ItemVectors

__all__ = [
    "DiversityTables", "blended_similarity", "category_rows", "cosine_similarity", "diversity_vectors",
    "intra_list_similarity", "mmr_order",
]


@dataclass(frozen=True, slots=True, eq=False)
class DiversityTables:
    """Per-catalogue lookups, built once per serving state, so a request's MMR setup is a few gathers.

    Why: normalising the candidates' vectors and sizing their category sets took ~15 numpy calls per request;
    with each item's scaled inverse norm and category weight kept, the pool's diversity rows take about eight.
    Both are pre-multiplied by ``sqrt(1/2)``, the blend's weight (:func:`diversity_vectors`).
    """

    vectors: ItemVectors
    half_inv_norms: NDArray[np.float32]
    """``sqrt(1/2) / |stored row|`` per item (an int8 row's scale cancels in the cosine, so it is never applied)."""
    codes: NDArray[np.int64] | None
    """``-1``-padded category ids per item (``None``: the catalogue has no categories)."""
    half_cat_weights: NDArray[np.float32] | None
    """``sqrt(1/2) / sqrt(number of categories)`` per item, 0 for none: its category row's entries."""

    @classmethod
    def build(cls, vectors: ItemVectors, codes: NDArray[np.int64] | None) -> DiversityTables:
        values = vectors.values.view(np.ndarray)
        half = np.float32(np.sqrt(0.5)) if codes is not None else np.float32(1.0)
        inv = np.empty(len(values), dtype=np.float32)
        for lo in range(0, len(values), 65536):  # blocks: no float copy of a large catalogue at once
            block = np.asarray(values[lo : lo + 65536], dtype=np.float32)
            inv[lo : lo + 65536] = half / np.maximum(np.sqrt(np.einsum("ij,ij->i", block, block)), np.float32(1e-12))
        weights = None
        if codes is not None:
            sizes = (codes >= 0).sum(axis=1)
            weights = np.where(sizes > 0, half / np.sqrt(np.maximum(sizes, 1)), 0.0).astype(np.float32)
        return cls(vectors=vectors, half_inv_norms=inv, codes=codes, half_cat_weights=weights)

    def rows(self, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        """:func:`diversity_vectors` of the candidates ``rows``."""
        if len(rows) and int(rows.max()) >= len(self.half_inv_norms):  # an item added after the tables were built
            unit = self.vectors.unit_rows(rows)
            if self.codes is None:
                return unit
            known = rows < len(self.codes)
            codes = np.full((len(rows), self.codes.shape[1]), -1, dtype=np.int64)
            codes[known] = self.codes[rows[known]]  # an added item has no category codes here
            return diversity_vectors(unit, codes, unit=True)
        values = self.vectors.values.view(np.ndarray)[rows]
        if self.codes is None or self.half_cat_weights is None:
            return np.multiply(values, self.half_inv_norms[rows][:, None], dtype=np.float32)
        dim = values.shape[1]
        out = _category_block(self.codes[rows], self.half_cat_weights[rows], lead=dim)
        if out is None:
            return np.multiply(values, self.half_inv_norms[rows][:, None], dtype=np.float32)
        np.multiply(values, self.half_inv_norms[rows][:, None], out=out[:, :dim])
        return out


def _local_ids(codes: NDArray[np.int64]) -> NDArray[np.int64]:
    """Dense ids ``0..m-1`` for the distinct non-negative ``codes``, in code order, without a sort."""
    mark = np.zeros(int(codes.max()) + 1, dtype=np.int64)
    mark[codes] = 1
    out: NDArray[np.int64] = np.cumsum(mark)[codes] - 1
    return out


def _unit_rows(vectors: NDArray[np.floating]) -> NDArray[np.float32]:
    v = np.array(vectors, dtype=np.float32)  # a copy: normalised in place
    v /= np.maximum(np.sqrt(np.einsum("ij,ij->i", v, v)), np.float32(1e-12))[:, None]
    return v


def mmr_order(
    vectors: NDArray[np.floating],
    relevance: NDArray[np.floating],
    k: int,
    *,
    diversity: float,
    categories: Sequence[Hashable | None] | None = None,
    max_per_category: int | None = None,
    unit: bool = False,
    bounds: tuple[float, float] | None = None,
) -> NDArray[np.int64]:
    """Pick up to ``k`` candidates, best first, by maximal marginal relevance.

    Args:
        vectors: one row per candidate; the similarity of two candidates is the cosine of their rows, or their
            plain inner product when ``unit`` (rows from :func:`diversity_vectors`).
        relevance: one score per candidate, higher is better (any scale).
        k: how many to pick.
        diversity: ``0`` keeps the relevance order; ``1`` ignores relevance after the first pick. Each pick
            maximises ``(1 - diversity) * rel - diversity * max_sim(candidate, picked)`` with ``rel`` in [0, 1].
        categories: one key per candidate for the cap (``None``: no category).
        max_per_category: at most this many picks share a category key; the cap yields when nothing else is
            left, so a list is never cut short by it.
        unit: the rows are already scaled so that inner products are the similarity.
        bounds: the relevance range to rescale by (default: these candidates' own), so a head of a longer list
            keeps the scale the whole list would give it.

    Returns:
        Candidate indices in answer order.
    """
    n = len(relevance)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    rel = np.array(relevance, dtype=np.float64)  # a copy: becomes the base gains in place
    finite = np.isfinite(rel)
    all_finite = bool(finite.all())
    if not all_finite:
        rel[~finite] = -np.inf
    if diversity <= 0.0 and max_per_category is None:
        return np.argsort(-rel, kind="stable")[:k].astype(np.int64)
    if bounds is not None:
        lo, hi = bounds
    else:
        lo = float(np.min(rel[finite])) if finite.any() else 0.0
        hi = float(np.max(rel[finite])) if finite.any() else 1.0
    span = hi - lo if hi > lo else 1.0
    lam = min(max(float(diversity), 0.0), 1.0)
    base = rel
    base -= lo
    base *= (1.0 - lam) / span  # -inf stays -inf (the factor is >= 0; at lam = 1 the gains are 0 or nan)
    if not all_finite or lam >= 1.0:
        base[~finite] = -np.inf
    rows = np.asarray(vectors, dtype=np.float32) if unit else _unit_rows(vectors)
    # Only the picked candidates' similarity rows are ever read: one matrix-vector product per pick instead of
    # the full [n, n] matrix. The penalty rows carry the knob already, so a pick costs four small numpy calls.
    scaled = rows * np.float32(lam)
    penalty = np.zeros(n, dtype=np.float32)  # redundancy below 0 (dissimilar) is not rewarded
    codes, counts = _category_codes(categories, n)
    order: list[int] = []
    gain = np.empty(n, dtype=np.float64)
    for _ in range(k):
        np.subtract(base, penalty, out=gain)  # a taken candidate's base is -inf, so its gain is too
        if max_per_category is not None and codes is not None:
            capped = (codes >= 0) & (counts[np.maximum(codes, 0)] >= max_per_category)
            if np.any(~capped & np.isfinite(gain)):
                gain[capped] = -np.inf
        best = int(gain.argmax())
        if gain[best] == -np.inf:  # everything left is taken or has no finite relevance
            break
        order.append(best)
        if codes is not None and codes[best] >= 0:
            counts[codes[best]] += 1
        if len(order) < k:
            np.maximum(penalty, scaled @ rows[best], out=penalty)
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
    """``[n, n]`` cosine similarity of the rows."""
    unit = _unit_rows(vectors)
    out: NDArray[np.float32] = unit @ unit.T
    return out


def category_rows(codes: NDArray[np.int64]) -> NDArray[np.float32]:
    """Unit category-indicator rows of the candidates (``codes``: ``-1``-padded category ids): the inner product
    of two rows is the cosine (Ochiai) similarity of their category sets, 0 for an item without categories."""
    sizes = (codes >= 0).sum(axis=1)  # codes are distinct within a row
    weights = (1.0 / np.sqrt(np.maximum(sizes, 1))).astype(np.float32)
    block = _category_block(codes, weights, lead=0)
    return np.zeros((len(codes), 1), dtype=np.float32) if block is None else block


def _category_block(codes: NDArray[np.int64], weights: NDArray[np.float32], *, lead: int) -> NDArray[np.float32] | None:
    """A zero matrix of ``lead`` columns and then one column per category present, holding each row's ``weights``
    entry in its categories' columns (``None`` when no row has a category): the category half of the diversity
    rows, with room in front for the vector half."""
    r, c = np.nonzero(codes >= 0)
    if len(r) == 0:
        return None
    local = _local_ids(codes[r, c])
    out = np.zeros((len(codes), lead + int(local.max()) + 1), dtype=np.float32)
    out[r, lead + local] = weights[r]
    return out


def diversity_vectors(vectors: NDArray[np.floating], codes: NDArray[np.int64] | None, *,
                      unit: bool = False) -> NDArray[np.float32]:
    """Rows whose inner products are the similarity diversity penalises: the item vectors' cosine (behaviour)
    and, when the catalogue has categories, the mean of it and the category sets' cosine (what a shopper sees as
    "the same kind of product"). Both halves are unit rows scaled by ``sqrt(1/2)``, so one inner product gives
    the mean and MMR needs one matrix-vector product per pick. ``unit``: the vectors are unit rows already."""
    rows = np.asarray(vectors, dtype=np.float32) if unit else _unit_rows(vectors)
    if codes is None:
        return rows
    return _blend(rows, category_rows(codes))


def _blend(unit: NDArray[np.float32], cats: NDArray[np.float32]) -> NDArray[np.float32]:
    out = np.empty((len(unit), unit.shape[1] + cats.shape[1]), dtype=np.float32)
    half = np.float32(np.sqrt(0.5))
    np.multiply(unit, half, out=out[:, : unit.shape[1]])
    np.multiply(cats, half, out=out[:, unit.shape[1]:])
    return out


def blended_similarity(vectors: NDArray[np.floating], codes: NDArray[np.int64] | None) -> NDArray[np.float32]:
    """``[n, n]`` form of the similarity :func:`diversity_vectors` encodes (for analysis and tests)."""
    rows = diversity_vectors(vectors, codes)
    out: NDArray[np.float32] = rows @ rows.T
    return out


def intra_list_similarity(vectors: NDArray[np.floating]) -> float:
    """Mean pairwise cosine similarity of a list's item vectors (``0`` for fewer than two items)."""
    n = len(vectors)
    if n < 2:
        return 0.0
    unit = _unit_rows(vectors)
    sims = unit @ unit.T
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))
