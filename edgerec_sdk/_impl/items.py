"""``Recommender.items``: the serving catalogue, read-only as a mapping, changed only through catalogue deltas."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..bundle.delta import CatalogueDelta, make_delta, parse_delta
from .livecat import LiveCatalogue

if TYPE_CHECKING:
    from ..recommender import Recommender
    from ..sync.artifacts import Artifact

__all__ = ["ItemCatalog"]


class ItemCatalog:
    """The serving catalogue (the bundle's, with the live catalogue laid over it); follows model swaps.

    ``upsert``/``delete``/``apply_delta`` change what this process serves at once, whole or not at all; with
    a hub, ``edgerec items upsert``/``delete`` publish signed deltas that every edge applies the same way.
    """

    def __init__(self, owner: Recommender) -> None:
        self._owner = owner
        self.live = LiveCatalogue()
        self._lock = threading.Lock()

    def _catalog(self) -> Any:
        state = self._owner._state
        return None if state is None else state.bundle.catalog

    def __len__(self) -> int:
        cat = self._catalog()
        return 0 if cat is None else len(cat)

    def __contains__(self, item_id: object) -> bool:
        cat = self._catalog()
        return cat is not None and isinstance(item_id, str) and item_id in cat and item_id not in self.live.deleted

    def __iter__(self) -> Iterator[str]:
        cat = self._catalog()
        return iter(()) if cat is None else iter(cat)

    def __getitem__(self, item_id: str) -> dict[str, Any]:
        cat = self._catalog()
        row = None if cat is None or item_id in self.live.deleted else cat.row(item_id)
        if row is None:
            raise KeyError(item_id)
        return dict(cat.metadata(row))

    def get(self, item_id: str, default: Any = None) -> Any:
        """The item's metadata, or ``default`` when the catalog does not know it."""
        try:
            return self[item_id]
        except KeyError:
            return default

    # -- live catalogue ---------------------------------------------------------------------------

    def upsert(self, rows: Iterable[Mapping[str, Any]], *, column_types: Mapping[str, str] | None = None) -> None:
        """Add or change items now (``{"id": ..., "title": ..., "in_stock": ..., <any column>: ...}``)."""
        self.apply_delta(make_delta(rows, column_types=column_types))

    def delete(self, item_ids: Sequence[str]) -> None:
        """Stop serving these items now."""
        self.apply_delta(make_delta(deletes=list(item_ids)))

    def apply_artifact(self, artifact: Artifact) -> None:
        """Apply a verified catalogue artifact from the hub (the edge sync's ``on_artifact``)."""
        self.apply_delta(parse_delta(artifact.body))

    def apply_delta(self, delta: CatalogueDelta) -> None:
        """Fold ``delta`` in and rebuild the serving states, then swap them in; on any error nothing changes.

        Raises:
            CatalogueError: a column type clashes with an earlier delta or with the bundle's catalogue.
        """
        from .serving import ServingState

        owner = self._owner
        with self._lock:
            live = self.live.apply(delta)
            state, candidate = owner._state, owner._candidate
            new_state = None if state is None else ServingState(state.base, owner.config, live=live, reuse=state,
                                                                strict_catalogue=True)
            new_candidate = None
            if candidate is not None:
                new_candidate = (ServingState(candidate[0].base, owner.config, live=live, reuse=candidate[0],
                                              strict_catalogue=True), candidate[1])
            self.live = live
            if new_state is not None:
                owner._state = new_state
            if new_candidate is not None:
                owner._candidate = new_candidate
