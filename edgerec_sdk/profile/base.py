"""The profile store protocol and its one error type."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ..errors import EdgerecError

__all__ = ["ProfileEvent", "ProfileStore", "ProfileUnavailableError"]


class ProfileEvent(NamedTuple):
    """One remembered interaction."""

    item: str
    type: str
    ts: float


class ProfileUnavailableError(EdgerecError):
    """A shared profile store (SQLite file, Redis) could not be read or written in time.

    Stores translate their driver's errors (``sqlite3.Error``, ``redis.RedisError``) into this type, so the
    recommender degrades with reason ``profile_unavailable`` instead of failing the request.
    """


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
