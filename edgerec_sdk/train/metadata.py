"""Item metadata for a build: titles, external ids and attributes, aligned with the data's item rows.

* a titles table (TSV or CSV with a header). The first column is the item id used in the data file. A column
  named ``asin`` or ``external_id`` gives the external id the bundle catalog should use; a column named
  ``title``, ``name`` or ``idgenrec_textual_id`` (or else the last column) gives the title.
* an attributes JSON object ``{"<item id>": [attr, ...]}``; anonymous numeric attributes become
  ``"attr-<n>"`` strings.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .data import InteractionData

logger = logging.getLogger(__name__)

__all__ = ["ItemMetadata", "item_metadata", "read_attributes", "read_titles"]


@dataclass(frozen=True)
class ItemMetadata:
    """Per-row item metadata aligned with :attr:`InteractionData.item_ids` (``None`` = unknown)."""

    external_ids: list[str]
    titles: list[str | None] = field(default_factory=list)
    attributes: list[list[str] | None] = field(default_factory=list)


_TITLE_COLUMNS = ("title", "name", "idgenrec_textual_id")
_EXTERNAL_COLUMNS = ("asin", "external_id")


def read_titles(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Read a titles table; returns ``(titles, external_ids)``, both keyed by data-file item id."""
    p = Path(path)
    with open(p, encoding="utf-8", newline="") as fh:
        header = fh.readline()
        delimiter = "\t" if "\t" in header else ","
        cols = [c.strip().lower() for c in header.rstrip("\r\n").split(delimiter)]
        if len(cols) < 2:
            raise ConfigError(f"{p.name}: a titles table needs a header and at least two columns")
        ext_col = next((i for i, c in enumerate(cols) if c in _EXTERNAL_COLUMNS), None)
        title_col = next((i for i, c in enumerate(cols) if c in _TITLE_COLUMNS), None)
        if title_col is None and (ext_col is None or len(cols) > 2):
            title_col = len(cols) - 1 if len(cols) - 1 != ext_col else None
        titles: dict[str, str] = {}
        external: dict[str, str] = {}
        for row in csv.reader(fh, delimiter=delimiter):
            if not row:
                continue
            key = row[0].strip()
            if ext_col is not None and ext_col < len(row) and row[ext_col].strip():
                external[key] = row[ext_col].strip()
            if title_col is not None and title_col < len(row) and row[title_col].strip():
                titles[key] = row[title_col].strip()
    return titles, external


def read_attributes(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read ``{"<item id>": [attr, ...]}``; numeric attributes become ``"attr-<n>"``."""
    with open(path, encoding="utf-8") as fh:
        obj = json.load(fh)
    if not isinstance(obj, dict):
        raise ConfigError(f"{Path(path).name}: expected a JSON object of item id -> attribute list")
    out: dict[str, list[str]] = {}
    for key, vals in obj.items():
        if not isinstance(vals, list):
            vals = [vals]
        out[str(key)] = [f"attr-{v}" if isinstance(v, int) or str(v).isdigit() else str(v) for v in vals]
    return out


def item_metadata(
    data: InteractionData,
    *,
    titles_path: str | os.PathLike[str] | None = None,
    attributes_path: str | os.PathLike[str] | None = None,
) -> ItemMetadata:
    """Align titles, external ids and attributes with the data's item rows."""
    titles: dict[str, str] = {}
    external: dict[str, str] = {}
    attrs: dict[str, list[str]] = {}
    if titles_path is not None:
        titles, external = read_titles(titles_path)
    if attributes_path is not None:
        attrs = read_attributes(attributes_path)
    ext_ids = [external.get(i, i) for i in data.item_ids]
    if len(set(ext_ids)) != len(ext_ids):
        logger.warning("external ids from the titles table are not unique; keeping the data file's ids")
        ext_ids = list(data.item_ids)
    missing = sum(1 for i in data.item_ids if titles and i not in titles)
    if missing:
        logger.info("%d of %d items have no title", missing, data.n_items)
    return ItemMetadata(
        external_ids=ext_ids,
        titles=[titles.get(i) for i in data.item_ids] if titles else [],
        attributes=[attrs.get(i) for i in data.item_ids] if attrs else [],
    )
