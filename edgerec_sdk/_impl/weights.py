"""Event weights: what one stored event says about a user's interest (pure; shared by serving and training)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ..profile import ProfileEvent

if TYPE_CHECKING:
    from ..config import FeedbackConfig
    from .serving import ServingState

__all__ = ["HistorySignals", "event_weight", "split_history", "user_rows"]


def event_weight(
    kind: str, value: float | None, weights: Mapping[str, float], *, negative_rating_max: float = 2.0
) -> float:
    """The weight of one event: > 0 interest, 0 seen only, < 0 an explicit negative.

    A rating at or below ``negative_rating_max`` stars is negative whatever the ``rating`` weight says; a
    rating without stars (stored before ratings kept them) counts as a plain positive rating.
    """
    if kind == "rating" and value is not None and value <= negative_rating_max:
        return min(-1.0, weights.get("dislike", -1.0))
    return float(weights.get(kind, 0.0))


@dataclass(frozen=True, slots=True)
class HistorySignals:
    """One user's stored events read for serving."""

    interest: list[str]
    """Items that feed the interest model, oldest first (at most ``max_len``)."""
    seen: list[str]
    """Every item the user touched (left out of answers when ``exclude_seen``)."""
    negatives: list[str]
    """Items whose latest signal is negative: never served, their neighbours demoted."""


def split_history(
    events: Sequence[ProfileEvent], weights: Mapping[str, float], *, max_len: int, negative_rating_max: float = 2.0
) -> HistorySignals:
    """Sort a stored history into interest, seen and negative items.

    An item's latest explicit signal wins: a dislike after a click makes it negative (and drops the click from
    the interest history), a purchase after a dislike makes it positive again. When more positive events
    remain than the model reads (``max_len``), the heaviest are kept, newest first among equals, in their
    original order: a purchase outlives a later run of views.
    """
    weighted = [(e, event_weight(e.type, e.value, weights, negative_rating_max=negative_rating_max))
                for e in events]
    latest: dict[str, float] = {}
    for e, w in weighted:
        if w != 0.0:
            latest[e.item] = w
    negatives = [item for item, w in latest.items() if w < 0]
    bad = set(negatives)
    positive = [(i, e.item, w) for i, (e, w) in enumerate(weighted) if w > 0 and e.item not in bad]
    if len(positive) > max_len:
        keep = sorted(positive, key=lambda p: (p[2], p[0]), reverse=True)[:max_len]
        positive = sorted(keep)
    return HistorySignals(interest=[item for _, item, _ in positive], seen=[e.item for e in events],
                          negatives=negatives)


def user_rows(
    state: ServingState, given: Sequence[str] | None, events: Sequence[ProfileEvent], config: FeedbackConfig, *,
    exclude_seen: bool,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Rows of one user's interest history, of the items left out of the answer, and of the negatives.

    ``given`` (a request's ``history=``) is interest and seen at once, without negatives; otherwise the stored
    ``events`` are split by weight. A negative is left out even with ``exclude_seen=False``.
    """
    if given is not None:
        rows = state.rows_of([str(h) for h in given])
        return rows, rows if exclude_seen else np.empty(0, np.int64), np.empty(0, np.int64)
    signals = split_history(events, config.weights, max_len=state.model.max_seq_len,
                            negative_rating_max=config.negative_rating_max)
    rows = state.rows_of(signals.interest)
    negatives = state.rows_of(signals.negatives) if signals.negatives else np.empty(0, np.int64)
    return rows, state.rows_of(signals.seen) if exclude_seen else negatives, negatives
