"""The feedback uploader: outbox batches to ``POST /v1/events``, retried by design G1/G2 (docs/design.md).

``upload_once()`` is the whole loop body; the ``edgerec-uploader`` thread only calls it repeatedly. A batch
keeps its ``batch_id`` and body across retries (a lost ack is answered as duplicates, fault A15); rows are
deleted only after a 2xx. A 413 splits the batch in halves under new batch ids (A14); a whole-batch 400/422
dead-letters it (A13); 401/403 back off long and keep everything (A08).
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._impl.threads import Clock, RepeatingTask, SystemClock
from ..errors import ConfigError, HubAuthError, HubError, HubStatusError
from . import protocol
from .client import HubClient
from .config import SyncConfig
from .leases import new_owner
from .outbox import LeasedEvent, Outbox

__all__ = ["Uploader"]

logger = logging.getLogger(__name__)

_DEAD_LETTER_STATUSES = frozenset({400, 422})


@dataclass(slots=True)
class _Batch:
    batch_id: str
    events: list[LeasedEvent]
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [e.event_id for e in self.events]


_PEERS_SENDING = 0.05
"""Seconds until the next look while every pending row is leased by another worker of this host."""


class Uploader:
    """Sends outbox batches to the hub.

    Args:
        outbox: where events wait.
        client: the hub client.
        config: ``upload_interval_s`` (idle wait between outbox checks), ``auth_backoff_s`` (retry delay after
            401/403 and other refusals of the endpoint itself), ``outbox.batch_size`` (events per batch).
        edge_id: names this edge in every batch; default ``config.edge_id``.
        backoff: retry delays after transient failures; default from ``config.backoff_base_s``/``backoff_max_s``.
        clock: monotonic time for backoff and deadlines.
        rng: jitter source (seed it in tests).
    """

    def __init__(
        self,
        outbox: Outbox,
        client: HubClient,
        config: SyncConfig,
        *,
        edge_id: str | None = None,
        backoff: protocol.Backoff | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.config = config
        self.edge_id = config.edge_id if edge_id is None else edge_id
        if not self.edge_id:
            raise ConfigError("the uploader needs an edge_id (in SyncConfig or as an argument)")
        self._rng = rng or random.Random()
        self.backoff = backoff or protocol.Backoff(base_s=config.backoff_base_s, max_s=config.backoff_max_s,
                                                   rng=self._rng)
        self._clock = clock or SystemClock()
        self._owner = new_owner(self.edge_id)
        self._queue: deque[_Batch] = deque()
        self._next_at = 0.0
        self._lock = threading.Lock()
        self._flush_wait = threading.Event()
        self.auth_failed = False
        self.last_error: str | None = None
        self.requests = 0
        self.batches_delivered = 0
        self._error_episode: str | None = None
        self.before_upload: Callable[[], object] | None = None
        """Called before each upload attempt (the edge stores its queued impression rows)."""
        # first upload one interval after start: events put in a burst leave as one batch
        self.task = RepeatingTask("edgerec-uploader", self._tick, interval_s=config.upload_interval_s,
                                 initial_delay_s=config.upload_interval_s)

    # --- the loop body -----------------------------------------------------------------------------------

    def _tick(self) -> float:
        return self.upload_once()

    def upload_once(self, *, timeout_s: float | None = None, force: bool = False) -> float:
        """Send at most one batch; return the seconds until the next attempt is due (0: more to send now).

        Args:
            timeout_s: cap on this request's timeouts (a flush deadline).
            force: ignore the backoff timer (used by nothing but tests and explicit flushes).
        """
        if self.before_upload is not None:
            self.before_upload()
        # A flush with a deadline never waits longer than its deadline for the thread's request to end.
        if not self._lock.acquire(timeout=-1 if timeout_s is None else max(0.0, timeout_s)):
            return 0.01
        try:
            return self._upload_locked(timeout_s, force)
        finally:
            self._lock.release()

    def _upload_locked(self, timeout_s: float | None, force: bool) -> float:
        if True:
            now = self._clock.monotonic()
            if not force and now < self._next_at:
                return self._next_at - now
            if not self._queue:
                events = self.outbox.lease(self._owner, self.config.outbox.batch_size)
                if not events:
                    return self.config.upload_interval_s
                self._queue.append(self._encode(_Batch(uuid.uuid4().hex, events)))
            batch = self._queue[0]
            self.requests += 1
            try:
                result = self.client.post_events(batch.body, batch.headers, batch.ids, timeout_s=timeout_s)
            except HubAuthError as exc:
                return self._auth_failure(exc, batch)
            except HubStatusError as exc:
                return self._status_failure(exc, batch)
            except HubError as exc:
                return self._retry_later(exc, batch, None)
            self._success(batch, result)
            return 0.0 if self._queue or self.outbox.pending() else self.config.upload_interval_s

    def _encode(self, batch: _Batch) -> _Batch:
        batch.body, batch.headers = protocol.encode_batch(
            edge_id=self.edge_id, batch_id=batch.batch_id, events=[e.body for e in batch.events]
        )
        return batch

    def _success(self, batch: _Batch, result: protocol.BatchResult) -> None:
        self._queue.popleft()
        delivered = [*result.accepted, *result.duplicates]
        self.outbox.ack(delivered, result.rejected)
        if result.rejected:
            logger.error("hub rejected %d of %d events; kept in the dead-letter table",
                         len(result.rejected), len(batch.events))
        self.batches_delivered += 1
        self.backoff.reset()
        self._next_at = 0.0
        if self.auth_failed or self._error_episode:
            logger.info("event upload recovered")
        self.auth_failed = False
        self._error_episode = None
        self.last_error = None

    def _auth_failure(self, exc: HubAuthError, batch: _Batch) -> float:
        self.auth_failed = True
        if self._error_episode != "auth":
            logger.error("hub refused the edge token (%d); events stay in the outbox, retrying every ~%.0f s",
                         exc.status, self.config.auth_backoff_s)
            self._error_episode = "auth"
        self.last_error = f"http_{exc.status}"
        return self._schedule(self.backoff.jitter(self.config.auth_backoff_s), batch)

    def _status_failure(self, exc: HubStatusError, batch: _Batch) -> float:
        if exc.status == 413:
            self._queue.popleft()
            if len(batch.events) == 1:
                self.outbox.ack([], {batch.events[0].event_id: "too_large"})
                logger.error("one event is over the hub's size cap; dead-lettered")
            else:
                half = len(batch.events) // 2
                # new batch ids: never the same body twice after a 413 (fault A14)
                self._queue.appendleft(self._encode(_Batch(uuid.uuid4().hex, batch.events[half:])))
                self._queue.appendleft(self._encode(_Batch(uuid.uuid4().hex, batch.events[:half])))
            self._next_at = 0.0
            return 0.0
        if exc.retryable:
            return self._retry_later(exc, batch, exc.retry_after_s)
        if exc.status in _DEAD_LETTER_STATUSES:
            self._queue.popleft()
            self.outbox.ack([], dict.fromkeys(batch.ids, f"http_{exc.status}"))
            if self._error_episode != f"http_{exc.status}":
                logger.error("hub refused a whole event batch with %d (a bug); %d events dead-lettered",
                             exc.status, len(batch.events))
                self._error_episode = f"http_{exc.status}"
            self.last_error = f"http_{exc.status}"
            return 0.0
        # 3xx, 404, 405, 409, 410...: the endpoint itself is wrong; never repeat this request, keep the events
        self._queue.popleft()
        self.outbox.release(batch.ids)
        if self._error_episode != f"http_{exc.status}":
            logger.error("hub answered %d to an event batch; events kept, retrying in ~%.0f s",
                         exc.status, self.config.auth_backoff_s)
            self._error_episode = f"http_{exc.status}"
        self.last_error = f"http_{exc.status}"
        self._next_at = self._clock.monotonic() + self.backoff.jitter(self.config.auth_backoff_s)
        return self._next_at - self._clock.monotonic()

    def _retry_later(self, exc: HubError, batch: _Batch, retry_after_s: float | None) -> float:
        kind = type(exc).__name__ if not isinstance(exc, HubStatusError) else f"http_{exc.status}"
        if self._error_episode != kind:
            logger.warning("event upload failed (%s); retrying with backoff", kind)
            self._error_episode = kind
        self.last_error = kind
        return self._schedule(self.backoff.next_delay(retry_after_s), batch)

    def _schedule(self, delay: float, batch: _Batch) -> float:
        self.outbox.renew(batch.ids)
        self._next_at = self._clock.monotonic() + delay
        return delay

    # --- flush and thread ----------------------------------------------------------------------------------

    def flush(self, timeout_s: float) -> bool:
        """Send until nothing is pending or ``timeout_s`` passes; return whether everything was delivered."""
        deadline = self._clock.monotonic() + max(0.0, timeout_s)
        if self.before_upload is not None:
            self.before_upload()
        while True:
            if not self._queue and self.outbox.pending() == 0:
                return True
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return False
            delay = self.upload_once(timeout_s=remaining)
            if not self._queue and self.outbox.pending() == 0:
                return True
            if not self._queue:
                # Nothing this process could lease: another worker of the host holds the rest and acks it in
                # moments (every gunicorn worker flushes at once on SIGTERM): look again soon (fault D21).
                delay = min(delay, _PEERS_SENDING)
            if delay > 0:
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    return False
                self._clock.wait(self._flush_wait, min(delay, remaining))

    def start(self) -> bool:
        """Start the ``edgerec-uploader`` thread (idempotent)."""
        return self.task.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the thread; give leased batches back to the outbox."""
        self._flush_wait.set()
        ok = self.task.stop(timeout_s)
        # A request may still hold the lock (bounded by its timeouts): never wait for it here.
        if self._lock.acquire(timeout=0.05):
            try:
                while self._queue:
                    self.outbox.release(self._queue.popleft().ids)
            finally:
                self._lock.release()
        return ok

    def postfork(self) -> None:
        """In a forked child: fresh lock and thread; the parent's in-flight batches are the parent's."""
        self._lock = threading.Lock()
        self._flush_wait = threading.Event()
        self._queue = deque()
        self._owner = new_owner(self.edge_id)
        self.task.postfork()

    def status(self) -> dict[str, Any]:
        """Numbers for ``status()``."""
        return {
            "auth_failed": self.auth_failed,
            "last_upload_error": self.last_error,
            "upload_requests": self.requests,
            "batches_delivered": self.batches_delivered,
            "upload_failures_in_a_row": self.backoff.failures,
            "uploader_running": self.task.started,
        }
