"""A fixed-bucket latency histogram for ``recommend`` calls (the edge metrics' ``*_duration_seconds``).

Cumulative counts as Prometheus expects them; no dependency (the runtime never needs prometheus-client).
"""

from __future__ import annotations

import bisect
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

#: Upper bounds in seconds: in-process answers take around a millisecond, a cold or degraded one longer.
BUCKETS_S = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_F = TypeVar("_F", bound=Callable[..., Any])


class LatencyHistogram:
    """Thread-safe; ``observe`` costs a bisect and a locked increment."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS_S) -> None:
        self.buckets = buckets
        self._lock = threading.Lock()
        self._counts = [0] * (len(buckets) + 1)  # the last slot is +Inf
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative counts per bucket (``+Inf`` last, equal to the total count) and the sum of seconds."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        running, cumulative = 0, []
        for c in counts:
            running += c
            cumulative.append(running)
        return cumulative, total

    def postfork(self) -> None:
        self._lock = threading.Lock()


def timed(method: _F) -> _F:
    """Record the call's wall time in ``self._counters.latency``, whatever it returns or raises."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._counters.latency.observe(time.perf_counter() - start)

    return call  # type: ignore[return-value]
