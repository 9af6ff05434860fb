"""The one place onnxruntime is imported: lazily, without its telemetry thread, and safe across ``os.fork``.

Why (fault D21 in docs/reliability.md): importing onnxruntime starts a native telemetry thread that sleeps on
a condition variable. A process forked after that inherits the condition variable with a waiter that does not
exist in the child, and hangs forever at exit in onnxruntime's static destructors (``pthread_cond_destroy``):
every gunicorn ``--preload`` worker then waits out the graceful timeout and is SIGKILLed, losing what its
exit hooks had not flushed. So:

* ``import edgerec_sdk`` never imports onnxruntime; :func:`onnxruntime` does, when a session is first built;
* importing this module sets ``ORT_DISABLE_TELEMETRY=1`` unless the environment already sets it, so the
  thread never starts, whoever imports onnxruntime later (export ``ORT_DISABLE_TELEMETRY=0`` to keep it);
* a session with an intra-op thread pool, built before a fork, hangs the same way when the child deallocates
  it (it joins threads the child does not have): every session is made by :func:`inference_session`, and a
  forked child never deallocates the ones it inherited (their owners build their own where they need one).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Generic, TypeVar

__all__ = ["PerProcess", "inference_session", "onnxruntime"]

logger = logging.getLogger(__name__)

_TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"
# Imported before us with telemetry on: a fork of this process hangs at exit; said once, at first use.
_IMPORTED_EARLY = "onnxruntime" in sys.modules and os.environ.get(_TELEMETRY_ENV) is None
os.environ.setdefault(_TELEMETRY_ENV, "1")

_lock = threading.Lock()
_warned = False


def onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, imported on first call (with its telemetry thread off)."""
    global _warned
    ort: ModuleType = importlib.import_module("onnxruntime")
    if _IMPORTED_EARLY and not _warned:
        with _lock:
            if not _warned:
                _warned = True
                logger.warning(
                    "onnxruntime was imported before edgerec_sdk with its telemetry thread running: a process "
                    "forked from this one (gunicorn --preload, os.fork) will hang at exit; set %s=1 in the "
                    "environment or import edgerec_sdk first", _TELEMETRY_ENV)
    return ort


_T = TypeVar("_T")


class PerProcess(Generic[_T]):
    """A value built on first use in each process (a session: one inherited across ``os.fork`` is not used).

    ``get`` is lock-free once built; ``reset`` (a postfork hook) forgets the parent's value without touching it.
    """

    def __init__(self, create: Callable[[], _T]) -> None:
        self._create = create
        self._value: _T | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def get(self) -> _T:
        value = self._value
        if value is not None and self._pid == os.getpid():
            return value
        with self._lock:
            if self._value is None or self._pid != os.getpid():
                self._value = self._create()
                self._pid = os.getpid()
            return self._value

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._value = None
        self._pid = -1


_sessions: weakref.WeakSet[Any] = weakref.WeakSet()


def inference_session(model: bytes, options: Any, providers: Sequence[str]) -> Any:
    """An ``InferenceSession`` that a process forked later will never deallocate (onnxruntime errors pass)."""
    session = onnxruntime().InferenceSession(model, sess_options=options, providers=list(providers))
    _sessions.add(session)
    return session


def _abandon_inherited() -> None:
    """In a forked child: one extra reference, never released, to every session of the parent.

    Deallocating one would join or destroy thread-pool state whose threads exist only in the parent, and
    block forever. CPython never frees an object with a live reference, not even at exit, so each stays as
    the fork left it: pages shared copy-on-write, still usable where it has no pool of its own.
    """
    global _sessions
    for session in list(_sessions):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(session))
    _sessions = weakref.WeakSet()


os.register_at_fork(after_in_child=_abandon_inherited)
