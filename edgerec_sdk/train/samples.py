"""Training rows cut from the sequences: left padding, prefix or sequence samples, their weights, each row's
negatives, and the length-sorted batches that keep padding low.

Split from :mod:`.data` (reading and splitting the data) because these run per epoch on arrays, never on files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError

__all__ = [
    "SAMPLE_MODES", "length_batches", "negative_index", "pad_left", "padding_share", "sample_weights",
    "training_samples",
]

#: How training rows are cut from the sequences (``TrainConfig.samples``).
SAMPLE_MODES = ("prefixes", "sequences")


def pad_left(seqs: Sequence[NDArray[np.int64]], max_len: int, *, offset: int = 1) -> NDArray[np.int64]:
    """Left-pad the last ``max_len`` rows of each sequence as model input (row r fed as r + offset)."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-max_len:]
        if len(s):
            out[i, max_len - len(s) :] = s + offset
    return out


def training_samples(
    seqs: Sequence[NDArray[np.int64]], max_len: int, *, mode: str = "prefixes"
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Training rows ``(inputs, targets, lengths)``, inputs left-padded to ``max_len`` (row r fed as r + 1).

    * ``"prefixes"``: one row per prefix ``s[:k]`` (k >= 1, the newest ``max_len`` items) with the single
      target ``s[k]``; ``targets`` is ``[rows, 1]``. Every training row ends where a served history ends, at
      the newest position (the published full-softmax recipe).
    * ``"sequences"``: one row per user, ``s[:-1]`` with a target ``s[1:]`` at every position; ``targets``
      is ``[rows, max_len]``.

    ``targets`` is right-aligned with ``inputs`` (0 = no target); ``lengths`` counts each row's items.
    """
    if mode not in SAMPLE_MODES:
        raise ConfigError(f"unknown sample mode {mode!r} (expected one of {', '.join(SAMPLE_MODES)})")
    usable = [s for s in seqs if len(s) >= 2]
    if mode == "sequences":
        inputs = pad_left([s[:-1] for s in usable], max_len)
        return inputs, pad_left([s[1:] for s in usable], max_len), (inputs > 0).sum(axis=1)
    n_rows = sum(len(s) - 1 for s in usable)
    inputs = np.zeros((n_rows, max_len), dtype=np.int64)
    targets = np.zeros((n_rows, 1), dtype=np.int64)
    lengths = np.zeros(n_rows, dtype=np.int64)
    row = 0
    for s in usable:
        n = len(s) - 1
        # window k of [0]*max_len + s+1 ends just before s[k]: the prefix s[:k], left-padded
        padded = np.concatenate([np.zeros(max_len, dtype=np.int64), s + 1])
        inputs[row : row + n] = np.lib.stride_tricks.sliding_window_view(padded, max_len)[1 : n + 1]
        targets[row : row + n, 0] = s[1:] + 1
        lengths[row : row + n] = np.minimum(np.arange(1, n + 1), max_len)
        row += n
    return inputs, targets, lengths


def sample_weights(
    seqs: Sequence[NDArray[np.int64]], weights: Sequence[NDArray[np.float32]], max_len: int, *,
    mode: str = "prefixes"
) -> NDArray[np.float32]:
    """The weight of each target of :func:`training_samples` (per event weights aligned with ``seqs``),
    shaped like its ``targets`` (0 where there is no target)."""
    usable = [w[1:].astype(np.float32) for s, w in zip(seqs, weights, strict=True) if len(s) >= 2]
    if mode == "prefixes":
        return (np.concatenate(usable) if usable else np.zeros(0, dtype=np.float32)).reshape(-1, 1)
    out = np.zeros((len(usable), max_len), dtype=np.float32)
    for i, w in enumerate(usable):
        tail = w[-max_len:]
        if len(tail):
            out[i, max_len - len(tail) :] = tail
    return out


def negative_index(
    seqs: Sequence[NDArray[np.int64]], negatives: Sequence[NDArray[np.int64]], *, mode: str = "prefixes"
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """The negatives of each row of :func:`training_samples`, as ``(row_user, offsets, items)``: row ``r``
    belongs to user ``u = row_user[r]`` (counted over the users that give rows), whose negative item rows
    are ``items[offsets[u]:offsets[u + 1]]``. One list per user, not per row: a long history gives many
    rows that share it."""
    if mode not in SAMPLE_MODES:
        raise ConfigError(f"unknown sample mode {mode!r} (expected one of {', '.join(SAMPLE_MODES)})")
    usable = [i for i, s in enumerate(seqs) if len(s) >= 2]
    counts = np.fromiter((len(negatives[i]) for i in usable), dtype=np.int64, count=len(usable))
    offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(counts)])
    items = np.concatenate([np.asarray(negatives[i], dtype=np.int64) for i in usable]) if usable else \
        np.zeros(0, dtype=np.int64)
    if mode == "sequences":
        return np.arange(len(usable), dtype=np.int64), offsets, items
    rows = np.fromiter((len(seqs[i]) - 1 for i in usable), dtype=np.int64, count=len(usable))
    return np.repeat(np.arange(len(usable), dtype=np.int64), rows), offsets, items


def length_batches(
    lengths: NDArray[np.int64], batch_size: int, rng: np.random.Generator, *, pool: int | None = None
) -> list[NDArray[np.int64]]:
    """Shuffled batches of rows of equal (or nearly equal) length; a batch runs at its longest row's width.

    Rows are shuffled, sorted by length (stable, so equal lengths stay in random order), cut into batches,
    and the batch order is shuffled. Why: histories are short (median 4 training items on Beauty) and a
    random batch nearly always holds one long row, so it would run at the full width; sorted, almost no
    position is padding. ``pool`` sorts inside random pools of ``pool`` batches instead of globally
    (more length mixing, more padding).
    """
    order = rng.permutation(len(lengths))
    chunk = batch_size * pool if pool else max(len(order), 1)
    batches: list[NDArray[np.int64]] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def padding_share(lengths: NDArray[np.int64], batches: Sequence[NDArray[np.int64]]) -> float:
    """The share of the positions an epoch computes that are padding (each batch at its widest row)."""
    computed = sum(int(lengths[b].max()) * len(b) for b in batches if len(b))
    return 1.0 - float(lengths.sum()) / computed if computed else 0.0
