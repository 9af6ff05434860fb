"""The live catalogue: catalogue deltas folded together, and laid over a bundle to serve.

A :class:`LiveCatalogue` is immutable; :meth:`LiveCatalogue.apply` returns a new one or raises
``CatalogueError`` (then nothing changed). :func:`overlay` turns a bundle plus the live catalogue into the
bundle that serves: every upserted column value in place, new items appended as rows with a vector from their
text through the bundle's text tower, and a hidden mask (deleted items, items a delta marked
``in_stock=false``, new items without a usable text vector) that every answer leaves out.

Upserts merge: a row names only the columns it changes (``{"id": "B01", "in_stock": false}``). Deleting an id
and upserting it again later brings it back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..bundle import Bundle, Catalog, ItemVectors, quantize_rows_int8
from ..bundle.delta import CatalogueDelta
from ..errors import CatalogueError
from ..rank.filters import column_kind
from .model import InterestModel
from .text import encode_texts

__all__ = ["LiveCatalogue", "Overlay", "overlay"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LiveCatalogue:
    """Upserted rows by id (merged), deleted ids and the column types the deltas declared."""

    rows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    deleted: frozenset[str] = frozenset()
    columns: Mapping[str, str] = field(default_factory=dict)
    applied: int = 0

    @property
    def empty(self) -> bool:
        return not self.rows and not self.deleted

    def apply(self, delta: CatalogueDelta) -> LiveCatalogue:
        """The catalogue after ``delta``; raises ``CatalogueError`` (reason ``column_type``) on a type clash."""
        columns = dict(self.columns)
        for name, kind in delta.columns.items():
            if columns.setdefault(name, kind) != kind:
                raise CatalogueError(f"column {name!r} is {columns[name]} in an earlier delta, {kind} in this one",
                                     reason="column_type")
        rows = dict(self.rows)
        deleted = set(self.deleted)
        for row in delta.upserts:
            item = str(row["id"])
            merged = dict(rows.get(item, {}))
            merged.update((k, v) for k, v in row.items() if k != "id")
            rows[item] = MappingProxyType(merged)
            deleted.discard(item)
        for item in delta.deletes:
            rows.pop(item, None)
            deleted.add(item)
        return LiveCatalogue(MappingProxyType(rows), frozenset(deleted), MappingProxyType(columns), self.applied + 1)


@dataclass(frozen=True, slots=True)
class Overlay:
    """What :func:`overlay` made: the serving bundle, rows to hide, and counts for ``status()``."""

    bundle: Bundle
    hidden: NDArray[np.bool_] | None
    counts: Mapping[str, int]


def overlay(bundle: Bundle, live: LiveCatalogue, model: InterestModel, tokenizer: Any, *,
            strict: bool = True) -> Overlay:
    """Lay ``live`` over ``bundle``.

    A delta column whose type clashes with the bundle's column of the same name raises ``CatalogueError``
    (reason ``column_type``) when ``strict`` (applying a new delta: it is refused); otherwise (a new bundle
    arriving under an existing live catalogue) that column's delta values are left out, with a warning, so a
    delta can never keep a model from being served.
    """
    base = bundle.catalog
    n = len(base)
    clashes = set()
    for name, kind in live.columns.items():
        have = column_kind(base.columns[name]) if name in base.columns else None
        if have not in (None, "mixed") and have != kind:
            message = f"column {name!r} is {have} in the bundle's catalogue, {kind} in a delta"
            if strict:
                raise CatalogueError(message, reason="column_type")
            logger.warning("%s; the delta's values of %r are left out", message, name)
            clashes.add(name)
    new_ids = [i for i in live.rows if base.row(i) is None]
    ids = [*base.ids, *new_ids]
    names = list(dict.fromkeys([*base.columns, *live.columns]))
    columns: dict[str, list[Any]] = {
        name: [*base.columns.get(name, (None,) * n), *([None] * len(new_ids))] for name in names
    }
    row_of = {item: n + j for j, item in enumerate(new_ids)}
    hidden = np.zeros(len(ids), dtype=np.bool_)
    for item, fields in live.rows.items():
        r = base.row(item)
        r = row_of[item] if r is None else r
        for name, value in fields.items():
            if name not in clashes:
                columns[name][r] = list(value) if isinstance(value, tuple) else value
        if fields.get("in_stock") is False:
            hidden[r] = True
    for item in live.deleted:
        r = base.row(item)
        if r is not None:
            hidden[r] = True
    vectors, no_text = _vectors(bundle, [live.rows[i] for i in new_ids], model, tokenizer)
    hidden[n:] |= no_text
    catalog = Catalog(ids, columns)
    popular = np.concatenate([bundle.popular, np.arange(n, len(ids), dtype=np.int64)])
    served = dataclasses.replace(bundle, catalog=catalog, vectors=vectors, popular=popular,
                                 ivf=bundle.ivf if not new_ids else None)
    counts = {"deltas": live.applied, "upserted": len(live.rows), "added": len(new_ids),
              "deleted": len(live.deleted), "hidden": int(hidden.sum()), "added_without_text": int(no_text.sum())}
    return Overlay(served, hidden if hidden.any() else None, MappingProxyType(counts))


def _vectors(
    bundle: Bundle, rows: list[Mapping[str, Any]], model: InterestModel, tokenizer: Any
) -> tuple[ItemVectors, NDArray[np.bool_]]:
    """The bundle's vectors with one row per new item appended (from its text), and which got none."""
    base = bundle.vectors
    m = len(rows)
    if m == 0:
        return base, np.zeros(0, dtype=np.bool_)
    new = np.zeros((m, base.dim), dtype=np.float32)
    if tokenizer is not None and model.text_output is not None:
        titles = [r.get("title") if isinstance(r.get("title"), str) else None for r in rows]
        attrs = [_strings(r.get("attributes")) + _strings(r.get("category")) for r in rows]
        tokens = encode_texts(tokenizer, titles, attrs, max_tokens=model.query_max_len)
        has = tokens.any(axis=1)
        if has.any():
            new[has] = model.embed_text(tokens[has])
    no_text: NDArray[np.bool_] = np.asarray(~np.isfinite(new).all(axis=1) | ~new.any(axis=1), dtype=np.bool_)
    new[no_text] = 0.0
    if base.scales is not None:
        q, s = quantize_rows_int8(new)
        return ItemVectors(np.concatenate([base.values, q]), np.concatenate([base.scales, s])), no_text
    return ItemVectors(np.concatenate([base.values, new.astype(base.values.dtype)])), no_text


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []

