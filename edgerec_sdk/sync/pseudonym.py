"""User pseudonyms (design G5, docs/design.md) and sticky rollout assignment (fault C08).

Raw user ids never leave the edge: every outbound user field is ``HMAC-SHA256(user_id_key, user)``, hex,
truncated to 32 characters. Rollout buckets derive from the pseudonym, never from ``hash()`` (which is salted
per process), so every worker and every restart assigns a user the same way.

Example:
    >>> p = Pseudonymizer("secret")
    >>> len(p("user-42"))
    32
"""

from __future__ import annotations

import hashlib
import hmac

from ..errors import ConfigError

__all__ = ["PSEUDONYM_CHARS", "Pseudonymizer", "in_rollout", "pseudonymize"]

PSEUDONYM_CHARS = 32


def pseudonymize(user_id: str, key: str | bytes) -> str:
    """``HMAC-SHA256(key, user_id)`` as hex, truncated to 32 characters."""
    k = key.encode() if isinstance(key, str) else key
    return hmac.new(k, str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]


class Pseudonymizer:
    """A callable holding the key; its ``repr`` never shows the key."""

    __slots__ = ("_key",)

    def __init__(self, key: str | bytes) -> None:
        if not key:
            raise ConfigError("user_id_key is required to send user data to a hub")
        self._key = key.encode() if isinstance(key, str) else bytes(key)

    def __call__(self, user_id: str) -> str:
        return pseudonymize(user_id, self._key)

    def __repr__(self) -> str:
        return "Pseudonymizer(<key redacted>)"


def rollout_bucket(pseudonym: str, salt: str) -> int:
    """A bucket in ``[0, 10000)`` for a pseudonymised user; ``salt`` (the channel) decorrelates rollouts."""
    digest = hashlib.sha256(f"{salt}\x00{pseudonym}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def in_rollout(pseudonym: str, *, salt: str, percent: float) -> bool:
    """Whether the user falls in the first ``percent`` % of buckets (sticky, equal in every process)."""
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    return rollout_bucket(pseudonym, salt) < round(percent * 100)
