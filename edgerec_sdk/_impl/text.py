"""Text to token ids, the same way at build time and on the request path.

An item's text is its attribute tokens (whole vocabulary entries such as ``attr-123``) followed by the word
pieces of its title; a query is word pieces only. Unknown pieces (``[UNK]``) are dropped rather than fed, so
emoji, other scripts and unknown words add nothing instead of pulling every answer towards one shared
``[UNK]`` vector; a query that keeps no token is the same as no query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_QUERY_CHARS", "UNK", "encode_query", "encode_texts"]

UNK: Final = "[UNK]"
#: A query is cut to this many characters before tokenizing: 32 tokens never need more, and a 10 kB
#: query then costs what a short one does.
MAX_QUERY_CHARS: Final = 1024


def _pieces(tok: Any, text: str) -> list[int]:
    unk = tok.token_to_id(UNK)
    return [i for i in tok.encode(text, add_special_tokens=False).ids if i != unk]


def encode_texts(
    tok: Any,
    titles: Sequence[str | None],
    attributes: Sequence[Sequence[str] | None] = (),
    *,
    max_tokens: int,
) -> NDArray[np.int64]:
    """Token ids ``[n, max_tokens]`` (0 = padding), one row per item: attribute tokens, then title pieces."""
    n = max(len(titles), len(attributes))
    out = np.zeros((n, max_tokens), dtype=np.int64)
    for r in range(n):
        ids: list[int] = []
        attrs = attributes[r] if r < len(attributes) else None
        if attrs:
            ids.extend(i for i in (tok.token_to_id(a) for a in attrs if isinstance(a, str)) if i is not None)
        title = titles[r] if r < len(titles) else None
        if isinstance(title, str) and title:
            ids.extend(_pieces(tok, title[:MAX_QUERY_CHARS]))
        ids = ids[:max_tokens]
        out[r, : len(ids)] = ids
    return out


def encode_query(tok: Any, query: str, *, max_tokens: int) -> NDArray[np.int64]:
    """Token ids ``[1, max_tokens]`` of a query; all zeros when nothing in it is in the vocabulary."""
    ids = _pieces(tok, query[:MAX_QUERY_CHARS])[:max_tokens]
    out = np.zeros((1, max_tokens), dtype=np.int64)
    out[0, : len(ids)] = ids
    return out
