"""Rollback protection (fault C04): the newest manifest ``created_at`` an edge accepted, per channel.

TUF's rule for metadata versions: the signed ``created_at`` of every base bundle the edge accepts is kept in
``state_dir/high_water/<channel>.json`` (written atomically, shared by the workers of a host, surviving
restarts). A manifest older than that -- a replay of an older signed answer, or a channel moved back with
``edgerec channel set`` -- is refused (``rollback_refused``) before anything is downloaded. Equal stamps are
accepted (``update_metrics`` keeps ``created_at``; two builds in one second). A stamp further ahead of the
host's clock than ``max_clock_skew_s`` is refused (``from_the_future``) and never becomes the mark, since it
would outrank every later bundle; a mark from the future found on disk (left by an older SDK) is ignored.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson

from .._impl.files import replace_file
from ..bundle import Manifest
from ..bundle.manifest import created_at_time
from ..errors import FutureManifestRefused, ModelFormatError, RollbackRefused

__all__ = ["HighWaterMark"]

logger = logging.getLogger(__name__)

_SAFE_CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class HighWaterMark:
    """The newest accepted (created_at, model_version) of one channel: in memory and under ``state_dir``.

    Args:
        state_dir: the edge's state directory.
        channel: the channel followed.
        max_clock_skew_s: how far ahead of ``wall_clock`` a ``created_at`` may be.
        wall_clock: the real clock (``created_at`` is compared with the date, never with a test's fake clock).
    """

    def __init__(self, state_dir: Path, channel: str, *, max_clock_skew_s: float = 86400.0,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.channel = channel
        self.max_clock_skew_s = max_clock_skew_s
        self._wall = wall_clock
        name = channel if _SAFE_CHANNEL.fullmatch(channel) else \
            "sha256-" + hashlib.sha256(channel.encode()).hexdigest()
        self.path = state_dir / "high_water" / f"{name}.json"
        self._mark: tuple[datetime, str] | None = None
        self._warned = False
        self._future_logged: set[str] = set()

    def load(self) -> tuple[datetime, str] | None:
        """The newest (created_at, version) accepted: the larger of memory and disk (other workers write it)."""
        mark = self._mark
        try:
            doc = orjson.loads(self.path.read_bytes())
            when = created_at_time(str(doc["created_at"]))
            version = str(doc["model_version"])
        except FileNotFoundError:
            return mark
        except (OSError, ValueError, KeyError, TypeError):
            if not self._warned:
                logger.warning("rollback high-water mark %s unreadable; using the one in memory", self.path.name)
                self._warned = True
            return mark
        if when is not None and self.in_future(when):
            # honouring it would refuse every later bundle forever (recovery: docs/reliability.md, C04)
            if version not in self._future_logged:
                self._future_logged.add(version)
                logger.error("rollback high-water mark %s names %r created in the future (%s); ignored",
                             self.path.name, version, when.isoformat())
            return mark
        if when is not None and (mark is None or when > mark[0]):
            mark = (when, version)
            self._mark = mark
        return mark

    def in_future(self, when: datetime) -> bool:
        return when.timestamp() > self._wall() + self.max_clock_skew_s

    def check(self, manifest: Manifest) -> None:
        """Refuse ``manifest`` when it is older than the newest accepted, or stamped in the future."""
        when = created_at_time(manifest.created_at)
        if when is None:
            raise ModelFormatError(f"hub manifest: created_at {manifest.created_at[:64]!r} is not an ISO 8601 "
                                   "time; the edge cannot order it against what it serves",
                                   model_version=manifest.model_version)
        if self.in_future(when):
            raise FutureManifestRefused(
                f"channel {self.channel!r}: manifest of {manifest.model_version!r} has created_at "
                f"{manifest.created_at[:64]!r}, more than {self.max_clock_skew_s:.0f} s ahead of this host's clock "
                "(max_clock_skew_s); a stamp from the future would lock out every later bundle",
                model_version=manifest.model_version)
        mark = self.load()
        if mark is not None and when < mark[0]:
            raise RollbackRefused(
                f"channel {self.channel!r}: manifest of {manifest.model_version!r} (created_at "
                f"{manifest.created_at!r}) is older than {mark[1]!r} (created_at "
                f"{mark[0].strftime('%Y-%m-%dT%H:%M:%SZ')!r}), the newest this edge accepted",
                model_version=manifest.model_version, newest_version=mark[1])

    def raise_to(self, created_at: str, version: str) -> None:
        """Record ``created_at`` as the channel's newest accepted, if it is newer; atomic, best effort on disk."""
        when = created_at_time(created_at)
        if when is None or self.in_future(when):
            return
        mark = self.load()
        if mark is not None and when <= mark[0]:
            return
        self._mark = (when, version)
        doc = {"channel": self.channel, "created_at": created_at, "model_version": version}
        try:
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            replace_file(self.path, orjson.dumps(doc) + b"\n")
        except OSError as exc:  # read-only or full state dir: the mark holds in memory for this process
            if not self._warned:
                logger.warning("cannot persist the rollback high-water mark (%s); kept in memory only",
                               type(exc).__name__)
                self._warned = True
