"""Baselines evaluated next to the model: popularity and recency-weighted ItemKNN (pure numpy).

ItemKNN-cosine: ``sim(i, j) = c(i, j) / sqrt(n_i * n_j)`` where ``c`` counts users whose history holds both
items and ``n`` counts users per item. A user's score for item ``j`` is ``sum_i w_i * sim(i, j)`` over the
history items ``i``, with ``w_i = decay ** age`` (age 0 = the newest item). ``decay = 0.5`` is the setting
quoted in the data sets' PROVENANCE files.

Example:
    >>> import numpy as np
    >>> knn = ItemKNN.fit([np.array([0, 1]), np.array([1, 2])], n_items=3)
    >>> knn.scores([np.array([0])]).round(3).tolist()
    [[0.0, 0.707, 0.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["ItemKNN", "popularity_counts"]


def popularity_counts(seqs: Sequence[NDArray[np.int64]], n_items: int) -> NDArray[np.float32]:
    """How many interactions each item row has in ``seqs``."""
    if not seqs:
        return np.zeros(n_items, dtype=np.float32)
    return np.bincount(np.concatenate(seqs), minlength=n_items).astype(np.float32)


@dataclass(frozen=True)
class ItemKNN:
    """Item-item cosine similarity in CSR form (no self-pairs)."""

    n_items: int
    indptr: NDArray[np.int64]
    indices: NDArray[np.int64]
    sims: NDArray[np.float32]
    decay: float = 0.5

    @classmethod
    def fit(cls, seqs: Sequence[NDArray[np.int64]], *, n_items: int, decay: float = 0.5) -> ItemKNN:
        """Count co-occurrences over ``seqs`` (one set of items per user)."""
        keys: list[NDArray[np.int64]] = []
        item_users = np.zeros(n_items, dtype=np.float64)
        for s in seqs:
            u = np.unique(s)
            if len(u) == 0:
                continue
            item_users[u] += 1
            if len(u) < 2:
                continue
            a = np.repeat(u, len(u))
            b = np.tile(u, len(u))
            keep = a != b
            keys.append(a[keep] * n_items + b[keep])
        if keys:
            uniq, counts = np.unique(np.concatenate(keys), return_counts=True)
        else:
            uniq, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
        rows, cols = np.divmod(uniq, n_items)
        sims = counts / np.sqrt(item_users[rows] * item_users[cols])
        indptr = np.zeros(n_items + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_items), out=indptr[1:])
        return cls(n_items, indptr, cols.astype(np.int64), sims.astype(np.float32), decay)

    def scores(self, histories: Sequence[NDArray[np.int64]]) -> NDArray[np.float32]:
        """Scores ``[len(histories), n_items]``: recency-weighted sums of the history items' rows."""
        b, n = len(histories), self.n_items
        lens = np.array([len(h) for h in histories], dtype=np.int64)
        if lens.sum() == 0:
            return np.zeros((b, n), dtype=np.float32)
        items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
        user = np.repeat(np.arange(b, dtype=np.int64), lens)
        ends = np.repeat(np.cumsum(lens), lens)
        age = ends - 1 - np.arange(len(items))
        weight = self.decay ** age.astype(np.float64)
        starts = self.indptr[items]
        row_len = self.indptr[items + 1] - starts
        total = int(row_len.sum())
        if total == 0:
            return np.zeros((b, n), dtype=np.float32)
        offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(row_len) - row_len, row_len)
        pos = np.repeat(starts, row_len) + offsets
        flat = np.repeat(user, row_len) * n + self.indices[pos]
        vals = np.repeat(weight, row_len) * self.sims[pos]
        return np.bincount(flat, weights=vals, minlength=b * n).reshape(b, n).astype(np.float32)
