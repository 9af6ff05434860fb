"""A `tokenizers` tokenizer trained at build time over item titles and attributes.

Each item becomes a short row of token ids (title word pieces, then its attribute tokens such as
``attr-123``, which are added to the vocabulary whole). The model adds the mean embedding of these tokens to
the item's id embedding, so items with few or no training events still get a vector from their text.
The tokenizer definition is shipped as the bundle's ``tokenizer.json``.

Example:
    >>> tok = train_tokenizer(["nail lacquer red", "gel polish"], [["attr-1"], None], vocab_size=200)
    >>> ids = encode_items(tok, ["nail lacquer red", "gel polish"], [["attr-1"], None], max_tokens=8)
    >>> ids.shape
    (3, 8)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._impl.text import UNK, encode_texts

logger = logging.getLogger(__name__)

__all__ = ["ITEM_TOKENS", "QUERY_TOKENS", "encode_items", "train_tokenizer"]

PAD = "[PAD]"
ITEM_TOKENS = 24  #: tokens kept per item (attributes first, then title pieces)
QUERY_TOKENS = 32  #: the model's ``query`` input length (also used for items added on the edge)


def train_tokenizer(
    titles: Sequence[str | None],
    attributes: Sequence[Sequence[str] | None] = (),
    *,
    vocab_size: int = 8000,
) -> Any:
    """Train a lower-casing WordPiece tokenizer on the titles; attributes become whole tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK], min_frequency=2,
                                        show_progress=False)
    tok.train_from_iterator((t for t in titles if t), trainer=trainer)
    attr_tokens = sorted({a for attrs in attributes if attrs for a in attrs})
    if attr_tokens:
        tok.add_tokens(attr_tokens)
    if tok.token_to_id(PAD) != 0:
        raise RuntimeError("the padding token must have id 0")
    logger.info("tokenizer: %d tokens (%d attribute tokens)", tok.get_vocab_size(), len(attr_tokens))
    return tok


def encode_items(
    tok: Any,
    titles: Sequence[str | None],
    attributes: Sequence[Sequence[str] | None] = (),
    *,
    max_tokens: int = ITEM_TOKENS,
) -> NDArray[np.int64]:
    """Token ids per model input id, ``[n_items + 1, max_tokens]``; row 0 (padding) and unknown text are 0."""
    rows = encode_texts(tok, titles, attributes, max_tokens=max_tokens)
    return np.concatenate([np.zeros((1, max_tokens), dtype=np.int64), rows])
