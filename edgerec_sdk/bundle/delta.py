"""Catalogue deltas: item upserts and deletes without retraining (``edgerec items upsert`` / ``delete``).

A delta is one JSON document, signed like a manifest and published on a channel as an artifact of kind
``catalogue``; every edge verifies it and applies it whole or not at all::

    {"format": "edgerec-catalogue-delta/1",
     "columns": {"title": "str", "price": "number", "in_stock": "bool", "color": "str"},
     "upsert": [{"id": "B01", "title": "red nail lacquer", "price": 9.5, "in_stock": true, "color": "red"}],
     "delete": ["B02"]}

Column types: ``str``, ``number`` (finite int or float), ``bool``, ``list`` (of strings). A value may be
``null`` (missing). ``title``, ``brand``, ``category``, ``attributes``, ``price`` and ``in_stock`` have fixed
types; any other column declares its own. Refused (``CatalogueError``, nothing applied): a row without an
``id``, an id twice in one delta, an unknown column type, a value of the wrong type, a delta over the cap.

Example:
    >>> delta = make_delta([{"id": "B01", "title": "red lacquer", "price": 9.5}])
    >>> parse_delta(delta.to_bytes()).upserts[0]["price"]
    9.5
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson

from ..errors import CatalogueError

__all__ = [
    "COLUMN_TYPES",
    "DEFAULT_MAX_DELTA_BYTES",
    "DELTA_FORMAT",
    "FIXED_COLUMN_TYPES",
    "CatalogueDelta",
    "check_value",
    "make_delta",
    "parse_delta",
    "read_items_file",
]

DELTA_FORMAT: Final = "edgerec-catalogue-delta/1"
COLUMN_TYPES: Final = frozenset({"str", "number", "bool", "list"})
FIXED_COLUMN_TYPES: Final = MappingProxyType({
    "title": "str", "brand": "str", "category": "list", "attributes": "list", "price": "number", "in_stock": "bool",
})
DEFAULT_MAX_DELTA_BYTES: Final = 64 * 1024 * 1024
_MAX_ID_CHARS: Final = 256
_TRUE: Final = frozenset({"true", "1", "yes", "y", "t"})
_FALSE: Final = frozenset({"false", "0", "no", "n", "f"})


@dataclass(frozen=True, slots=True)
class CatalogueDelta:
    """Typed columns, upserted rows (each with ``id``) and deleted ids; validated at construction."""

    columns: Mapping[str, str]
    upserts: tuple[Mapping[str, Any], ...] = ()
    deletes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        _validate(self)

    def to_bytes(self) -> bytes:
        """The wire form (what is signed and published)."""
        return orjson.dumps({"format": DELTA_FORMAT, "columns": dict(self.columns),
                             "upsert": [dict(r) for r in self.upserts], "delete": list(self.deletes)})


def check_value(column: str, kind: str, value: Any) -> str | None:
    """Why ``value`` does not fit a column of type ``kind`` (``None`` when it does; ``None`` values fit)."""
    if value is None:
        return None
    ok = (
        (kind == "str" and isinstance(value, str))
        or (kind == "bool" and isinstance(value, bool))
        or (kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
        or (kind == "list" and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
    )
    return None if ok else f"column {column!r} is {kind}, got {_show(value)}"


def _show(value: Any) -> str:
    return f"{type(value).__name__} {str(value)[:40]!r}"


def _validate(delta: CatalogueDelta) -> None:
    for name, kind in delta.columns.items():
        if not isinstance(name, str) or not name or name == "id":
            raise CatalogueError(f"bad column name {str(name)[:40]!r}")
        if kind not in COLUMN_TYPES:
            raise CatalogueError(f"column {name!r}: unknown type {str(kind)[:40]!r}; known: {sorted(COLUMN_TYPES)}")
        fixed = FIXED_COLUMN_TYPES.get(name)
        if fixed is not None and kind != fixed:
            raise CatalogueError(f"column {name!r} is always {fixed}, not {kind}")
    seen: set[str] = set()
    for i, row in enumerate(delta.upserts, 1):
        if not isinstance(row, Mapping):
            raise CatalogueError(f"upsert row {i} is not an object")
        item = row.get("id")
        if not isinstance(item, str) or not item.strip() or len(item) > _MAX_ID_CHARS:
            raise CatalogueError(f"upsert row {i} has no id (a non-empty string of at most {_MAX_ID_CHARS} chars)")
        if item in seen:
            raise CatalogueError(f"id {item[:60]!r} appears twice in one delta")
        seen.add(item)
        for name, value in row.items():
            if name == "id":
                continue
            declared = delta.columns.get(name)
            if declared is None:
                raise CatalogueError(f"row {i} (id {item[:60]!r}): column {str(name)[:40]!r} has no declared type")
            why = check_value(name, declared, value)
            if why is not None:
                raise CatalogueError(f"row {i} (id {item[:60]!r}): {why}")
    for item in delta.deletes:
        if not isinstance(item, str) or not item.strip():
            raise CatalogueError("every deleted id must be a non-empty string")
        if item in seen:
            raise CatalogueError(f"id {item[:60]!r} appears twice in one delta (upserted and deleted)")
        seen.add(item)


def parse_delta(raw: bytes, *, max_bytes: int = DEFAULT_MAX_DELTA_BYTES) -> CatalogueDelta:
    """Parse and validate a delta's wire bytes.

    Raises:
        CatalogueError: over ``max_bytes`` (reason ``too_large``) or malformed (reason ``bad_delta``).
    """
    if len(raw) > max_bytes:
        raise CatalogueError(f"catalogue delta of {len(raw)} bytes is over the cap of {max_bytes}", reason="too_large")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CatalogueError(f"catalogue delta is not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != DELTA_FORMAT:
        raise CatalogueError(f"catalogue delta must be an object with format {DELTA_FORMAT!r}")
    columns, upserts, deletes = doc.get("columns", {}), doc.get("upsert", []), doc.get("delete", [])
    if not isinstance(columns, dict) or not isinstance(upserts, list) or not isinstance(deletes, list):
        raise CatalogueError("catalogue delta: 'columns' must be an object, 'upsert' and 'delete' lists")
    return CatalogueDelta(columns=MappingProxyType(columns), upserts=tuple(upserts), deletes=tuple(deletes))


def make_delta(
    rows: Iterable[Mapping[str, Any]] = (),
    *,
    deletes: Sequence[str] = (),
    column_types: Mapping[str, str] | None = None,
) -> CatalogueDelta:
    """A delta from typed rows: fixed columns keep their types, others take ``column_types`` or are inferred.

    Raises:
        CatalogueError: a row without id, a duplicate id, an unknown type, a value that does not fit.
    """
    rows = [dict(r) for r in rows]
    declared = dict(column_types or {})
    names = {n for r in rows for n in r if n != "id"}
    columns: dict[str, str] = {}
    for name in sorted(names):
        kind = declared.get(name) or FIXED_COLUMN_TYPES.get(name) or _infer(name, [r.get(name) for r in rows])
        columns[name] = kind
    return CatalogueDelta(columns=MappingProxyType(columns), upserts=tuple(rows), deletes=tuple(deletes))


def _infer(name: str, values: Sequence[Any]) -> str:
    kinds = {_kind_of(v) for v in values if v is not None}
    if kinds <= {"number"} and kinds:
        return "number"
    if len(kinds) == 1:
        return kinds.pop()
    if not kinds:
        return "str"
    raise CatalogueError(f"column {name!r} mixes types {sorted(kinds)}; declare one with --column-type")


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


def read_items_file(
    path: str | Path, *, column_types: Mapping[str, str] | None = None, max_bytes: int = DEFAULT_MAX_DELTA_BYTES
) -> list[dict[str, Any]]:
    """Rows of a ``.csv`` or ``.jsonl`` items file, typed.

    CSV cells are text: an empty cell is missing, ``title``/``brand`` stay text, ``price`` is a number,
    ``in_stock`` a boolean (true/false/1/0/yes/no), ``category``/``attributes`` are ``|``-separated lists; other
    columns take ``column_types`` or are inferred (all numbers: number; all booleans: bool; else str).
    JSONL rows keep their JSON types.

    Raises:
        CatalogueError: the file is over ``max_bytes``, unreadable, or a value does not parse.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise CatalogueError(f"{p.name}: {size} bytes is over the cap of {max_bytes}", reason="too_large")
        text = p.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"{p.name}: cannot read ({exc})") from exc
    if p.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows: list[dict[str, Any]] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise CatalogueError(f"{p.name} line {n}: not JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise CatalogueError(f"{p.name} line {n}: not an object")
            rows.append(row)
        return rows
    return _typed_csv(p.name, text, dict(column_types or {}))


def _typed_csv(name: str, text: str, declared: dict[str, str]) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    raw = [{k: (v if v is None else v.strip()) for k, v in r.items() if k is not None} for r in reader]
    headers = list(reader.fieldnames or [])
    for col in headers:
        if col in declared and declared[col] not in COLUMN_TYPES:
            raise CatalogueError(f"column {col!r}: unknown type {declared[col][:40]!r}; known: {sorted(COLUMN_TYPES)}")
    kinds = {c: declared.get(c) or FIXED_COLUMN_TYPES.get(c) or _infer_text([r.get(c) for r in raw])
             for c in headers if c != "id"}
    out: list[dict[str, Any]] = []
    for n, r in enumerate(raw, 2):
        row: dict[str, Any] = {"id": r.get("id") or None}
        for col, kind in kinds.items():
            cell = r.get(col)
            try:
                row[col] = None if cell in (None, "") else _parse_cell(kind, cell)
            except ValueError as exc:
                raise CatalogueError(f"{name} line {n}: column {col!r}: {exc}") from exc
        out.append(row)
    return out


def _infer_text(cells: Sequence[str | None]) -> str:
    seen = [c for c in cells if c]
    if not seen:
        return "str"
    if all(c.lower() in _TRUE | _FALSE for c in seen) and not all(c in ("0", "1") for c in seen):
        return "bool"
    try:
        for c in seen:
            if not math.isfinite(float(c)):
                return "str"
    except ValueError:
        return "str"
    return "number"


def _parse_cell(kind: str, cell: str) -> Any:
    if kind == "number":
        value = float(cell)
        if not math.isfinite(value):
            raise ValueError(f"{cell[:40]!r} is not a finite number")
        return int(value) if value.is_integer() and "." not in cell and "e" not in cell.lower() else value
    if kind == "bool":
        low = cell.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{cell[:40]!r} is not a boolean")
    if kind == "list":
        return [part.strip() for part in cell.split("|") if part.strip()]
    return cell
