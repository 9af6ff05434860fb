"""Result and event types returned by and given to the public API. No I/O here."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "EVENT_TYPES",
    "MAX_POSITION",
    "DegradedReason",
    "EventLike",
    "EventType",
    "FeedbackEvent",
    "ItemId",
    "Recommendation",
    "Recommendations",
    "Source",
    "Status",
    "UserId",
]

UserId = str | int
ItemId = str

Source = Literal["personalized", "popular", "similar", "query", "fallback"]
"""Where an item came from: the interest model, the popularity ranking, item-to-item similarity, or the
configured fallback list."""

DegradedReason = Literal[
    "not_ready",
    "model_error",
    "nonfinite_scores",
    "profile_unavailable",
    "closed",
    "internal_error",
]

EventType = Literal["impression", "view", "click", "cart", "purchase", "rating", "dislike", "hide", "skip"]
EVENT_TYPES: frozenset[str] = frozenset(
    {"impression", "view", "click", "cart", "purchase", "rating", "dislike", "hide", "skip"}
)
"""Every accepted feedback type; docs/concepts.md ("Feedback signals") says what each does at once and in
training. ``rating`` carries ``value`` 1-5; ``impression`` carries the ``rec_id`` of the answer shown."""
MAX_POSITION = 10_000
"""Positions are 0-based slots of an answer; anything from here up is refused as not a position."""


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One ranked item.

    Attributes:
        item_id: the external item id.
        score: the item's own score (higher is better; comparable within one answer only): the retrieval score,
            or the ranker's click probability; diversity and merchandising rules reorder items without changing
            their scores, so the answer's order, not the score, is the ranking.
        source: where the item came from (the model, the popularity ranking, similarity or the fallback list).
        reason: with ``explain=True``, a short text saying why this item (the history items most like it);
            ``None`` otherwise. Why a whole answer was degraded is :attr:`Recommendations.degraded_reason`.
    """

    item_id: str
    score: float
    source: Source
    reason: str | None = None

    def __repr__(self) -> str:
        return f"Recommendation({self.item_id!r}, score={self.score:.4f}, source={self.source!r})"


@dataclass(frozen=True, slots=True)
class Recommendations:
    """A ranked answer for one request.

    Iterating yields :class:`Recommendation` objects, best first.

    Attributes:
        items: the ranked items.
        model_version: the bundle version that produced the answer (``None`` when no bundle was loaded).
        degraded: whether infrastructure trouble forced a lower rung of the fallback ladder.
        degraded_reason: why, when degraded.
        rec_id: an id to pass back with feedback, for attribution.
        rules: ids of the merchandising rules that changed this answer (pinned, boosted, buried, ...).
    """

    items: tuple[Recommendation, ...]
    model_version: str | None
    rec_id: str
    degraded: bool = False
    degraded_reason: DegradedReason | None = None
    rules: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Recommendation]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Recommendation:
        return self.items[i]

    @property
    def item_ids(self) -> list[str]:
        """The item ids, best first."""
        return [r.item_id for r in self.items]

    @property
    def scores(self) -> list[float]:
        """The scores, best first."""
        return [r.score for r in self.items]

    def __repr__(self) -> str:
        head = ", ".join(repr(i) for i in self.item_ids[:5])
        more = ", ..." if len(self.items) > 5 else ""
        flag = f", degraded={self.degraded_reason!r}" if self.degraded else ""
        return f"Recommendations([{head}{more}], model_version={self.model_version!r}{flag})"


@dataclass(frozen=True, kw_only=True, slots=True)
class FeedbackEvent:
    """One interaction reported by the storefront.

    Attributes:
        user: the storefront's user id (kept local; only a pseudonym leaves the process).
        item: the external item id.
        type: one of :data:`EVENT_TYPES` (``impression``, ``view``, ``click``, ``cart``, ``purchase``,
            ``rating``, ``dislike``, ``hide``, ``skip``).
        ts: Unix time in seconds (now when omitted).
        value: an optional finite number (a price, a dwell time); required for ``rating``: 1 to 5.
        rec_id: the ``rec_id`` of the answer that showed the item, for attribution (required for
            ``impression``).
        event_id: a unique id; minted when omitted, used by the hub to drop duplicates.
        position: the 0-based slot of the item in that answer, when the page knows it.
    """

    user: str
    item: str
    type: str
    ts: float
    value: float | None = None
    rec_id: str | None = None
    event_id: str = ""
    position: int | None = None

    def is_finite(self) -> bool:
        return self.value is None or math.isfinite(self.value)


EventLike = FeedbackEvent | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of a recommender's state, for dashboards and health checks.

    Attributes:
        model_version: the version serving now (``None`` before the first bundle).
        n_items: items in the serving catalog.
        ready: whether a bundle is serving.
        closed: whether ``close()`` was called.
        bundle_origin: where the serving bundle came from (``"path"``, ``"demo"``, ``"disk"``, ``"hub"``).
        counters: requests, degraded answers by reason, feedback accepted and refused, cache hits.
        sync: the hub sync state (empty without a hub).
        device: where the serving model and top-K run (``"cpu"``, ``"cuda"``; ``None`` before a bundle).
        index: the serving top-K backend (``"numpy"``, ``"onnx"``, ``"ivf"``; ``None`` before a bundle).
        takes_query: whether the serving model reads ``query=`` text (a bundle built with item text); other
            bundles ignore a query with a warning.
    """

    model_version: str | None
    n_items: int
    ready: bool
    closed: bool
    bundle_origin: str | None
    counters: Mapping[str, int]
    sync: Mapping[str, Any]
    device: str | None = None
    index: str | None = None
    takes_query: bool = False
