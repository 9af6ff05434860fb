"""The read-only catalog view behind ``Recommender.items``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..recommender import Recommender

__all__ = ["ItemCatalog"]


class ItemCatalog:
    """Read-only view of the serving catalog; follows model swaps."""

    def __init__(self, owner: Recommender) -> None:
        self._owner = owner

    def _catalog(self) -> Any:
        state = self._owner._state
        return None if state is None else state.bundle.catalog

    def __len__(self) -> int:
        cat = self._catalog()
        return 0 if cat is None else len(cat)

    def __contains__(self, item_id: object) -> bool:
        cat = self._catalog()
        return cat is not None and isinstance(item_id, str) and item_id in cat

    def __iter__(self) -> Iterator[str]:
        cat = self._catalog()
        return iter(()) if cat is None else iter(cat)

    def __getitem__(self, item_id: str) -> dict[str, Any]:
        cat = self._catalog()
        row = None if cat is None else cat.row(item_id)
        if row is None:
            raise KeyError(item_id)
        return dict(cat.metadata(row))

    def get(self, item_id: str, default: Any = None) -> Any:
        """The item's metadata, or ``default`` when the catalog does not know it."""
        try:
            return self[item_id]
        except KeyError:
            return default
