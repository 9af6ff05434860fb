"""Impression-aware decay: items shown to a user many times without a click rotate down.

Two parts any ranking stage can use: :class:`ImpressionMemory` counts, per user and item, the shows since the
user last acted on the item (in process, bounded), and :func:`rotate` reorders a ranked candidate list by
those counts. Rank-based rather than score-based, so one knob means the same for every model's score scale.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from cachetools import LRUCache
from numpy.typing import NDArray

__all__ = ["ImpressionMemory", "rotate", "rotate_rows"]


class ImpressionMemory:
    """Per user: how often each item was shown since the user last acted on it.

    Args:
        max_users: users kept (least recently shown evicted first).
        max_items_per_user: items counted per user (a user's least recently counted items are dropped first).
        free_shows: shows an item gets before :meth:`over_free_shows` lists it.
    """

    def __init__(self, *, max_users: int = 100_000, max_items_per_user: int = 1000, free_shows: int = 3) -> None:
        # per user: every count, and the shortlist of items over free_shows (all the request path reads)
        self._users: LRUCache[str, tuple[dict[str, int], dict[str, int]]] = LRUCache(maxsize=max_users)
        self._max_items = max_items_per_user
        self._free = free_shows
        self._lock = threading.Lock()

    def shown(self, user: str, items: Iterable[str]) -> None:
        """Count one show of each of ``items`` to ``user``."""
        with self._lock:
            entry = self._users.get(user)
            if entry is None:
                entry = self._users[user] = ({}, {})
            counts, over = entry
            for item in items:
                n = counts.pop(item, 0) + 1  # re-insert: dict order is least recently counted first
                counts[item] = n
                if n > self._free:
                    over[item] = n
            while len(counts) > self._max_items:
                old = next(iter(counts))
                del counts[old]
                over.pop(old, None)

    def acted(self, user: str, item: str) -> None:
        """The user clicked (or otherwise acted on) ``item``: its count starts over."""
        with self._lock:
            entry = self._users.get(user)
            if entry is not None:
                entry[0].pop(item, None)
                entry[1].pop(item, None)

    def counts(self, user: str) -> Mapping[str, int]:
        """A copy of the user's counts (empty for a user never shown anything)."""
        with self._lock:
            entry = self._users.get(user)
            return dict(entry[0]) if entry else {}

    def over_free_shows(self, user: str) -> Mapping[str, int]:
        """A copy of the user's items shown more than ``free_shows`` times since the user last acted on them."""
        with self._lock:
            entry = self._users.get(user)
            return dict(entry[1]) if entry and entry[1] else {}

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
    # a few dozen candidates: plain Python beats numpy's per-call overhead here
    moved = {i: i + step * (c - free_shows) for i, item in enumerate(item_ids)
             if (c := counts.get(item)) is not None and c > free_shows}
    if not moved:
        return np.arange(n, dtype=np.int64)
    return np.asarray(sorted(range(n), key=lambda i: moved.get(i, i)), dtype=np.int64)


def rotate_rows(
    rows: NDArray[np.int64], counts: Mapping[str, int], row_of: Callable[[str], int | None], *, free_shows: int,
    step: float,
) -> NDArray[np.int64]:
    """:func:`rotate` for catalogue rows: ``counts`` maps an item id to its shows, ``row_of`` an id to its row
    (``None`` when unknown). A candidate list is ~100 rows (the ranking stages ask for that many) while a user's
    counted items are few, so each counted item is looked up in the list, and the order is one stable sort: on
    the request path every numpy call and every pass over the candidates costs microseconds."""
    n = len(rows)
    if n == 0 or step <= 0 or not counts:
        return np.arange(n, dtype=np.int64)
    listed = rows.tolist()
    present = set(listed)
    moved = [(listed.index(row), c - free_shows) for item, c in counts.items()
             if c > free_shows and (row := row_of(item)) in present]
    if not moved:
        return np.arange(n, dtype=np.int64)
    keys = np.arange(n, dtype=np.float64)
    for at, over in moved:
        keys[at] = at + step * over
    return np.argsort(keys, kind="stable")
