"""Impression-aware decay: items shown to a user many times without a click rotate down.

Two parts any ranking stage can use: :class:`ImpressionMemory` counts, per user and item, the shows since the
user last acted on the item (in process, bounded), and :func:`rotate` reorders a ranked candidate list by
those counts. Rank-based rather than score-based, so one knob means the same for every model's score scale.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from cachetools import LRUCache
from numpy.typing import NDArray

__all__ = ["ImpressionMemory", "rotate"]


class ImpressionMemory:
    """Per user: how often each item was shown since the user last acted on it.

    Args:
        max_users: users kept (least recently shown evicted first).
        max_items_per_user: items counted per user (a user's least recently counted items are dropped first).
    """

    def __init__(self, *, max_users: int = 100_000, max_items_per_user: int = 1000) -> None:
        self._users: LRUCache[str, dict[str, int]] = LRUCache(maxsize=max_users)
        self._max_items = max_items_per_user
        self._lock = threading.Lock()

    def shown(self, user: str, items: Iterable[str]) -> None:
        """Count one show of each of ``items`` to ``user``."""
        with self._lock:
            counts = self._users.get(user)
            if counts is None:
                counts = {}
                self._users[user] = counts
            for item in items:
                counts[item] = counts.pop(item, 0) + 1  # re-insert: dict order is least recently counted first
            while len(counts) > self._max_items:
                del counts[next(iter(counts))]

    def acted(self, user: str, item: str) -> None:
        """The user clicked (or otherwise acted on) ``item``: its count starts over."""
        with self._lock:
            counts = self._users.get(user)
            if counts is not None:
                counts.pop(item, None)

    def counts(self, user: str) -> Mapping[str, int]:
        """A copy of the user's counts (empty for a user never shown anything)."""
        with self._lock:
            counts = self._users.get(user)
            return dict(counts) if counts else {}

    def forget(self, user: str) -> None:
        with self._lock:
            self._users.pop(user, None)

    def postfork(self) -> None:
        """A lock held by another thread at fork time would never be released in the child."""
        self._lock = threading.Lock()


def rotate(
    item_ids: Sequence[str], counts: Mapping[str, int], *, free_shows: int, step: float
) -> NDArray[np.int64]:
    """The order of a best-first candidate list after impression decay.

    Each item moves down ``step`` slots per show beyond ``free_shows``; ties keep the original order. Returns
    indices into ``item_ids`` (the identity when nothing is over its free shows or ``step`` is 0).
    """
    n = len(item_ids)
    if not counts or step <= 0 or n == 0:
        return np.arange(n, dtype=np.int64)
    over = np.fromiter((max(0, counts.get(i, 0) - free_shows) for i in item_ids), dtype=np.float64, count=n)
    if not over.any():
        return np.arange(n, dtype=np.int64)
    return np.argsort(np.arange(n, dtype=np.float64) + step * over, kind="stable").astype(np.int64)
