"""In-process profile store: an LRU of bounded per-user deques."""

from __future__ import annotations

import threading
from collections import deque

from cachetools import LRUCache

from .base import ProfileEvent


class MemoryProfileStore:
    """Keeps the newest ``max_events_per_user`` events of at most ``max_users`` users in this process.

    Args:
        max_events_per_user: events kept per user.
        max_users: users kept; the least recently used is evicted first.
    """

    def __init__(self, *, max_events_per_user: int = 200, max_users: int = 100_000) -> None:
        self._max_events = max_events_per_user
        self._users: LRUCache[str, deque[ProfileEvent]] = LRUCache(maxsize=max_users)
        # LRUCache reorders on read, so reads need the lock too.
        self._lock = threading.Lock()

    def get(self, user: str) -> list[ProfileEvent]:
        with self._lock:
            events = self._users.get(user)
            return list(events) if events is not None else []

    def append(self, user: str, event: ProfileEvent) -> None:
        with self._lock:
            events = self._users.get(user)
            if events is None:
                events = deque(maxlen=self._max_events)
                self._users[user] = events
            events.append(event)

    def forget(self, user: str) -> None:
        with self._lock:
            self._users.pop(user, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._users)

    def close(self) -> None:
        with self._lock:
            self._users.clear()

    def postfork(self) -> None:
        """A lock held by another thread at fork time would never be released in the child."""
        self._lock = threading.Lock()
