"""Opt-in SIGTERM handling: flush pending feedback within a deadline, then die as the signal intended.

Why opt-in: a library must not take over a process's signals (gunicorn, uWSGI and Celery install their own, and
their graceful shutdown already runs ``atexit``, where the SDK makes its bounded flush). A plain script or a
container whose PID 1 sends SIGTERM gets no ``atexit`` run at all, because Python's default SIGTERM action
kills the process; ``Recommender.install_signal_handlers()`` is for that case. Events are durable in the
outbox either way (fault I3); the handler only makes them *arrive* before the process goes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

__all__ = ["install_flush_on_signal"]

logger = logging.getLogger(__name__)


def install_flush_on_signal(close: Callable[[float], object], *, timeout_s: float,
                            signals: Iterable[int] = (signal.SIGTERM,)) -> bool:
    """On each of ``signals``: ``close(timeout_s)``, then the previous handler (or the default action).

    Returns ``False`` (and changes nothing) when not called from the main thread, where Python forbids it.
    """
    if threading.current_thread() is not threading.main_thread():
        logger.warning("install_signal_handlers() must run in the main thread; nothing installed")
        return False
    for signum in signals:
        previous: Any = signal.getsignal(signum)

        def handler(sig: int, frame: FrameType | None, previous: Any = previous) -> None:
            try:
                close(timeout_s)
            except Exception:  # why: the process is going away; never turn the signal into a traceback
                logger.debug("close on signal failed", exc_info=True)
            if callable(previous):
                previous(sig, frame)
            elif previous != signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)  # the default action: exit status says "killed by SIGTERM"

        signal.signal(signum, handler)
    return True
