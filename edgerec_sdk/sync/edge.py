"""``EdgeSync``: the hub connection of one process, wired from its parts; ``NullSync`` when there is no hub.

The Recommender holds one of these and calls a handful of methods; it never reaches into the parts.

Example:
    >>> sync = EdgeSync(SyncConfig(hub_url="https://hub", token="E", user_id_key="k", signing_key="s",
    ...                            state_dir="/var/lib/edgerec"), on_bundle=rec_swap)  # doctest: +SKIP
    >>> bundle = sync.load_last_good()      # serve at once from disk, hub or no hub  # doctest: +SKIP
    >>> sync.start()                        # updater + uploader threads  # doctest: +SKIP
    >>> sync.put({"user": "u1", "item": "B00", "type": "click", "ts": 1.7e9, "event_id": "..."})  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import random
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

from .._impl.threads import Clock, RepeatingTask, SystemClock, register_postfork
from ..bundle import Bundle
from ..bundle.verify import check_signing_key
from ..errors import ConfigError
from . import protocol
from .artifacts import Artifact, ArtifactFollower
from .base import Sync
from .client import HubClient
from .config import SyncConfig
from .outbox import Outbox, PutResult
from .pseudonym import Pseudonymizer, in_rollout
from .updater import Updater
from .uploader import Uploader

__all__ = ["EdgeSync", "NullSync"]

logger = logging.getLogger(__name__)

_TOMBSTONE_KEY = "!tombstone"  # outbox user_key of tombstones, so a later forget() never erases them


class EdgeSync(Sync):
    """Model updates in, feedback out, for one process.

    Args:
        config: hub URL, token, keys, intervals, caps.
        state_dir: overrides ``config.state_dir``.
        transport: an ``httpx.BaseTransport`` for tests (``MockTransport``, ``WSGITransport``).
        clock: time source (a fake one in tests).
        rng: jitter source (seeded in tests).
        on_bundle: called with each new verified bundle, from the updater thread (or ``poll_once()``).
        on_candidate: called with ``(bundle, percent)`` while the channel rolls a candidate out, and
            ``(None, 0.0)`` when that ends; route a user to it when ``in_rollout(user, percent)``.
        on_artifact: artifact kind -> a callable taking each verified artifact of the channel (e.g.
            ``{"catalogue": apply_delta}``); it applies the whole artifact or raises to refuse it.
    """

    def __init__(
        self,
        config: SyncConfig,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_bundle: Callable[[Bundle], object] | None = None,
        on_candidate: Callable[[Bundle | None, float], object] | None = None,
        on_artifact: Mapping[str, Callable[[Artifact], object]] | None = None,
    ) -> None:
        self.config = config
        if not config.user_id_key:
            raise ConfigError("user_id_key is required to send feedback to a hub (user ids leave only pseudonymised)")
        root = Path(state_dir or config.state_dir or "")
        if not str(root) or str(root) == ".":
            raise ConfigError("state_dir is required (the outbox and the last good bundle live there)")
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._pseudo = Pseudonymizer(config.user_id_key)
        self._default_edge_id = not config.edge_id
        self.edge_id = config.edge_id or _default_edge_id()
        self.state_dir_safe = _prepare_state_dir(root)
        work_dir = root if self.state_dir_safe else Path(tempfile.mkdtemp(prefix="edgerec-"))
        self.client = HubClient(
            [config.hub_url, *config.hub_urls], token=config.token, transport=transport, connect_timeout_s=config.connect_timeout_s,
            read_timeout_s=config.read_timeout_s, ca_bundle=config.ca_bundle,
            max_retry_after_s=config.max_retry_after_s, clock=self._clock,
        )
        ob = config.outbox
        outbox_path = None if not self.state_dir_safe else (ob.path or str(root / "outbox.sqlite3"))
        self.outbox = Outbox(ob, path=outbox_path, clock=self._clock)
        self.uploader = Uploader(self.outbox, self.client, config, edge_id=self.edge_id, clock=self._clock,
                                 rng=self._rng)
        self.updater = Updater(self.client, config, state_dir=work_dir, on_bundle=on_bundle,
                               on_candidate=on_candidate, clock=self._clock, rng=self._rng)
        key = None if config.signing_key is None else check_signing_key(config.signing_key)
        self.followers = [
            ArtifactFollower(self.client, channel=config.channel, kind=kind, signing_key=key, apply=fn,
                             state_dir=work_dir if self.state_dir_safe else None,
                             max_bytes=config.max_artifact_bytes)
            for kind, fn in (on_artifact or {}).items()
        ]
        self.artifact_task = RepeatingTask("edgerec-artifacts", self.poll_artifacts,
                                           interval_s=config.poll_interval_s)
        self._later: deque[Mapping[str, Any]] = deque()
        self._later_lock = threading.Lock()  # a flush waits for rows another thread took but has not stored yet
        self.later_dropped = 0
        self.uploader.before_upload = self.store_later
        self._lock = threading.Lock()
        self._closed = False
        self._close_result = False
        self._started = False
        self.rejected_after_close = 0
        self._pid = os.getpid()
        register_postfork(self.postfork)

    def __repr__(self) -> str:
        return f"EdgeSync({self.client.base_url!r}, channel={self.config.channel!r}, edge_id={self.edge_id!r})"

    # --- the Recommender's calls ------------------------------------------------------------------------

    def load_last_good(self) -> Bundle | None:
        """The last good bundle on disk, re-verified, or ``None`` (serve it at once; fault A02, C05)."""
        if not self.state_dir_safe:
            return None
        return self.updater.load_last_good()

    def load_saved_artifacts(self) -> int:
        """Replay the channel artifacts kept on disk (after ``load_last_good``); return how many applied."""
        return sum(f.load_saved() for f in self.followers)

    def poll_artifacts(self) -> float:
        """One poll of every followed artifact kind; the next delay."""
        for follower in self.followers:
            follower.poll_once()
        return self.config.poll_interval_s * (1.0 + 0.1 * self._rng.random())

    def pseudonym(self, user: str) -> str:
        """The user's pseudonym (what the hub sees)."""
        return self._pseudo(user)

    def put(self, event: Mapping[str, Any]) -> PutResult | None:
        """Queue one validated feedback event durably; never raises for disk or hub trouble.

        ``event`` holds ``user`` (the raw id, pseudonymised here), ``item``, ``type``, and optionally ``ts``,
        ``value``, ``rec_id``, ``model_version``, ``event_id`` (minted when missing). Only allow-listed
        fields are stored. Returns the outbox's verdict, or ``None`` after ``close()``.
        """
        if self._closed:
            self.rejected_after_close += 1
            return None
        user = str(event["user"])
        pseudonym = self._pseudo(user)
        wire = protocol.wire_event({**event, "user": pseudonym, "edge_id": self.edge_id})
        event_id = str(wire.setdefault("event_id", uuid.uuid4().hex))
        wire.setdefault("ts", self._clock.time())
        result = self.outbox.append(event_id, pseudonym, orjson.dumps(wire))
        if not self._started:
            self._start_uploader()
        return result

    def put_later(self, event: Mapping[str, Any]) -> None:
        """Queue an event (an impression row) for the outbox off the request path: the uploader thread,
        ``flush()`` and ``close()`` store queued rows in one transaction before they upload. A hard kill loses
        at most one upload interval of them; beyond ``max_memory_events`` queued, new ones are dropped and
        counted (``later_dropped``)."""
        if self._closed:
            self.rejected_after_close += 1
            return
        if len(self._later) >= self.config.outbox.max_memory_events:
            self.later_dropped += 1
            return
        self._later.append(event)
        if not self._started and not self.uploader.task.started:  # lock-free check: this runs per answer
            self._start_uploader()

    def store_later(self) -> int:
        """Move the queued events into the outbox (pseudonymised, allow-listed); return how many."""
        with self._later_lock:
            rows: list[tuple[str, str, bytes]] = []
            while True:
                try:
                    event = self._later.popleft()
                except IndexError:
                    break
                pseudonym = self._pseudo(str(event["user"]))
                wire = protocol.wire_event({**event, "user": pseudonym, "edge_id": self.edge_id})
                rows.append((str(wire.setdefault("event_id", uuid.uuid4().hex)), pseudonym, orjson.dumps(wire)))
            if rows:
                self.outbox.put_many(rows)
            return len(rows)

    def forget(self, user: str) -> int:
        """Erase the user's pending events at once and queue a tombstone for the hub; return rows erased."""
        pseudonym = self._pseudo(user)
        self.store_later()  # queued impressions of the user are erased with the rest
        n = self.outbox.forget(pseudonym)
        event_id = uuid.uuid4().hex
        tomb = {"event_id": event_id, "user": pseudonym, "type": protocol.FORGET_TYPE,
                "ts": self._clock.time(), "edge_id": self.edge_id}
        self.outbox.put(event_id, _TOMBSTONE_KEY, orjson.dumps(tomb))
        return n

    def in_rollout(self, user: str, percent: float) -> bool:
        """Sticky rollout assignment of a user (equal in every worker and after restarts)."""
        return in_rollout(self._pseudo(user), salt=self.config.channel, percent=percent)

    def start(self) -> None:
        """Start the updater and uploader threads (idempotent; never called at import)."""
        if self._closed:
            return
        self._started = True
        self.updater.start()
        self.uploader.start()
        if self.followers:
            self.artifact_task.start()

    def _start_uploader(self) -> None:
        with self._lock:
            if not self._closed:
                self.uploader.start()

    def poll_once(self) -> float:
        """One updater step, then one artifact poll, without the threads (uWSGI without threads, tests)."""
        delay = self.updater.poll_once()
        for follower in self.followers:
            follower.poll_once()
        return delay

    def upload_once(self) -> float:
        """One uploader step without the thread."""
        return self.uploader.upload_once()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Deliver everything pending within ``timeout_s``; return whether the outbox is empty."""
        return self.uploader.flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop the updater, flush with a deadline, stop the uploader, close files and sockets.

        Idempotent and bounded by about ``timeout_s``; returns whether everything was delivered. Rows left stay
        in the outbox for the next process.
        """
        with self._lock:
            if self._closed:
                return self._close_result
            self._closed = True
        deadline = time.monotonic() + max(0.0, timeout_s)
        self.updater.stop(timeout_s=min(1.0, timeout_s))
        self.artifact_task.stop(timeout_s=min(1.0, timeout_s))
        self.uploader.task.stop(timeout_s=max(0.0, min(1.0, deadline - time.monotonic())))
        delivered = self.uploader.flush(max(0.0, deadline - time.monotonic()))
        self.uploader.stop(timeout_s=max(0.0, deadline - time.monotonic()))
        self.outbox.close()
        self.client.close()
        self._close_result = delivered
        return delivered

    def postfork(self) -> None:
        """Called in a forked child (automatically, through ``os.register_at_fork``): rebuild locks, the HTTP
        client and SQLite connection; restart the threads the parent ran.

        Runs once per process: the automatic hook and a caller's own ``postfork()`` (the Recommender's, for one)
        may both call it, and a second run would start a second pair of threads.
        """
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._later = deque()  # the parent stores its own queued rows
        self._later_lock = threading.Lock()
        if self._default_edge_id:
            self.edge_id = _default_edge_id()
            self.uploader.edge_id = self.edge_id
        self.client.postfork()
        self.outbox.postfork()
        self.uploader.postfork()
        self.updater.postfork()
        self.artifact_task.postfork()
        for follower in self.followers:
            follower.postfork()
        if self._started and not self._closed:
            self._started = False
            self.start()

    def status(self) -> dict[str, Any]:
        """Counters and state for ``Recommender.status()``; the outbox counters balance (fault I5)."""
        counters = self.outbox.counters()
        up = self.uploader.status()
        upd = self.updater.status()
        return {
            **upd,
            **up,
            "auth_failed": bool(up["auth_failed"] or upd["auth_failed"]),
            "outbox": {k: v for k, v in counters.items() if k != "durable"},
            "outbox_durable": bool(counters["durable"]),
            "state_dir_safe": self.state_dir_safe,
            "edge_id": self.edge_id,
            "artifacts": {f.kind: f.status() for f in self.followers},
            "feedback_after_close": self.rejected_after_close,
            "impressions_queued": len(self._later),
            "impressions_dropped": self.later_dropped,
            "closed": self._closed,
        }


class NullSync(Sync):
    """The same methods as :class:`EdgeSync`, doing nothing: the Recommender's collaborator without a hub."""

    edge_id = ""

    def load_last_good(self) -> Bundle | None:
        return None

    def load_saved_artifacts(self) -> int:
        return 0

    def poll_artifacts(self) -> float:
        return 0.0

    def pseudonym(self, user: str) -> str:
        return ""

    def put(self, event: Mapping[str, Any]) -> PutResult | None:
        return None

    def put_later(self, event: Mapping[str, Any]) -> None:
        return None

    def store_later(self) -> int:
        return 0

    def forget(self, user: str) -> int:
        return 0

    def in_rollout(self, user: str, percent: float) -> bool:
        return False

    def start(self) -> None:
        return None

    def poll_once(self) -> float:
        return 0.0

    def upload_once(self) -> float:
        return 0.0

    def flush(self, timeout_s: float = 5.0) -> bool:
        return True

    def close(self, timeout_s: float = 5.0) -> bool:
        return True

    def postfork(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {}


def _default_edge_id() -> str:
    return f"{socket.gethostname()[:64]}-{os.getpid()}"


def _prepare_state_dir(root: Path) -> bool:
    """Create ``root`` ``0700``; return whether it is safe to keep bundles and the outbox there (fault D16)."""
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = root.stat()
    except OSError as exc:
        logger.warning("state_dir %s unusable (%s): memory-only mode, nothing survives a restart",
                       root, type(exc).__name__)
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        logger.warning("state_dir %s belongs to another user: memory-only mode, bundles never loaded from it", root)
        return False
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        logger.warning("state_dir %s is writable by others: memory-only mode, bundles never loaded from it", root)
        return False
    if not os.access(root, os.W_OK | os.X_OK):
        logger.warning("state_dir %s is not writable: memory-only mode, nothing survives a restart", root)
        return False
    return True
