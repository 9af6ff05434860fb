"""Which channel artifact kinds the hub accepts, and the check each one's bytes pass before it is stored.

A channel artifact is an opaque, signed document published next to a channel's bundles: a catalogue delta
(kind ``catalogue``), later a merchandising rule set. The hub keeps them in order per ``(channel, kind)``
(storage ``artifacts`` table) and serves their exact bytes with the signature the publisher made; edges verify
the signature like a manifest's (``sync/artifacts.py``). The hub's own check only refuses malformed documents
early (400, nothing stored); edges check again, since the hub is not trusted with content.

A kind registers a validator here (``catalogue``: :func:`~edgerec_sdk.bundle.delta.parse_delta`, ``rules``:
:func:`parse_rules`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import orjson

from ..bundle.delta import DEFAULT_MAX_DELTA_BYTES, parse_delta
from ..rank.rules import RuleSet

__all__ = ["DEFAULT_MAX_ARTIFACT_BYTES", "VALIDATORS"]

DEFAULT_MAX_ARTIFACT_BYTES: Final = DEFAULT_MAX_DELTA_BYTES

#: kind -> a check of the artifact's bytes that raises ``EdgerecError`` or ``ValueError`` when malformed.
def parse_rules(body: bytes) -> RuleSet:
    """A merchandising rule set's bytes (JSON): well-formed and free of conflicts. Its catalogue columns are
    checked by each edge against the catalogue it serves."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"rule set is not JSON: {exc}") from exc
    return RuleSet.parse(doc)


VALIDATORS: dict[str, Callable[[bytes], object]] = {"catalogue": parse_delta, "rules": parse_rules}
