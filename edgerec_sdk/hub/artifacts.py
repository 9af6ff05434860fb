"""Which channel artifact kinds the hub accepts, and the check each one's bytes pass before it is stored.

A channel artifact is an opaque, signed document published next to a channel's bundles: a catalogue delta
(kind ``catalogue``), later a merchandising rule set. The hub keeps them in order per ``(channel, kind)``
(storage ``artifacts`` table) and serves their exact bytes with the signature the publisher made; edges verify
the signature like a manifest's (``sync/artifacts.py``). The hub's own check only refuses malformed documents
early (400, nothing stored); edges check again, since the hub is not trusted with content.

A new kind registers a validator here: ``VALIDATORS["rules"] = parse_rules``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..bundle.delta import DEFAULT_MAX_DELTA_BYTES, parse_delta

__all__ = ["DEFAULT_MAX_ARTIFACT_BYTES", "VALIDATORS"]

DEFAULT_MAX_ARTIFACT_BYTES: Final = DEFAULT_MAX_DELTA_BYTES

#: kind -> a check of the artifact's bytes that raises ``EdgerecError`` or ``ValueError`` when malformed.
VALIDATORS: dict[str, Callable[[bytes], object]] = {"catalogue": parse_delta}
