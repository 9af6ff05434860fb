from __future__ import annotations

from edgerec_sdk.profile import MemoryProfileStore, ProfileStore

from .contract import ProfileStoreContract


class TestMemoryProfileStore(ProfileStoreContract):
    def make_store(self, max_events_per_user: int = 200) -> ProfileStore:
        return MemoryProfileStore(max_events_per_user=max_events_per_user)
