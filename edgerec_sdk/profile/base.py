"""The profile store protocol; its one error type, :class:`ProfileUnavailableError`, lives in ``errors``."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ..errors import ProfileUnavailableError

__all__ = ["ProfileEvent", "ProfileStore", "ProfileUnavailableError"]


class ProfileEvent(NamedTuple):
    """One remembered interaction."""

    item: str
    type: str
    ts: float
    value: float | None = None
    """The event's value where it matters on the edge (a rating's stars); ``None`` otherwise."""


class ProfileStore(Protocol):
    """Where per-user recent history lives (in process, a host's SQLite file, Redis)."""

    def get(self, user: str) -> list[ProfileEvent]:
        """The user's events, oldest first (empty for an unknown user)."""
        ...

    def append(self, user: str, event: ProfileEvent) -> None:
        """Add one event at the newest end, trimming to the store's per-user cap."""
        ...

    def forget(self, user: str) -> None:
        """Erase everything held about the user."""
        ...

    def close(self) -> None:
        """Release resources; idempotent."""
        ...
