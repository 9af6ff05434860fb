"""Per-user recent history: the profile store.

A store keeps, per user, the newest events (item id, type, time), oldest first. It knows nothing about
models: the recommender maps item ids to rows of the bundle it is serving.

* :class:`MemoryProfileStore`: this process only (the default).
* :class:`SqliteProfileStore`: one WAL-mode SQLite file shared by the worker processes of a host.
* :class:`RedisProfileStore`: Redis, shared by many hosts (extra ``[redis]``, loaded on first use).

:func:`make_profile_store` builds one from a settings string (``RecommenderConfig.profile_store``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import ProfileEvent, ProfileStore, ProfileUnavailableError
from .factory import make_profile_store, parse_profile_spec
from .memory import MemoryProfileStore
from .sqlite import SqliteProfileStore

if TYPE_CHECKING:
    from .redis import RedisProfileStore

__all__ = [
    "MemoryProfileStore",
    "ProfileEvent",
    "ProfileStore",
    "ProfileUnavailableError",
    "RedisProfileStore",
    "SqliteProfileStore",
    "make_profile_store",
    "parse_profile_spec",
]


def __getattr__(name: str) -> Any:
    # RedisProfileStore lives behind the [redis] extra; its module only imports redis when a store is made,
    # but it is loaded on first access all the same, so `import edgerec_sdk` never touches it.
    if name == "RedisProfileStore":
        from .redis import RedisProfileStore

        return RedisProfileStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
