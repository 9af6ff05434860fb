"""What happens to candidates besides scoring: filters (as kernel masks), the ranking pipeline after retrieval
(ranker, diversity, merchandising rules) and explanations."""

from __future__ import annotations

from .diversity import intra_list_similarity, mmr_order
from .explain import explain_items
from .filters import FILTER_KEYS, OPERATORS, FilterCompiler, check_filters, column_kind
from .pipeline import Candidates, StageOptions, run_stages
from .rules import Rule, RuleSet, apply_rules

__all__ = [
    "FILTER_KEYS",
    "OPERATORS",
    "Candidates",
    "FilterCompiler",
    "Rule",
    "RuleSet",
    "StageOptions",
    "apply_rules",
    "check_filters",
    "column_kind",
    "explain_items",
    "intra_list_similarity",
    "mmr_order",
    "run_stages",
]
