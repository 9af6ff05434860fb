"""The title word-piece index behind a query's lexical lift: shares, rarity weights and skipped common pieces."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers

from edgerec_sdk._impl.lexical import LexicalIndex
from edgerec_sdk._impl.text import encode_query


def _tokenizer(words: list[str]) -> Tokenizer:
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_shares_weigh_rare_words_more_and_common_words_not_at_all() -> None:
    words = ["the", "red", "blue", "lipstick", "shampoo"]
    tok = _tokenizer(words)
    titles = ["the red lipstick"] * 3 + ["the blue lipstick"] * 20 + ["the red shampoo"] * 40 + \
        ["the blue shampoo"] * 537 + [None, 7]  # type: ignore[list-item]
    index = LexicalIndex(tok, titles)
    rows, share = index.match(encode_query(tok, "the red lipstick", max_tokens=8)[0])
    by_row = dict(zip(rows.tolist(), share.tolist(), strict=True))
    assert by_row[0] == 1.0  # every indexed piece of the query
    assert 0 < by_row[3] < 1 and 0 < by_row[23] < 1
    assert by_row[3] > by_row[23]  # "lipstick" (23 titles) is rarer than "red" (43)
    assert 63 not in by_row  # "the" is in every title: not indexed, matches nothing
    assert len(titles) - 2 not in by_row and len(titles) - 1 not in by_row
    assert np.all(np.diff(rows) > 0)
    none = index.match(encode_query(tok, "the qqq", max_tokens=8)[0])
    assert len(none[0]) == 0 and len(none[1]) == 0


def test_an_empty_catalogue_matches_nothing() -> None:
    tok = _tokenizer(["red"])
    index = LexicalIndex(tok, [])
    assert len(index.match(np.array([2, 0, 0]))[0]) == 0
