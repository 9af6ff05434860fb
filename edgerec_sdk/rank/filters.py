"""Filters on catalog columns, compiled into a boolean row mask that the top-K kernel applies.

Filtering inside the kernel (rather than after the top-K) means a narrow filter still returns ``k`` items
when ``k`` eligible items exist.

Supported filters (``recommend(..., filters={...})``):

- ``in_stock``: ``True`` keeps items not known to be out of stock (unknown counts as available);
  ``False`` keeps items known to be out of stock.
- ``category``: a string or a collection of strings; keeps items in any of them.
- ``brand``: a string or a collection of strings.
- ``price``: ``(min, max)``, either end may be ``None``; items with unknown price are left out.
- ``items``: a collection of item ids to restrict the answer to (an allow-list).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
from cachetools import LRUCache
from numpy.typing import NDArray

from ..bundle import Catalog

__all__ = ["FILTER_KEYS", "FilterCompiler", "check_filters"]

FILTER_KEYS: frozenset[str] = frozenset({"in_stock", "category", "brand", "price", "items"})
_COLUMN_OF = {"in_stock": "in_stock", "category": "category", "brand": "brand", "price": "price"}


def _strings(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Collection) and all(isinstance(v, str) for v in value):
        return tuple(sorted(set(value)))
    raise TypeError(f"filter {key!r} takes a string or a collection of strings")


def check_filters(filters: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """Validate filters and return a canonical, hashable form (also the cache key).

    Raises:
        ValueError: an unknown filter key or a malformed price range.
        TypeError: a value of the wrong type.
    """
    if not filters:
        return ()
    if not isinstance(filters, Mapping):
        raise TypeError("filters must be a mapping such as {'in_stock': True}")
    unknown = sorted(str(k) for k in filters if k not in FILTER_KEYS)
    if unknown:
        raise ValueError(f"unknown filter {', '.join(map(repr, unknown))}; known: {sorted(FILTER_KEYS)}")
    canon: list[tuple[str, Any]] = []
    for key in sorted(filters):
        value = filters[key]
        if key == "in_stock":
            if not isinstance(value, bool):
                raise TypeError("filter 'in_stock' takes True or False")
            canon.append((key, value))
        elif key == "price":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise ValueError("filter 'price' takes (min, max); either may be None")
            lo, hi = (None if v is None else float(v) for v in value)
            if (lo is not None and math.isnan(lo)) or (hi is not None and math.isnan(hi)):
                raise ValueError("filter 'price' bounds must not be NaN")
            if lo is not None and hi is not None and lo > hi:
                raise ValueError("filter 'price' has min > max")
            canon.append((key, (lo, hi)))
        else:
            canon.append((key, _strings(key, value)))
    return tuple(canon)


class FilterCompiler:
    """Builds and caches row masks for one catalog (one bundle version)."""

    def __init__(self, catalog: Catalog, *, cache_size: int = 64) -> None:
        self._catalog = catalog
        self._masks: LRUCache[tuple[tuple[str, Any], ...], NDArray[np.bool_]] = LRUCache(maxsize=cache_size)
        self._lock = threading.Lock()

    def mask(self, canon: tuple[tuple[str, Any], ...]) -> NDArray[np.bool_] | None:
        """The allow mask for canonical filters, ``None`` when there are none."""
        if not canon:
            return None
        with self._lock:
            cached = self._masks.get(canon)
        if cached is not None:
            return cached
        mask = np.ones(len(self._catalog), dtype=np.bool_)
        for key, value in canon:
            mask &= self._one(key, value)
        mask.setflags(write=False)
        with self._lock:
            self._masks[canon] = mask
        return mask

    def _column(self, key: str) -> tuple[Any, ...]:
        name = _COLUMN_OF[key]
        columns = self._catalog.columns
        if name not in columns:
            raise ValueError(f"filter {key!r} needs the catalog column {name!r}, which this bundle lacks")
        return tuple(columns[name])

    def _one(self, key: str, value: Any) -> NDArray[np.bool_]:
        n = len(self._catalog)
        if key == "items":
            out = np.zeros(n, dtype=np.bool_)
            out[self._catalog.rows(value)] = True
            return out
        column = self._column(key)
        if key == "in_stock":
            known_out = np.fromiter((v is False for v in column), dtype=np.bool_, count=n)
            return known_out if value is False else ~known_out
        if key == "price":
            lo, hi = value
            prices = np.fromiter((np.nan if v is None else float(v) for v in column), dtype=np.float64, count=n)
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(prices)
                if lo is not None:
                    ok &= prices >= lo
                if hi is not None:
                    ok &= prices <= hi
            return ok
        wanted = set(value)

        def hit(v: object) -> bool:
            if v is None:
                return False
            if isinstance(v, str):
                return v in wanted
            return any(x in wanted for x in v)  # type: ignore[attr-defined]

        return np.fromiter((hit(v) for v in column), dtype=np.bool_, count=n)
