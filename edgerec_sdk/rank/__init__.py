"""Business rules applied to candidates: filters (as kernel masks) and explanations."""

from __future__ import annotations

from .explain import explain_items
from .filters import FILTER_KEYS, FilterCompiler, check_filters

__all__ = ["FILTER_KEYS", "FilterCompiler", "check_filters", "explain_items"]
