"""Argument checks of the request path: programmer errors raise at once, before any guarded block."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["check_diversity", "check_exclude", "check_k", "check_query"]


def check_k(k: object, *, max_k: int) -> int:
    """``k`` as an int clamped to ``max_k``; ``TypeError`` for bools, floats and strings, ``ValueError`` if <= 0."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, not {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"k must be positive, not {k}")
    return min(int(k), max_k)


def check_exclude(exclude: Sequence[str], *, max_exclude: int) -> tuple[str, ...]:
    """``exclude`` as a tuple of item ids; a bare string or non-string ids are a ``TypeError``."""
    if isinstance(exclude, str):
        raise TypeError("exclude must be a collection of item ids, not a single string")
    items = tuple(exclude)
    if len(items) > max_exclude:
        raise ValueError(f"exclude has {len(items)} ids, over max_exclude={max_exclude}")
    if not all(isinstance(i, str) for i in items):
        raise TypeError("exclude must hold item id strings")
    return items


def check_diversity(diversity: object) -> float:
    """The MMR knob: a real number in ``[0, 1]``."""
    if isinstance(diversity, bool) or not isinstance(diversity, (int, float)):
        raise TypeError(f"diversity must be a number in [0, 1], not {type(diversity).__name__}")
    value = float(diversity)
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"diversity must be in [0, 1], got {diversity!r}")
    return value


def check_query(query: object) -> str | None:
    """``query`` as given; a ``TypeError`` unless it is a string or ``None`` (any text at all is fine)."""
    if query is not None and not isinstance(query, str):
        raise TypeError(f"query must be a string, not {type(query).__name__}")
    return query
