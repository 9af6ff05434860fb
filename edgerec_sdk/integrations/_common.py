"""Settings parsing and the per-process recommender holder shared by the Django and Flask integrations.

No Django or Flask import here: both integrations build on this module, and tests exercise it without either.
"""

from __future__ import annotations

import atexit
import dataclasses
import encodings.idna  # noqa: F401  (why: see below)
import gc
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle.manifest import MANIFEST_NAME
from ..config import RecommenderConfig
from ..errors import ConfigError
from ..recommender import Recommender
from ..sync.config import connect_sync_config

# The first use of a codec imports its module; two threads doing that at once can make one of them fail with
# "LookupError: unknown encoding: idna" (a CPython race). Werkzeug encodes every request's host with idna, so
# the first requests of a fresh threaded worker (gunicorn gthread) raced, and one answered HTTP 500. Importing
# the codec here, at app import, settles it before any worker thread starts.

__all__ = [
    "ProcessLocalRecommender",
    "Settings",
    "check_hub",
    "check_settings",
    "create_recommender",
    "parse_settings",
]

logger = logging.getLogger(__name__)

_OWN_KEYS = frozenset({"bundle", "signing_key", "hub", "preload"})
# The nested config sections (index, profile, feedback ...), whose keys are case-insensitive too.
_NESTED = frozenset(f.name for f in dataclasses.fields(RecommenderConfig) if isinstance(f.default_factory, type))
# The public calls a holder forwards to its recommender, so `app.extensions["edgerec"].recommend(...)` works.
_FORWARDED = frozenset({
    "recommend", "recommend_many", "similar_items", "feedback", "forget", "items", "status", "flush", "config",
})


@dataclass(frozen=True, slots=True)
class Settings:
    """The parsed ``EDGEREC`` settings.

    Attributes:
        bundle: a bundle directory, ``"demo"``, or ``None`` when a hub is configured.
        signing_key: the bundle's HMAC key, if any (``SIGNING_KEY`` as ``str`` or ``bytes``; kept as bytes).
        hub: hub settings (lower-case keys) for ``Recommender.connect``, or ``None``.
        config: the :class:`RecommenderConfig` built from every other key.
        preload: build the recommender when the app is set up (before a gunicorn ``--preload`` fork) instead of
            on each worker's first request; see :meth:`ProcessLocalRecommender.preload`.
    """

    bundle: str | None
    signing_key: bytes | None = field(default=None, repr=False)
    hub: Mapping[str, Any] | None = field(default=None, repr=False)
    config: RecommenderConfig = field(default_factory=RecommenderConfig)
    preload: bool = False


def parse_settings(raw: object) -> Settings:
    """Validate an ``EDGEREC`` mapping without loading anything (cheap; run at startup and by checks).

    Raises:
        ConfigError: not a mapping, neither ``BUNDLE`` nor ``HUB``, both, or a bad ``RecommenderConfig`` key.
    """
    if raw is None:
        raise ConfigError('EDGEREC settings are missing: set at least {"BUNDLE": "<bundle dir>" or "demo"}')
    if not isinstance(raw, Mapping):
        raise ConfigError(f"EDGEREC settings must be a mapping, not {type(raw).__name__}")
    data = {str(k).lower(): v for k, v in raw.items()}
    bundle, hub, key = data.get("bundle"), data.get("hub"), data.get("signing_key")
    if bundle is not None and not isinstance(bundle, (str, os.PathLike)):
        raise ConfigError("EDGEREC['BUNDLE'] must be a bundle directory path or 'demo'")
    if hub is not None and not isinstance(hub, Mapping):
        raise ConfigError("EDGEREC['HUB'] must be a mapping of hub settings")
    if (bundle is None) == (hub is None):
        raise ConfigError("EDGEREC needs exactly one of BUNDLE (a bundle directory or 'demo') and HUB")
    if key is not None and not isinstance(key, (str, bytes)):
        raise ConfigError("EDGEREC['SIGNING_KEY'] must be str or bytes")
    preload = data.get("preload", False)
    if not isinstance(preload, bool):
        raise ConfigError("EDGEREC['PRELOAD'] must be True or False")
    rest = {k: ({str(n).lower(): x for n, x in v.items()} if k in _NESTED and isinstance(v, Mapping) else v)
            for k, v in data.items() if k not in _OWN_KEYS}
    try:
        config = RecommenderConfig.from_mapping(rest)
    except ConfigError as exc:
        raise ConfigError(f"EDGEREC: {exc}") from exc
    return Settings(
        bundle=None if bundle is None else os.fspath(bundle),
        signing_key=key.encode() if isinstance(key, str) else key,
        hub=None if hub is None else {str(k).lower(): v for k, v in hub.items()},
        config=config,
        preload=preload,
    )


def check_settings(settings: Settings) -> None:
    """What :func:`parse_settings` cannot see without the file system: ``BUNDLE`` names a bundle directory, and
    ``HUB`` holds what ``Recommender.connect`` needs (a URL it will accept, the keys, a state directory).

    Raises:
        ConfigError: with the setting named, at startup (Flask ``init_app``; Django ``manage.py check``).
    """
    if settings.bundle not in (None, "demo") and not (Path(str(settings.bundle)) / MANIFEST_NAME).is_file():
        raise ConfigError(f"EDGEREC['BUNDLE'] {str(settings.bundle)[:200]!r} is not a bundle directory (no "
                          f"{MANIFEST_NAME} there); point it at a directory written by `edgerec build`, or use 'demo'")
    if settings.hub is not None:
        check_hub(settings.hub)


def check_hub(hub: Mapping[str, Any]) -> None:
    """Validate an ``EDGEREC["HUB"]`` mapping (lower-case ``Recommender.connect`` keywords) without connecting."""
    allowed = {"hub_url", "token", "user_id_key", "state_dir", "channel", "signing_key", "allow_unsigned_bundles",
               "poll_interval_s", "start"}
    unknown = sorted(set(hub) - allowed)
    if unknown:
        raise ConfigError(f"EDGEREC['HUB']: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = [k for k in ("hub_url", "token", "user_id_key", "state_dir") if not hub.get(k)]
    if missing:
        raise ConfigError(f"EDGEREC['HUB'] needs {', '.join(k.upper() for k in missing)}")
    try:
        connect_sync_config(**{k: v for k, v in hub.items() if k != "start"})
    except ConfigError as exc:
        raise ConfigError(f"EDGEREC['HUB']: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"EDGEREC['HUB']: {exc}") from exc


def create_recommender(settings: Settings) -> Recommender:
    """Build the recommender the settings describe (loads and verifies the bundle: seconds, not per request).

    Raises:
        ModelFormatError, ModelIntegrityError, ModelLoadError: the bundle cannot be served.
        ConfigError: ``HUB`` is set but this version has no ``Recommender.connect``.
    """
    if settings.hub is not None:
        return _connect(settings)
    if settings.bundle == "demo":
        return Recommender.demo(config=settings.config)
    if settings.bundle is None:  # pragma: no cover - parse_settings guarantees one of the two
        raise ConfigError("EDGEREC needs BUNDLE or HUB")
    return Recommender.from_bundle(settings.bundle, config=settings.config, signing_key=settings.signing_key)


def _connect(settings: Settings) -> Recommender:
    # The seam for the hub: once Recommender.connect exists, EDGEREC["HUB"] is handed to it as keywords
    # (lower-cased SyncConfig field names: hub_url, token, user_id_key, signing_key, channel, state_dir ...).
    connect: Callable[..., Recommender] | None = getattr(Recommender, "connect", None)
    if connect is None:
        raise ConfigError("EDGEREC['HUB'] needs Recommender.connect, which this version lacks; use BUNDLE")
    hub = dict(settings.hub or {})
    return connect(config=settings.config, **hub)


class ProcessLocalRecommender:
    """One :class:`Recommender` per process, created on first use.

    Created lazily so that a gunicorn ``--preload`` master (or any parent that forks) does not build it before
    the fork. If one was built before a fork anyway, the child calls its ``postfork()`` (fresh locks, its own
    onnxruntime session and SQLite connections; the memory-mapped vectors stay shared) and keeps it.

    The public calls (``recommend``, ``similar_items``, ``feedback``, ``forget``, ``items``, ``status``, ``flush``)
    are forwarded, so the holder can stand where a recommender is expected.

    Args:
        factory: builds the recommender (``lambda: create_recommender(settings)``).
        close_timeout_s: how long ``close()`` (and the exit hook) may wait to flush pending feedback.
    """

    def __init__(self, factory: Callable[[], Recommender], *, close_timeout_s: float = 2.0) -> None:
        self._factory = factory
        self._close_timeout_s = close_timeout_s
        self._lock = threading.Lock()
        self._rec: Recommender | None = None
        self._pid = os.getpid()
        self._atexit_registered = False

    @property
    def recommender(self) -> Recommender:
        """This process's recommender, built on first access."""
        rec = self._rec
        if rec is not None and self._pid == os.getpid():
            return rec
        return self._slow_get()

    def get(self) -> Recommender:
        """Same as :attr:`recommender`."""
        return self.recommender

    def peek(self) -> Recommender | None:
        """The recommender if this process already built one, else ``None`` (never builds)."""
        return self._rec if self._pid == os.getpid() else None

    def _slow_get(self) -> Recommender:
        if self._pid != os.getpid():  # forked: the parent's lock may be held by a thread that no longer exists
            self._lock = threading.Lock()
            self._pid = os.getpid()
            self._atexit_registered = False
            if self._rec is not None:
                self._rec.postfork()
        with self._lock:
            if self._rec is None:
                self._rec = self._factory()
                logger.info("edgerec recommender ready in pid %d (%s)", os.getpid(), self._rec.status().model_version)
            if not self._atexit_registered:
                _register_atexit(self)
                self._atexit_registered = True
            return self._rec

    def preload(self) -> Recommender:
        """Build the recommender now, in a parent that is about to fork workers, and freeze the GC.

        The workers then share the parent's bundle, catalog and index pages copy-on-write, and each calls
        ``postfork()`` on first use (its own onnxruntime session and SQLite connections). ``gc.freeze()`` keeps
        the collector from touching, and so copying, the parent's objects in every worker. Only for a parent
        that forks (gunicorn ``--preload``); the default stays lazy.
        """
        rec = self.recommender
        gc.collect()
        gc.freeze()
        return rec

    def close(self) -> None:
        """Close this process's recommender (bounded flush); the next access builds a new one."""
        with self._lock:
            rec, self._rec = self.peek(), None
        if rec is not None:
            rec.close(timeout_s=self._close_timeout_s)

    def __getattr__(self, name: str) -> Any:
        if name in _FORWARDED:
            return getattr(self.recommender, name)
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"<ProcessLocalRecommender pid={self._pid} built={self._rec is not None}>"


def _register_atexit(holder: ProcessLocalRecommender) -> None:
    ref = weakref.ref(holder)

    def _close_at_exit() -> None:
        target = ref()
        if target is None:
            return
        try:
            target.close()
        except Exception:  # never block or fail interpreter exit
            logger.debug("closing the recommender at exit failed", exc_info=True)
        # Flushed and closed: let interpreter finalisation skip its full collections of the heap, which took
        # 1-2 s of a web worker's stop on a busy 2-core host (gunicorn's 3 s budget, fault D21). Only cyclic
        # garbage that exists now goes uncollected, whose __del__ CPython never promises to run at exit; hooks
        # registered before this one still run, and nothing else is skipped (unlike os._exit).
        gc.freeze()

    atexit.register(_close_at_exit)
