"""Explanations: which history items drove each recommended item."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ..bundle import Bundle

__all__ = ["explain_items"]


def explain_items(
    bundle: Bundle, history_rows: NDArray[np.int64], item_rows: Sequence[int], *, top: int = 2
) -> list[str]:
    """One reason per recommended row naming the history items most similar to it.

    Contribution is the cosine similarity of item vectors, weighted towards recent events, because the
    interest model reads the same vectors and leans on the newest items.
    """
    if len(history_rows) == 0 or len(item_rows) == 0:
        return ["popular right now"] * len(item_rows)
    hist = np.unique(history_rows[-50:])
    recency = {int(r): i for i, r in enumerate(history_rows[-50:])}
    hv = bundle.vectors.rows_f32(hist)
    cv = bundle.vectors.rows_f32(np.asarray(item_rows, dtype=np.int64))
    hv = hv / np.maximum(np.linalg.norm(hv, axis=1, keepdims=True), 1e-12)
    cv = cv / np.maximum(np.linalg.norm(cv, axis=1, keepdims=True), 1e-12)
    weights = np.array([0.9 ** (len(history_rows[-50:]) - 1 - recency[int(r)]) for r in hist], dtype=np.float32)
    contrib = (cv @ hv.T) * (0.5 + 0.5 * weights)
    reasons = []
    catalog = bundle.catalog
    for row_contrib in contrib:
        best = np.argsort(-row_contrib, kind="stable")[:top]
        names = []
        for j in best:
            meta = catalog.metadata(int(hist[j]))
            title = meta.get("title")
            names.append(f"{title} ({meta['id']})" if title else str(meta["id"]))
        reasons.append("because you interacted with " + " and ".join(names))
    return reasons
