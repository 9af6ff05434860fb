"""``Sync``: what the Recommender asks of its hub connection, so that :class:`EdgeSync` and :class:`NullSync`
(and a test double) are interchangeable and type-checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .outbox import PutResult

if TYPE_CHECKING:
    from ..bundle import Bundle

__all__ = ["Sync"]


class Sync(Protocol):
    """The hub connection of one process: model updates in, feedback out.

    Every method is bounded in time and never raises for hub or disk trouble; ``put`` and ``forget`` run on the
    request path.
    """

    def load_last_good(self) -> Bundle | None:
        """The last good bundle on disk, re-verified, or ``None``."""
        ...

    def load_saved_artifacts(self) -> int:
        """Replay the channel artifacts kept on disk; return how many applied."""
        ...

    def poll_artifacts(self) -> float:
        """One poll of every followed artifact kind; the seconds until the next."""
        ...

    def pseudonym(self, user: str) -> str:
        """The user's pseudonym (what the hub sees)."""
        ...

    def put(self, event: Mapping[str, Any]) -> PutResult | None:
        """Queue one validated feedback event; the outbox's verdict, or ``None`` when nothing was queued."""
        ...

    def put_later(self, event: Mapping[str, Any]) -> None:
        """Queue an event (an impression row) to be stored off the request path, by the uploader thread."""
        ...

    def store_later(self) -> int:
        """Move the events queued by ``put_later`` into the outbox now; return how many."""
        ...

    def forget(self, user: str) -> int:
        """Erase the user's pending events and tell the hub; return the rows erased."""
        ...

    def in_rollout(self, user: str, percent: float) -> bool:
        """Whether ``user`` is among the ``percent`` % a rolled-out candidate serves (sticky)."""
        ...

    def start(self) -> None:
        """Start the background threads (idempotent)."""
        ...

    def poll_once(self) -> float:
        """One model-update step without the thread; the seconds until the next."""
        ...

    def upload_once(self) -> float:
        """One feedback-upload step without the thread; the seconds until the next."""
        ...

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Deliver everything pending within ``timeout_s``; whether nothing is left."""
        ...

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop, flush with a deadline, release files and sockets (idempotent); whether everything was delivered."""
        ...

    def postfork(self) -> None:
        """Rebuild locks, clients and threads in a forked child."""
        ...

    def status(self) -> dict[str, Any]:
        """Counters and state for ``Recommender.status()``."""
        ...
