"""The answer pipeline after retrieval: rank -> diversify -> rules, one readable function per stage.

Retrieval and filtering happen before this, inside the top-K kernel (the filter mask and the exclusions, the
``never`` rules among them, are applied while scoring, so a narrow filter still fills ``k``). Each stage here
takes and returns a :class:`Candidates` list, best first, so every stage can be tested and timed alone and the
recommender reads as the chain it is::

    candidates = retrieve(...)                 # ServingState.rank: kernel top-N with filters and exclusions
    candidates = rank_stage(candidates, ...)   # the bundle's CTR ranker, when it has one
    candidates = diversify(candidates, ...)    # MMR over item vectors (and a per-category cap)
    shaped     = apply_rules(...)              # pin, boost, bury, always, never
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

from ..bundle import Bundle
from .diversity import DiversityTables, mmr_order
from .rules import RuleSet, apply_rules

DIVERSITY_POOL_FACTOR: Final = 4
"""MMR chooses among the first ``max(4 * k, 40)`` candidates (``max(40 * k, 40)`` with a category cap); the rest
follow in relevance order."""
DIVERSITY_POOL_MIN: Final = 40
MMR_MAX_PICKS: Final = 100
"""MMR orders at most the first 100 places of an answer (a page, not a catalogue): each pick costs one pass over
the pool, so a ``k`` of thousands would cost millions of passes; later places keep relevance order."""

__all__ = [
    "DIVERSITY_POOL_FACTOR", "DIVERSITY_POOL_MIN", "MMR_MAX_PICKS", "Candidates", "RankStage", "StageOptions", "diversify", "merge_rule_sets", "run_stages",
    "shape_with_rules",
]


@dataclass(frozen=True, slots=True)
class Candidates:
    """Rows and scores, best first, plus the rules that touched the list so far."""

    rows: NDArray[np.int64]
    scores: NDArray[np.float32]
    touched: tuple[str, ...] = ()
    features: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """Per row: the ranker features that moved it most (only with ``explain``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StageOptions:
    """What one request asks of the stages after retrieval."""

    k: int
    diversity: float = 0.0
    max_per_category: int | None = None
    rules: RuleSet | None = None
    allow: NDArray[np.bool_] | None = None
    blocked: NDArray[np.int64] | None = None

    @property
    def active(self) -> bool:
        """Whether any stage changes the retrieval order (the plain path skips the pipeline entirely)."""
        return self.diversity > 0 or self.max_per_category is not None or bool(self.rules)


def diversify(bundle: Bundle, candidates: Candidates, options: StageOptions,
              tables: DiversityTables | None = None) -> Candidates:
    """Pick the first ``k`` by maximal marginal relevance; the rest follow in relevance order.

    ``tables`` (the serving state's :class:`~edgerec_sdk.rank.diversity.DiversityTables`; without them, item
    vectors alone) carry the catalogue's categories: with them, similarity blends item vectors and categories, and the
    per-category cap keys on an item's first category. The tail stays so that rules which bury items still have
    un-buried ones to promote. A no-op at diversity 0 without a category cap.
    """
    if (options.diversity <= 0 and options.max_per_category is None) or len(candidates.rows) == 0:
        return candidates
    # MMR looks at the head of the list only: similarity work grows with the pool, and on Beauty the default knob
    # lost nothing measurable when its pool shrank from all 100 candidates to the first 40. Relevance keeps the
    # whole list's scale. A category cap reads a longer head (all 100 candidates at k=10), so one category
    # filling the short head can still yield to other categories further down.
    picks = min(options.k, MMR_MAX_PICKS)
    factor = DIVERSITY_POOL_FACTOR * (10 if options.max_per_category is not None else 1)
    pool = min(len(candidates.rows), max(factor * picks, DIVERSITY_POOL_MIN))
    rows, scores = candidates.rows[:pool], candidates.scores[:pool]
    lo, hi = float(candidates.scores.min()), float(candidates.scores.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        finite = candidates.scores[np.isfinite(candidates.scores)]
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    # without tables (a caller of this function alone): the item-vector cosine, no categories
    codes = None if tables is None else tables.codes
    vectors = bundle.vectors.unit_rows(rows) if tables is None else tables.rows(rows)
    cats = None if codes is None or options.max_per_category is None else \
        [None if c < 0 or r >= len(codes) else int(c) for r, c in
         zip(rows.tolist(), codes[np.minimum(rows, len(codes) - 1), 0].tolist(), strict=True)]
    head = mmr_order(vectors, scores, picks, diversity=options.diversity, categories=cats,
                     max_per_category=options.max_per_category, unit=True, bounds=(lo, hi))
    rest = np.ones(len(candidates.rows), dtype=np.bool_)
    rest[head] = False  # the candidates arrive best first, so the rest keep their relevance order
    order = np.concatenate([head, np.flatnonzero(rest)])
    # MMR gains are not comparable across lists; each item keeps its own relevance score, in MMR order.
    return Candidates(candidates.rows[order], candidates.scores[order], candidates.touched, candidates.features)


def shape_with_rules(bundle: Bundle, candidates: Candidates, options: StageOptions) -> Candidates:
    """Apply the merchandising rules (a truncation to ``k`` when there are none)."""
    if not options.rules:
        return Candidates(candidates.rows[: options.k], candidates.scores[: options.k], candidates.touched,
                          candidates.features)
    shaped = apply_rules(options.rules, bundle.catalog, candidates.rows, candidates.scores, options.k,
                         allow=options.allow, blocked=options.blocked)
    return Candidates(shaped.rows, shaped.scores, candidates.touched + shaped.touched, candidates.features)


RankStage = Callable[[Candidates], Candidates]
"""A stage that rescores and reorders one user's candidates (the CTR ranker, bound to that user's context)."""


def run_stages(bundle: Bundle, candidates: Candidates, options: StageOptions,
               ranker: RankStage | None = None, tables: DiversityTables | None = None) -> Candidates:
    """The whole chain after retrieval for one user's candidates (``tables``: see :func:`diversify`)."""
    if ranker is not None:
        candidates = ranker(candidates)
    candidates = diversify(bundle, candidates, options, tables)
    return shape_with_rules(bundle, candidates, options)


def merge_rule_sets(sets: Sequence[RuleSet | None]) -> RuleSet | None:
    """One rule set from several (the channel's, then the request's); conflicts across them are refused."""
    present = [s for s in sets if s]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return RuleSet.combine(present)
