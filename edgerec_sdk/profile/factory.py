"""``make_profile_store(spec)``: a profile store from one settings string.

| spec | store |
|---|---|
| ``"memory"`` | :class:`MemoryProfileStore`, this process only (the default) |
| ``"sqlite:///relative/path.sqlite3"``, ``"sqlite:////abs/path.sqlite3"`` | :class:`SqliteProfileStore`, shared by the workers of a host |
| ``"redis://host:6379/0"``, ``"rediss://…"`` | :class:`RedisProfileStore`, shared by many hosts (extra ``[redis]``) |

As in SQLAlchemy URLs, the path is everything after ``sqlite:///``: three slashes and a relative path, or four
and an absolute one. Options go in the query string: ``?busy_timeout_s=0.1`` (SQLite), ``?timeout_s=0.1``,
``?ttl_s=2592000``, ``?key_prefix=shop:`` (Redis). Other Redis query parameters pass through to redis-py. The
millisecond spellings of earlier versions (``?busy_timeout_ms=100``, ``?timeout_ms=100``) still work, with a
``DeprecationWarning``.

Example:
    >>> make_profile_store("memory")  # doctest: +ELLIPSIS
    <edgerec_sdk.profile.memory.MemoryProfileStore object at ...>
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError
from .base import ProfileStore
from .memory import MemoryProfileStore

__all__ = ["ProfileSpec", "make_profile_store", "parse_profile_spec"]

_SQLITE_OPTIONS = {"busy_timeout_s": float, "synchronous": str}
_REDIS_OPTIONS = {"timeout_s": float, "ttl_s": int, "key_prefix": str}
# Deprecated millisecond options -> their seconds name (settings strings outlive upgrades, so they keep working).
_MS_ALIASES = {"busy_timeout_ms": "busy_timeout_s", "timeout_ms": "timeout_s"}


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """A parsed profile store spec: its kind, its target (path or URL, options removed) and options."""

    kind: str
    target: str
    options: tuple[tuple[str, Any], ...] = ()


def parse_profile_spec(spec: str) -> ProfileSpec:
    """Check a spec without opening anything (used by ``RecommenderConfig`` at construction).

    Raises:
        ConfigError: an unknown scheme, an empty path or an unknown or malformed option.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"profile_store must be a string, not {type(spec).__name__}")
    if spec in ("memory", "memory://"):
        return ProfileSpec("memory", "")
    if spec.startswith("sqlite:///"):
        path, _, query = spec[len("sqlite:///"):].partition("?")
        if not path or path == ":memory:":
            raise ConfigError("profile_store 'sqlite:///PATH' needs a file path every worker can open")
        return ProfileSpec("sqlite", path, _options(query, _SQLITE_OPTIONS, passthrough=False)[0])
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme == "sqlite" or spec.startswith("sqlite:"):
        given = spec.split(":", 1)[1].lstrip("/")
        raise ConfigError(f"profile_store {spec[:80]!r}: a SQLite path takes three slashes after 'sqlite:' "
                          f"('sqlite:///{given[:60]}' for a relative path, 'sqlite:////abs/path' for an absolute one)")
    if scheme in ("redis", "rediss", "unix"):
        parts = urlsplit(spec)
        ours, rest = _options(parts.query, _REDIS_OPTIONS, passthrough=True)
        target = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
        return ProfileSpec("redis", target, ours)
    raise ConfigError(
        "profile_store must be 'memory', 'sqlite:///PATH' or 'redis://HOST:PORT/DB' "
        f"(got a value with scheme {scheme or 'none'!r})"
    )


def make_profile_store(spec: str, *, max_events_per_user: int = 200, max_users: int = 100_000) -> ProfileStore:
    """Create the profile store that ``spec`` names.

    Args:
        spec: ``"memory"``, ``"sqlite:///PATH"`` or ``"redis://HOST:PORT/DB"`` (see the module docstring).
        max_events_per_user: newest events kept per user (every kind).
        max_users: users kept in memory (``"memory"`` only; the shared stores are bounded per user and by
            ``prune``/``ttl_s``).

    Raises:
        ConfigError: a malformed spec.
        MissingExtraError: ``redis://`` without the ``redis`` package.
        ProfileUnavailableError: the SQLite file cannot be created or opened.
    """
    parsed = parse_profile_spec(spec)
    opts = dict(parsed.options)
    if parsed.kind == "memory":
        return MemoryProfileStore(max_events_per_user=max_events_per_user, max_users=max_users)
    if parsed.kind == "sqlite":
        from .sqlite import SqliteProfileStore

        return SqliteProfileStore(parsed.target, max_events_per_user=max_events_per_user, **opts)
    from .redis import RedisProfileStore

    return RedisProfileStore(parsed.target, max_events_per_user=max_events_per_user, **opts)


def _options(
    query: str, allowed: dict[str, type], *, passthrough: bool
) -> tuple[tuple[tuple[str, Any], ...], list[tuple[str, str]]]:
    ours: list[tuple[str, Any]] = []
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        scale = 1.0
        if _MS_ALIASES.get(key) in allowed:
            warnings.warn(f"profile_store option {key!r} is deprecated; use {_MS_ALIASES[key]!r} (seconds)",
                          DeprecationWarning, stacklevel=4)
            key, scale = _MS_ALIASES[key], 0.001
        kind = allowed.get(key)
        if kind is None:
            if passthrough:
                rest.append((key, value))
                continue
            raise ConfigError(f"unknown profile_store option {key!r} (known: {', '.join(sorted(allowed))})")
        try:
            parsed = kind(value)
            if isinstance(parsed, float) and not 0 <= parsed < math.inf:
                raise ValueError(value)
            ours.append((key, parsed * scale if scale != 1.0 else parsed))
        except ValueError as exc:
            what = "a finite number of seconds >= 0" if kind is float else kind.__name__
            raise ConfigError(f"profile_store option {key!r} must be {what}") from exc
    return tuple(ours), rest
