"""Lazy imports of optional dependencies, with an install hint when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingExtraError


def require(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module!r} is needed for this feature; install it with: pip install \"edgerec-sdk[{extra}]\""
        ) from exc
