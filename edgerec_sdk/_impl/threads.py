"""Background threads, clocks and fork hooks.

Why this module exists: the SDK runs at most two background loops (updater, uploader). Both must start
lazily, never die on an exception, stop within a deadline, and survive ``os.fork`` (gunicorn ``--preload``,
Celery) by being rebuilt in the child rather than inherited half-alive. ``RepeatingTask`` is the one loop
implementation; ``register_postfork`` is the one fork hook registry. Time goes through a :class:`Clock` so
tests drive backoff and deadlines without sleeping.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "Clock",
    "RepeatingTask",
    "SystemClock",
    "at_exit_weakly",
    "register_fork_guard",
    "register_postfork",
]

logger = logging.getLogger(__name__)


class Clock(Protocol):
    """Time as the SDK sees it: a monotonic clock for deadlines, a wall clock for timestamps."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (deadlines, backoff)."""
        ...

    def time(self) -> float:
        """Unix wall-clock seconds (event timestamps, leases shared between processes)."""
        ...

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for ``event``; return whether it is set."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return event.wait(max(0.0, timeout_s))


class RepeatingTask:
    """Run ``fn`` repeatedly on a named daemon thread.

    ``fn`` returns the seconds to wait before its next run (``None``: ``interval_s``). The wait is an
    ``Event.wait`` so :meth:`wake` runs the body at once and :meth:`stop` ends the loop within one body run.
    Any exception from ``fn`` is logged (once per exception type and episode) and the loop carries on.

    Example:
        >>> task = RepeatingTask("edgerec-demo", lambda: None, interval_s=60.0)
        >>> task.start(); task.stop(timeout_s=1.0)  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[], float | None],
        *,
        interval_s: float,
        initial_delay_s: float = 0.0,
    ) -> None:
        self.name = name
        self._fn = fn
        self._interval_s = float(interval_s)
        self._initial_delay_s = float(initial_delay_s)
        self._init_state()
        self._stopped = False

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._last_error: str | None = None
        self.runs = 0
        self.errors = 0

    @property
    def started(self) -> bool:
        """Whether this process runs the loop thread now."""
        t = self._thread
        return t is not None and t.is_alive() and self._pid == os.getpid()

    @property
    def last_error(self) -> str | None:
        """The type name of the last exception the body raised, if any."""
        return self._last_error

    def start(self) -> bool:
        """Start the thread unless it runs already or the task was stopped; return whether it runs."""
        if self._pid != os.getpid():
            self.postfork()
        with self._lock:
            if self._stopped:
                return False
            if self._thread is not None and self._thread.is_alive():
                return True
            self._halt.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
            return True

    def wake(self) -> None:
        """Run the body as soon as possible."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop for good and join for at most ``timeout_s``; return whether the thread has ended."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._halt.set()
        self._wake.set()
        if thread is None or thread is threading.current_thread() or self._pid != os.getpid():
            return True
        thread.join(max(0.0, timeout_s))
        return not thread.is_alive()

    def postfork(self) -> None:
        """In a forked child: forget the parent's thread and locks (never acquire them)."""
        stopped = self._stopped
        self._init_state()
        self._stopped = stopped

    def _run(self) -> None:
        delay = self._initial_delay_s
        while not self._halt.is_set():
            if delay > 0:
                self._wake.wait(delay)
            self._wake.clear()
            if self._halt.is_set():
                break
            try:
                result = self._fn()
                self._last_error = None
            except Exception as exc:  # why: a background loop must never die
                self.errors += 1
                if self._last_error != type(exc).__name__:
                    logger.exception("%s: unexpected %s; the loop carries on", self.name, type(exc).__name__)
                self._last_error = type(exc).__name__
                result = None
            self.runs += 1
            delay = self._interval_s if result is None else max(0.0, float(result))


# --- fork hooks -----------------------------------------------------------------------------------------

_hooks: list[weakref.WeakMethod[Callable[[], None]]] = []
_guards: list[tuple[weakref.WeakMethod[Callable[[], None]], weakref.WeakMethod[Callable[[], None]]]] = []
_registered = False
_registry_lock = threading.Lock()


def _register_os_hooks() -> None:
    global _registered
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
        )
        _registered = True


def register_fork_guard(acquire: Callable[[], None], release: Callable[[], None]) -> None:
    """Run the bound ``acquire`` in the parent just before ``os.fork`` and ``release`` just after (parent side).

    Why: SQLite's lock bookkeeping is per process and inherited by the child; forking while a transaction is
    open leaves the child unable to write. Guarding the connection's lock across fork keeps it idle then.
    """
    with _registry_lock:
        _guards[:] = [g for g in _guards if g[0]() is not None]
        _guards.append((weakref.WeakMethod(acquire), weakref.WeakMethod(release)))
        _register_os_hooks()


def _before_fork() -> None:
    for acquire_ref, _ in list(_guards):
        method = acquire_ref()
        if method is not None:
            try:
                method()
            except Exception:  # why: never block a fork
                logger.exception("pre-fork hook failed")


def _after_fork_in_parent() -> None:
    for _, release_ref in reversed(list(_guards)):
        method = release_ref()
        if method is not None:
            try:
                method()
            except Exception:
                logger.exception("post-fork (parent) hook failed")


def register_postfork(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in every forked child, for as long as its object lives.

    Held through a weak reference, so registering never keeps an object alive.
    """
    with _registry_lock:
        _hooks[:] = [h for h in _hooks if h() is not None]
        _hooks.append(weakref.WeakMethod(method))
        _register_os_hooks()


def _after_fork_in_child() -> None:
    global _registry_lock
    # The parent may have held the lock at fork time: replace it, never acquire it.
    _registry_lock = threading.Lock()
    for ref in list(_hooks):
        method = ref()
        if method is None:
            continue
        try:
            method()
        except Exception:  # why: one broken hook must not break the child or the other hooks
            logger.exception("postfork hook failed")


def at_exit_weakly(owner: object, hook: Callable[[Any], None]) -> None:
    """Run ``hook(owner)`` at interpreter exit if ``owner`` is still alive, holding only a weak reference
    (never keeps it alive); an exception from the hook is logged at debug level, never raised (exit must
    never fail because of us)."""
    ref = weakref.ref(owner)

    def run() -> None:
        live = ref()
        if live is not None:
            try:
                hook(live)
            except Exception:
                logger.debug("exit hook failed", exc_info=True)

    atexit.register(run)
