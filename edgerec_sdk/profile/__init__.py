"""Per-user recent history: the profile store.

A store keeps, per user, the newest events (item id, type, time), oldest first. It knows nothing about
models: the recommender maps item ids to rows of the bundle it is serving.
"""

from __future__ import annotations

from .base import ProfileEvent, ProfileStore
from .memory import MemoryProfileStore

__all__ = ["MemoryProfileStore", "ProfileEvent", "ProfileStore"]
