"""Building a frozen config dataclass from a plain mapping (Django settings, Flask config, JSON)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from ..errors import ConfigError

__all__ = ["from_mapping"]

_T = TypeVar("_T")


def from_mapping(cls: type[_T], data: Mapping[str, Any]) -> _T:
    """``cls(**data)``, where a nested mapping becomes its field's dataclass (the field's ``default_factory``) and a
    field whose default is a tuple takes any iterable.

    Unknown keys and wrong arguments raise :class:`ConfigError`, so a typo in a settings file fails at startup.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__} settings must be a mapping, not {type(data).__name__}")
    # Read from the defaults, not the annotations: those are strings, and public classes are re-homed to
    # ``edgerec_sdk`` (see __init__), where they would not resolve.
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(map(str, unknown))}")
    kwargs: dict[str, Any] = {}
    try:
        for name, value in data.items():
            nested = fields[name].default_factory
            if isinstance(nested, type) and dataclasses.is_dataclass(nested) and isinstance(value, Mapping):
                value = from_mapping(nested, value)
            elif isinstance(fields[name].default, tuple):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
