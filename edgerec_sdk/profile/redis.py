"""A profile store in Redis, shared by the workers of many hosts (extra ``[redis]``).

Each user is one Redis list of JSON-encoded ``[item, type, ts]`` triples, newest at the right end, trimmed to
``max_events_per_user`` in the same transaction as the append, with an optional TTL so users who never return
expire. Every call runs under a socket timeout of ``timeout_s``; any Redis error becomes
:class:`ProfileUnavailableError`, so the recommender degrades with ``profile_unavailable`` instead of failing.

The ``redis`` package is imported when a store is created, never at ``import edgerec_sdk``.

Example:
    >>> store = RedisProfileStore("redis://127.0.0.1:6379/0", timeout_s=0.05)  # doctest: +SKIP
    >>> store.append("user-42", ProfileEvent("B004756YJA", "click", 1.7e9))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson

from .._impl.log import redact_url
from .._impl.optional import require
from ..errors import ProfileUnavailableError
from .base import ProfileEvent

__all__ = ["RedisProfileStore"]

logger = logging.getLogger(__name__)


class RedisProfileStore:
    """Per-user recent history in Redis lists.

    Args:
        url: ``redis://[:password@]host:port/db`` or ``rediss://…`` (TLS).
        max_events_per_user: newest events kept per user.
        timeout_s: socket connect and read timeout of every call, in seconds.
        ttl_s: seconds after the user's last event before Redis drops the list (``None``: never).
        key_prefix: prefix of every key; user ids follow it verbatim (Redis keys are binary-safe).
        client: an existing ``redis.Redis`` (tests, or to share a pool); ``url`` is then ignored.

    Raises:
        MissingExtraError: the ``redis`` package is not installed.
        ValueError: a bad argument.
    """

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, max_events_per_user: int = 200, timeout_s: float = 0.1,
        ttl_s: int | None = None, key_prefix: str = "edgerec:profile:", client: Any = None,
    ) -> None:
        if isinstance(max_events_per_user, bool) or max_events_per_user <= 0:
            raise ValueError("max_events_per_user must be a positive integer")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
            raise ValueError("timeout_s must be a positive number of seconds")
        if ttl_s is not None and (isinstance(ttl_s, bool) or ttl_s <= 0):
            raise ValueError("ttl_s must be a positive integer or None")
        self._redis = require("redis", extra="redis")
        self._url = url
        self._max_events = int(max_events_per_user)
        self._timeout_s = float(timeout_s)
        self._ttl_s = ttl_s
        self._prefix = key_prefix
        self._own_client = client is None
        self._client: Any = client if client is not None else self._make_client()

    def _make_client(self) -> Any:
        return self._redis.Redis.from_url(
            self._url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s,
            retry_on_timeout=False,
        )

    def _key(self, user: str) -> str:
        return self._prefix + user

    def get(self, user: str) -> list[ProfileEvent]:
        """The user's newest events, oldest first."""
        try:
            raw = self._client.lrange(self._key(user), -self._max_events, -1)
        except self._redis.RedisError as exc:
            raise ProfileUnavailableError(f"profile read failed: {type(exc).__name__}") from exc
        events = []
        for blob in raw:
            try:
                item, type_, ts, *rest = orjson.loads(blob)  # a rating adds its stars as a fourth field
                value = float(rest[0]) if rest and rest[0] is not None else None
                events.append(ProfileEvent(str(item), str(type_), float(ts), value))
            except (orjson.JSONDecodeError, TypeError, ValueError):
                continue  # a foreign or corrupt entry: skip it rather than fail the request
        return events

    def append(self, user: str, event: ProfileEvent) -> None:
        """Append and trim in one MULTI/EXEC transaction (and refresh the TTL when set)."""
        key = self._key(user)
        try:
            pipe = self._client.pipeline(transaction=True)
            fields: list[object] = [event.item, event.type, float(event.ts)]
            if event.value is not None:
                fields.append(float(event.value))
            pipe.rpush(key, orjson.dumps(fields))
            pipe.ltrim(key, -self._max_events, -1)
            if self._ttl_s is not None:
                pipe.expire(key, self._ttl_s)
            pipe.execute()
        except self._redis.RedisError as exc:
            raise ProfileUnavailableError(f"profile write failed: {type(exc).__name__}") from exc

    def forget(self, user: str) -> None:
        """Delete the user's list (raises when Redis is unreachable: erasure must not silently fail)."""
        try:
            self._client.delete(self._key(user))
        except self._redis.RedisError as exc:
            raise ProfileUnavailableError(f"profile erase failed: {type(exc).__name__}") from exc

    def close(self) -> None:
        """Close the connection pool this store created; idempotent."""
        if self._own_client:
            try:
                self._client.close()
            except self._redis.RedisError:  # pragma: no cover
                logger.debug("closing the redis client failed", exc_info=True)

    def postfork(self) -> None:
        """In a forked child: a fresh client (the inherited sockets belong to the parent; not closed here)."""
        if self._own_client:
            self._client = self._make_client()

    def __repr__(self) -> str:
        return f"<RedisProfileStore url={redact_url(self._url)!r} max_events_per_user={self._max_events}>"
