from __future__ import annotations

import threading


class FakeClock:
    """Monotonic and wall time that move only when told; ``wait`` advances instead of sleeping."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall = wall
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        if event.is_set():
            return True
        self.waits.append(timeout_s)
        self.advance(max(0.0, timeout_s))
        return event.is_set()
