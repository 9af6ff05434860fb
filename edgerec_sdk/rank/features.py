"""The CTR ranker's features, computed the same way on the edge (serving) and in training.

Every feature is a function of the bundle, the user's history rows and the candidate's retrieval score, so the
edge computes them without any store or network call:

==================  =================================================================================
``score``           the retrieval score (interest vector . item vector)
``score_gap``       the score minus the user's best candidate score (0 for the top item)
``popularity``      ``1 - log1p(popularity rank) / log1p(n_items)``; 0 for items outside the bundle's list
``recency``         ``exp(-age / 90 days)`` from an ``added_at`` catalogue column (Unix seconds); 0 without
``category``        mean share of the user's recent history in each of the item's categories
``brand``           share of the user's recent history with the item's brand
``price_fit``       ``-|log price - median log price of the history|``; 0 when either is unknown
``price_missing``   1 when the item or the history has no price
``position``        ``log1p(slot)`` where the item was shown; always 0 when serving, so the model learns
                    the position bias from the logs and serves every candidate as if shown first
==================  =================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from ..bundle import Bundle

__all__ = ["FEATURES", "HISTORY_WINDOW", "RankFeatures"]

FEATURES: Final = (
    "score", "score_gap", "popularity", "recency", "category", "brand", "price_fit", "price_missing", "position",
)
HISTORY_WINDOW: Final = 50
"""Newest history items the affinity features read."""
_MAX_CATEGORIES: Final = 8
_RECENCY_S: Final = 90 * 86400.0


class RankFeatures:
    """Per-bundle lookup tables (built once per serving state) and the per-request feature matrix."""

    def __init__(self, bundle: Bundle) -> None:
        catalog = bundle.catalog
        n = len(catalog)
        self.n_items = n
        popular = np.asarray(bundle.popular, dtype=np.int64)
        self.popularity = np.zeros(n, dtype=np.float32)
        self.popularity[popular] = 1.0 - np.log1p(np.arange(len(popular))) / math.log1p(max(n, 1))
        columns = catalog.columns
        self.added_at = _numbers(columns.get("added_at"), n)
        self.log_price = np.log(np.where(_numbers(columns.get("price"), n) > 0,
                                         _numbers(columns.get("price"), n), np.nan))
        self.cat_codes, self.n_cats = _codes(columns.get("category"), n, multi=True)
        brand_codes, self.n_brands = _codes(columns.get("brand"), n, multi=False)
        self.brand_codes = brand_codes[:, 0]
        # Serving-time forms: codes shifted by one (0 = none) index a share table whose slot 0 stays 0, and the
        # per-item category counts are kept, so a request does no masking; absent columns skip their feature.
        self._cat_shifted = self.cat_codes + 1
        self._cat_counts = np.maximum((self.cat_codes >= 0).sum(axis=1), 1).astype(np.float32)
        self._brand_shifted = self.brand_codes + 1
        self._has_added = bool(np.isfinite(self.added_at).any())
        self._has_price = bool(np.isfinite(self.log_price).any())

    def matrix(
        self,
        history: NDArray[np.int64],
        rows: NDArray[np.int64],
        scores: NDArray[np.floating],
        *,
        top_score: float,
        now: float,
        positions: NDArray[np.integer] | None = None,
    ) -> NDArray[np.float32]:
        """The ``[len(rows), len(FEATURES)]`` feature matrix of one user's candidates."""
        hist = history[-HISTORY_WINDOW:]
        m = len(rows)
        out = np.zeros((m, len(FEATURES)), dtype=np.float32)
        out[:, 0] = scores
        out[:, 1] = out[:, 0] - np.float32(top_score)
        out[:, 2] = self.popularity[rows]
        if self._has_added:
            added = self.added_at[rows]
            out[:, 3] = np.where(np.isfinite(added), np.exp(-np.clip(now - added, 0.0, None) / _RECENCY_S), 0.0)
        if len(hist):
            if self.n_cats:
                share = np.bincount(self._cat_shifted[hist].ravel(), minlength=self.n_cats + 1) / len(hist)
                share[0] = 0.0  # slot 0 is "no category"
                out[:, 4] = share[self._cat_shifted[rows]].sum(axis=1) / self._cat_counts[rows]
            if self.n_brands:
                share = np.bincount(self._brand_shifted[hist], minlength=self.n_brands + 1) / len(hist)
                share[0] = 0.0
                out[:, 5] = share[self._brand_shifted[rows]]
        known = self.log_price[hist] if len(hist) and self._has_price else np.zeros(0)
        known = known[np.isfinite(known)]
        if len(known):
            item_price = self.log_price[rows]
            fit = -np.abs(item_price - float(np.median(known)))
            out[:, 6] = np.where(np.isfinite(fit), fit, 0.0)
            out[:, 7] = ~np.isfinite(item_price)
        else:
            out[:, 7] = 1.0
        if positions is not None:
            out[:, 8] = np.log1p(np.asarray(positions, dtype=np.float32))
        return out


def _numbers(values: Sequence[Any] | None, n: int) -> NDArray[np.float64]:
    out = np.full(n, np.nan)
    if values is None:
        return out
    for i, v in enumerate(values):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[i] = float(v)
    return out


def _codes(values: Sequence[Any] | None, n: int, *, multi: bool) -> tuple[NDArray[np.int64], int]:
    """Integer codes of a (list-valued) string column, ``-1`` padded; and the vocabulary size."""
    width = _MAX_CATEGORIES if multi else 1
    out = np.full((n, width), -1, dtype=np.int64)
    if values is None:
        return out, 0
    vocab: dict[str, int] = {}
    for i, v in enumerate(values):
        items = v if isinstance(v, tuple) else (v,) if isinstance(v, str) else ()
        for j, name in enumerate(items[:width]):
            out[i, j] = vocab.setdefault(name, len(vocab))
    return out, len(vocab)
