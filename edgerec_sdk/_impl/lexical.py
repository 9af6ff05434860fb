"""Which catalogue items' titles hold a query's words: the lexical half of a query answer.

The text tower maps a query near items whose text means the same, which finds related items but ranks an item
whose title holds every word the shopper typed no higher than its neighbours. A storefront search box is
expected to put those first, so a query answer adds a lexical match score: the IDF-weighted share of the query's
word pieces (from the bundle's own tokenizer) that an item's title holds, in ``[0, 1]``. Pieces that most titles
hold (``df`` above a tenth of the catalogue) select nothing useful and are skipped, which also bounds the work
of a query on a large catalogue.

The index is a CSR list per piece, built once per serving state (a catalogue delta builds a new state, so added
items are matched and deleted ones are hidden by the kernel mask as everywhere else).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from .text import encode_texts

__all__ = ["LexicalIndex"]

_TITLE_PIECES: Final = 64
"""Title pieces indexed per item (titles are short; a longer one is cut)."""
_COMMON_SHARE: Final = 0.1
"""A piece held by more than this share of the catalogue (and by more than 50 items) is not indexed."""


class LexicalIndex:
    """Word pieces of the catalogue's titles, inverted: piece id -> rows, with an IDF per piece."""

    def __init__(self, tokenizer: Any, titles: Sequence[object]) -> None:
        n = len(titles)
        self.n_items = n
        texts = [t if isinstance(t, str) else None for t in titles]
        tokens = encode_texts(tokenizer, texts, max_tokens=_TITLE_PIECES) if n else np.zeros((0, 1), np.int64)
        rows, cols = np.nonzero(tokens)
        pieces = tokens[rows, cols]
        # one entry per (piece, row): a title repeating a word counts it once
        pair = np.unique(pieces * max(n, 1) + rows)
        pieces, rows = pair // max(n, 1), pair % max(n, 1)
        size = int(pieces.max()) + 1 if len(pieces) else 1
        df = np.bincount(pieces, minlength=size)
        common = (df > _COMMON_SHARE * n) & (df > 50)
        keep = ~common[pieces]
        pieces, rows = pieces[keep], rows[keep]
        self._indptr = np.concatenate([[0], np.cumsum(np.bincount(pieces, minlength=size))]).astype(np.int64)
        self._rows = rows.astype(np.int64)  # sorted by piece, then row (np.unique order)
        self._idf = np.where(df > 0, np.log1p(n / np.maximum(df, 1)), 0.0)
        self._indexed = ~common & (df > 0)

    def match(self, query_tokens: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Rows whose titles hold any indexed piece of the query, and their share of the query's IDF weight.

        Args:
            query_tokens: the query's piece ids (``0`` = padding, as :func:`~.text.encode_query` returns).

        Returns:
            ``(rows, scores)``: rows ascending, each score in ``(0, 1]`` (1: the title holds every piece).
        """
        ids = np.unique(query_tokens[query_tokens > 0])
        ids = ids[ids < len(self._idf)]
        ids = ids[self._indexed[ids]]
        if not len(ids):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        total = float(self._idf[ids].sum())
        parts = [self._rows[self._indptr[t]: self._indptr[t + 1]] for t in ids.tolist()]
        weights = np.repeat(self._idf[ids], [len(p) for p in parts])
        rows, where = np.unique(np.concatenate(parts), return_inverse=True)
        scores = np.bincount(where, weights=weights, minlength=len(rows)) / total
        return rows, scores.astype(np.float32)
