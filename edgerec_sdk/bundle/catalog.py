"""The catalog (``catalog.json``): external item ids in row order and the filter/display columns.

Read-only after construction: ids and columns are tuples, the column mapping is a ``MappingProxyType``
and attributes cannot be reassigned, so a catalog can be shared by every request thread without locks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import orjson
from numpy.typing import NDArray

from ..errors import ModelFormatError

__all__ = ["KNOWN_COLUMNS", "Catalog"]

KNOWN_COLUMNS: Final = ("title", "category", "brand", "price", "in_stock")
_CATALOG: Final = "catalog.json"


class Catalog:
    """Item ids (row order) and optional columns, each with one entry per row (``None`` = unknown).

    Known columns are typed: ``title``/``brand`` str, ``category`` a tuple of str (a single string is
    accepted and becomes a 1-tuple), ``price`` a finite number, ``in_stock`` bool. Other columns are kept
    as loaded, with lists turned into tuples.

    Args:
        ids: unique item ids, one per row.
        columns: column name -> one value per row.

    Raises:
        ModelFormatError: duplicate or non-string ids, or a column of the wrong length or type.

    Example:
        >>> cat = Catalog(["a", "b"], {"price": [1.5, None]})
        >>> cat.row("b"), cat.metadata(0)
        (1, {'id': 'a', 'price': 1.5})
    """

    __slots__ = ("_columns", "_ids", "_index")

    _ids: tuple[str, ...]
    _index: Mapping[str, int]
    _columns: Mapping[str, tuple[Any, ...]]

    def __init__(self, ids: Sequence[str], columns: Mapping[str, Sequence[Any]] | None = None) -> None:
        self._init(ids, columns, source=_CATALOG, model_version=None)

    @classmethod
    def from_json(
        cls, raw: bytes, *, n_items: int, source: str = _CATALOG, model_version: str | None = None
    ) -> Catalog:
        """Parse ``catalog.json`` bytes and check it holds exactly ``n_items`` rows."""

        def fail(msg: str) -> ModelFormatError:
            return ModelFormatError(f"{source}: {msg}", path=source, model_version=model_version)

        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise fail(f"invalid JSON ({exc})") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("ids"), list):
            raise fail("must be an object with an 'ids' list")
        columns = doc.get("columns", {})
        if not isinstance(columns, dict):
            raise fail("'columns' must be an object")
        if len(doc["ids"]) != n_items:
            raise fail(f"has {len(doc['ids'])} ids but the manifest says n_items={n_items}")
        self = cls.__new__(cls)
        self._init(doc["ids"], columns, source=source, model_version=model_version)
        return self

    def _init(
        self,
        ids: Sequence[str],
        columns: Mapping[str, Sequence[Any]] | None,
        *,
        source: str,
        model_version: str | None,
    ) -> None:
        def fail(msg: str) -> ModelFormatError:
            return ModelFormatError(f"{source}: {msg}", path=source, model_version=model_version)

        id_tuple = tuple(ids)
        if not set(map(type, id_tuple)) <= {str}:
            raise fail("every id must be a non-empty string")
        index = {item_id: row for row, item_id in enumerate(id_tuple)}
        if "" in index:
            raise fail("every id must be a non-empty string")
        if len(index) != len(id_tuple):
            raise fail(f"ids are not unique ({len(id_tuple) - len(index)} duplicates)")
        cols: dict[str, tuple[Any, ...]] = {}
        for name, values in (columns or {}).items():
            if (
                not isinstance(name, str)
                or isinstance(values, (str, bytes))
                or not isinstance(values, Sequence)
            ):
                raise fail(f"column {str(name)[:40]!r} must be a list")
            if len(values) != len(id_tuple):
                raise fail(f"column {name!r} has {len(values)} entries, expected {len(id_tuple)}")
            cols[name] = _column(name, values, fail)
        object.__setattr__(self, "_ids", id_tuple)
        object.__setattr__(self, "_index", MappingProxyType(index))
        object.__setattr__(self, "_columns", MappingProxyType(cols))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Catalog is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Catalog is read-only")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Catalog, (self._ids, dict(self._columns)))

    def __repr__(self) -> str:
        return f"Catalog(n={len(self._ids)}, columns={list(self._columns)})"

    @property
    def ids(self) -> tuple[str, ...]:
        """Item ids in row order."""
        return self._ids

    @property
    def columns(self) -> Mapping[str, tuple[Any, ...]]:
        """Column name -> values in row order (read-only)."""
        return self._columns

    @property
    def column_names(self) -> tuple[str, ...]:
        """Names of the columns present."""
        return tuple(self._columns)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and item_id in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def row(self, item_id: str) -> int | None:
        """The row of ``item_id``, or None when the catalog does not hold it."""
        return self._index.get(item_id) if isinstance(item_id, str) else None

    def rows(self, ids: Iterable[str]) -> NDArray[np.int64]:
        """Rows of the known ids among ``ids``, in the given order; unknown ids are skipped."""
        index = self._index
        found = [index[i] for i in ids if isinstance(i, str) and i in index]
        return np.asarray(found, dtype=np.int64)

    def metadata(self, row: int) -> dict[str, Any]:
        """``{"id": ..., <known column>: value}`` for ``row``, leaving out unknown (null) values.

        ``category`` comes back as a list, so the dict is ready for JSON.
        """
        if not 0 <= row < len(self._ids):
            raise IndexError(f"row {row} out of range for a catalog of {len(self._ids)} items")
        out: dict[str, Any] = {"id": self._ids[row]}
        for name in KNOWN_COLUMNS:
            col = self._columns.get(name)
            if col is not None and col[row] is not None:
                value = col[row]
                out[name] = list(value) if name == "category" else value
        return out

    def to_json_bytes(self) -> bytes:
        """Serialise as ``catalog.json``."""
        return orjson.dumps({"ids": list(self._ids), "columns": dict(self._columns)})


# The checks below compare the *set of types* in a column (C speed) instead of testing each value in a
# Python loop: catalogs reach millions of rows and are validated on every load.
_NONE: Final = type(None)


def _column(name: str, values: Sequence[Any], fail: Any) -> tuple[Any, ...]:
    types = set(map(type, values))
    if name in ("title", "brand"):
        if not types <= {str, _NONE}:
            raise fail(f"column {name!r} must hold strings or null")
        return tuple(values)
    if name == "in_stock":
        if not types <= {bool, _NONE}:
            raise fail("column 'in_stock' must hold booleans or null")
        return tuple(values)
    if name == "price":
        if not types <= {int, float, _NONE}:
            raise fail("column 'price' must hold finite numbers or null")
        known = [v for v in values if v is not None]
        # float64 holds every JSON number we accept; an int too big for it is as unusable as inf.
        try:
            finite = bool(np.isfinite(np.asarray(known, dtype=np.float64)).all())
        except OverflowError:
            finite = False
        if not finite:
            raise fail("column 'price' must hold finite numbers or null")
        return tuple(values)
    if name == "category":
        return _category(values, types, fail)
    if list in types:
        return tuple(tuple(v) if isinstance(v, list) else v for v in values)
    return tuple(values)


def _category(values: Sequence[Any], types: set[type], fail: Any) -> tuple[Any, ...]:
    if not types <= {list, tuple, str, _NONE}:
        raise fail("column 'category' must hold lists of strings, strings or null")
    lists = [v for v in values if isinstance(v, (list, tuple))]
    if not set(map(type, itertools.chain.from_iterable(lists))) <= {str}:
        raise fail("column 'category' must hold lists of strings, strings or null")
    if types <= {list, tuple}:
        return tuple(map(tuple, values))  # the common case, without a Python-level loop
    return tuple(v if v is None else (v,) if type(v) is str else tuple(v) for v in values)
