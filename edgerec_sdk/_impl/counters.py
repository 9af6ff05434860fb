"""Thread-safe named counters, reported by ``status()``, and the request latency histogram."""

from __future__ import annotations

import threading
from collections import Counter

from .latency import LatencyHistogram


class Counters:
    """A lock-protected ``Counter``; increments are cheap and never raise."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self.latency = LatencyHistogram()

    def incr(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._counts[name] += by

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def postfork(self) -> None:
        self._lock = threading.Lock()
        self.latency.postfork()
