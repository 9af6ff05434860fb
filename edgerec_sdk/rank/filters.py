"""Filters on any catalogue column, compiled into a boolean row mask that the top-K kernel applies.

Filtering inside the kernel (rather than after the top-K) means a narrow filter still returns ``k`` items
when ``k`` eligible items exist. Filters combine with AND. Forms (``recommend(..., filters={...})``):

- ``{"brand": "acme"}``, ``{"vegan": True}``, ``{"size_ml": 30}``: equality. On a list column (``category``,
  ``attributes``) it keeps items whose list holds the value.
- ``{"brand": ["acme", "zeta"]}`` (a list, set or frozenset) or ``{"brand": {"in": [...]}}``: any of them.
- ``{"price": (10, 30)}``: a numeric range, either end ``None``; ``{"price": {"gte": 10, "lt": 30}}`` with
  ``gt``/``gte``/``lt``/``lte``. Items with a missing value are left out of a range.
- ``{"color": None}`` or ``{"color": {"missing": True}}``: only items without a value; ``{"missing": False}``
  only items with one.
- ``{"in_stock": True}`` keeps items not known to be out of stock (a missing value counts as available);
  ``False`` keeps items known to be out of stock.
- ``{"items": [...]}``: an allow-list of item ids.

:func:`check_filters` checks the shape at once (``TypeError``/``ValueError``); :class:`FilterCompiler` checks
each filter against its column's type (``str``, ``number``, ``bool``, ``list``) and names what is wrong.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Mapping
from typing import Any, Final

import numpy as np
from cachetools import LRUCache
from numpy.typing import NDArray

from ..bundle import Catalog

__all__ = ["FILTER_KEYS", "OPERATORS", "FilterCompiler", "check_filters", "column_kind"]

#: The filters every bundle understands; any other catalogue column can be filtered on too.
FILTER_KEYS: frozenset[str] = frozenset({"in_stock", "category", "brand", "price", "items"})
OPERATORS: Final = frozenset({"eq", "in", "gt", "gte", "lt", "lte", "missing"})
_RANGE: Final = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}
_Canon = tuple[tuple[str, Any], ...]


def _scalar(key: str, value: object) -> Any:
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"filter {key!r}: {value!r} is not a finite number")
        return float(value)
    raise TypeError(f"filter {key!r} takes strings, numbers or booleans, not {type(value).__name__}")


def _bound(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"filter {key!r}: range bounds must be numbers (or None), not {value!r}")
    return float(value)


def _ops(key: str, value: object) -> tuple[tuple[str, Any], ...]:
    """One filter value in canonical form: sorted ``(operator, operand)`` pairs."""
    if key == "items":
        if isinstance(value, str) or not isinstance(value, Collection) or not all(isinstance(v, str) for v in value):
            raise TypeError("filter 'items' takes a collection of item ids")
        return (("in", tuple(sorted(set(value)))),)
    if value is None:
        return (("missing", True),)
    if isinstance(value, Mapping):
        unknown = sorted(str(op) for op in value if op not in OPERATORS)
        if unknown or not value:
            raise ValueError(f"filter {key!r}: unknown operators {unknown}; known: {sorted(OPERATORS)}")
        out: list[tuple[str, Any]] = []
        for op, operand in value.items():
            if op == "missing":
                if not isinstance(operand, bool):
                    raise TypeError(f"filter {key!r}: 'missing' takes True or False")
                out.append((op, operand))
            elif op == "in":
                if isinstance(operand, (str, bytes)) or not isinstance(operand, Collection):
                    raise TypeError(f"filter {key!r}: 'in' takes a list of values")
                out.append((op, _ops(key, list(operand))[0][1]))
            elif op == "eq":
                out.append((op, _scalar(key, operand)))
            else:
                out.append((op, _bound(key, operand)))
        return tuple(sorted(out))
    if (isinstance(value, tuple) and len(value) == 2 and all(v is None or isinstance(v, (int, float)) for v in value)) \
            or (key == "price" and isinstance(value, list)):
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(f"filter {key!r} takes (min, max); either may be None")
        lo, hi = (None if v is None else _bound(key, v) for v in value)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"filter {key!r} has min > max")
        return tuple(sorted((op, b) for op, b in (("gte", lo), ("lte", hi)) if b is not None)) or (("missing", False),)
    if isinstance(value, (list, set, frozenset, tuple)):
        items = [_scalar(key, v) for v in value]
        return (("in", tuple(sorted(set(items), key=lambda v: (type(v).__name__, v)))),)
    return (("eq", _scalar(key, value)),)


def check_filters(filters: Mapping[str, Any] | None) -> _Canon:
    """Validate the filters' shape and return a canonical, hashable form (also the cache key).

    Column names and types are checked against the serving catalogue by :meth:`FilterCompiler.mask`.

    Raises:
        ValueError: a malformed range or operator.
        TypeError: a value of the wrong type.
    """
    if not filters:
        return ()
    if not isinstance(filters, Mapping):
        raise TypeError("filters must be a mapping such as {'in_stock': True}")
    canon: list[tuple[str, Any]] = []
    for key in sorted(filters, key=str):
        if not isinstance(key, str) or not key:
            raise TypeError("filter names must be non-empty strings (catalogue column names)")
        if key == "in_stock" and not isinstance(filters[key], (bool, Mapping)) and filters[key] is not None:
            raise TypeError("filter 'in_stock' takes True or False")
        canon.append((key, _ops(key, filters[key])))
    return tuple(canon)


def column_kind(values: Collection[Any]) -> str | None:
    """``str``, ``number``, ``bool`` or ``list`` for a column's values; ``None`` when all are missing."""
    types = set(map(type, values)) - {type(None)}
    if not types:
        return None
    if types <= {str}:
        return "str"
    if types <= {bool}:
        return "bool"
    if types <= {int, float}:
        return "number"
    if types <= {list, tuple}:
        return "list"
    return "mixed"


class FilterCompiler:
    """Builds and caches row masks for one catalogue (one serving state)."""

    def __init__(self, catalog: Catalog, *, cache_size: int = 64) -> None:
        self._catalog = catalog
        self._masks: LRUCache[_Canon, NDArray[np.bool_]] = LRUCache(maxsize=cache_size)
        self._kinds: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def mask(self, canon: _Canon) -> NDArray[np.bool_] | None:
        """The allow mask for canonical filters, ``None`` when there are none.

        Raises:
            ValueError: a column the catalogue lacks (``unknown filter``).
            TypeError: an operand that does not fit the column's type.
        """
        if not canon:
            return None
        with self._lock:
            cached = self._masks.get(canon)
        if cached is not None:
            return cached
        mask = np.ones(len(self._catalog), dtype=np.bool_)
        for key, ops in canon:
            for op, operand in ops:
                mask &= self._one(key, op, operand)
        mask.setflags(write=False)
        with self._lock:
            self._masks[canon] = mask
        return mask

    def _column(self, key: str) -> tuple[tuple[Any, ...], str | None]:
        columns = self._catalog.columns
        if key not in columns:
            raise ValueError(f"unknown filter {key!r}: the catalogue has no such column; "
                             f"columns: {sorted([*columns, 'items'])}")
        if key not in self._kinds:
            self._kinds[key] = column_kind(columns[key])
        return columns[key], self._kinds[key]

    def _one(self, key: str, op: str, operand: Any) -> NDArray[np.bool_]:
        n = len(self._catalog)
        if key == "items":
            out = np.zeros(n, dtype=np.bool_)
            out[self._catalog.rows(operand)] = True
            return out
        column, kind = self._column(key)
        missing = np.fromiter((v is None for v in column), dtype=np.bool_, count=n)
        if op == "missing":
            return missing if operand else ~missing
        if kind is None:
            return np.zeros(n, dtype=np.bool_)
        if op in _RANGE:
            if kind != "number":
                raise TypeError(f"filter {key!r}: a range needs a number column; {key!r} holds {kind}")
            values = np.fromiter((np.nan if v is None else float(v) for v in column), dtype=np.float64, count=n)
            with np.errstate(invalid="ignore"):
                return np.asarray(_RANGE[op](values, operand) & ~missing, dtype=np.bool_)
        wanted = (operand,) if op == "eq" else operand
        for w in wanted:
            self._check_operand(key, kind, w)
        if key == "in_stock" and kind == "bool" and op == "eq":
            known_out = np.fromiter((v is False for v in column), dtype=np.bool_, count=n)
            return known_out if operand is False else ~known_out
        if kind == "number":
            values = np.fromiter((np.nan if v is None else float(v) for v in column), dtype=np.float64, count=n)
            return np.isin(values, np.asarray(wanted, dtype=np.float64))
        targets = set(wanted)
        if kind == "list":
            return np.fromiter((v is not None and any(x in targets for x in v) for v in column), np.bool_, count=n)
        return np.fromiter((v is not None and v in targets for v in column), dtype=np.bool_, count=n)

    @staticmethod
    def _check_operand(key: str, kind: str, value: Any) -> None:
        fits = {"str": isinstance(value, str), "list": isinstance(value, str), "bool": isinstance(value, bool),
                "number": isinstance(value, float) and not isinstance(value, bool)}.get(kind, True)
        if not fits:
            raise TypeError(f"filter {key!r}: column {key!r} holds {kind}, "
                            f"got {type(value).__name__} {str(value)[:40]!r}")
