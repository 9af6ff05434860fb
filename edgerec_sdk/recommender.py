"""The facade: wiring, lifecycle and the fallback policy. No math, HTTP or file parsing here."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from cachetools import TTLCache

from . import _log
from ._counters import Counters
from .bundle import Bundle, load_bundle
from .config import RecommenderConfig
from .errors import ClosedError, EdgerecError, NotReadyError
from .events import check_user_id, normalize_event
from .profile import MemoryProfileStore, ProfileEvent, ProfileStore
from .rank import check_filters, explain_items
from .serving import Ranked, ServingState
from .types import DegradedReason, EventLike, Recommendation, Recommendations, Source, Status, UserId

__all__ = ["Recommender"]

logger = logging.getLogger(__name__)

_NON_INTEREST_TYPES = frozenset({"skip"})
_CacheKey = tuple[Any, ...]


class _NullSync:
    """Stands in for the hub sync when there is no hub: feedback stays local."""

    def record(self, event: Any) -> None:
        return None

    def forget(self, user: str) -> None:
        return None

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {}

    def postfork(self) -> None:
        return None


class ItemCatalog:
    """Read-only view of the serving catalog; follows model swaps."""

    def __init__(self, owner: Recommender) -> None:
        self._owner = owner

    def _catalog(self) -> Any:
        state = self._owner._state
        return None if state is None else state.bundle.catalog

    def __len__(self) -> int:
        cat = self._catalog()
        return 0 if cat is None else len(cat)

    def __contains__(self, item_id: object) -> bool:
        cat = self._catalog()
        return cat is not None and isinstance(item_id, str) and item_id in cat

    def __iter__(self) -> Iterator[str]:
        cat = self._catalog()
        return iter(()) if cat is None else iter(cat)

    def __getitem__(self, item_id: str) -> dict[str, Any]:
        cat = self._catalog()
        row = None if cat is None else cat.row(item_id)
        if row is None:
            raise KeyError(item_id)
        return dict(cat.metadata(row))

    def get(self, item_id: str, default: Any = None) -> Any:
        """The item's metadata, or ``default`` when the catalog does not know it."""
        try:
            return self[item_id]
        except KeyError:
            return default


class Recommender:
    """Real-time recommendations in process, from a verified model bundle.

    Args:
        bundle: the bundle to serve (``None`` serves ``fallback_items`` until one is swapped in).
        config: settings; defaults suit a web worker.
        profile_store: where per-user history lives (in process by default).
        clock: wall clock in seconds, for event times (tests inject one).
        origin: a label of where the bundle came from, shown in ``status()``.

    Example:
        >>> rec = Recommender.demo()
        >>> len(rec.recommend("user-42", k=5))
        5
        >>> rec.close()
    """

    def __init__(
        self,
        bundle: Bundle | None = None,
        config: RecommenderConfig | None = None,
        *,
        profile_store: ProfileStore | None = None,
        clock: Callable[[], float] = time.time,
        origin: str | None = None,
        sync: Any = None,
    ) -> None:
        self.config = config or RecommenderConfig()
        cfg = self.config
        self._profiles: ProfileStore = profile_store or MemoryProfileStore(
            max_events_per_user=cfg.profile.max_events_per_user, max_users=cfg.profile.max_users
        )
        self._clock = clock
        self._sync = sync or _NullSync()
        self._counters = Counters()
        self._cache: TTLCache[_CacheKey, tuple[Recommendation, ...]] | None = (
            TTLCache(maxsize=cfg.cache_size, ttl=cfg.cache_ttl_s) if cfg.cache_size else None
        )
        self._cache_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closed = False
        self._state: ServingState | None = None
        self._origin: str | None = None
        self.items = ItemCatalog(self)
        if bundle is not None:
            self.swap(bundle, origin=origin or "path")

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_bundle(
        cls, path: str | Path, *, config: RecommenderConfig | None = None, signing_key: bytes | None = None,
        profile_store: ProfileStore | None = None,
    ) -> Recommender:
        """Load, verify and serve the bundle at ``path``.

        Raises:
            ModelFormatError: the bundle is missing, malformed or fails its checksums.
            ModelLoadError: onnxruntime refused the model or its smoke test failed.
        """
        bundle = load_bundle(path, signing_key=signing_key)
        return cls(bundle, config, profile_store=profile_store, origin="path")

    @classmethod
    def demo(cls, *, config: RecommenderConfig | None = None) -> Recommender:
        """Serve the small Beauty demo bundle shipped inside the package."""
        return cls(load_bundle(demo_bundle_path()), config, origin="demo")

    def swap(self, bundle: Bundle, *, origin: str = "path") -> None:
        """Build and smoke-test a serving state for ``bundle``, then replace the current one atomically."""
        state = ServingState(bundle, self.config)
        state.warm_up()
        previous = self._state
        self._state = state
        self._origin = origin
        if previous is not None and previous.model_version != state.model_version:
            logger.info("bundle swapped %s -> %s", previous.model_version, state.model_version)

    # -- request path ---------------------------------------------------------------------------

    def recommend(
        self, user: UserId, k: int = 10, *, history: Sequence[str] | None = None, query: str | None = None,
        exclude: Sequence[str] = (), filters: Mapping[str, Any] | None = None, explain: bool = False,
    ) -> Recommendations:
        """Rank items for one user.

        Args:
            user: the storefront's user id (``str``, or ``int`` taken as its decimal string).
            k: how many items (clamped to ``max_k`` and the catalog; fewer is a valid answer).
            history: item ids the user interacted with, oldest first; overrides the stored profile.
            query: optional search text, used when the bundle's model takes text.
            exclude: item ids never to return.
            filters: catalog filters, e.g. ``{"in_stock": True, "price": (None, 30)}``.
            explain: give each item a ``reason`` naming the history items that drove it.

        Raises:
            TypeError, ValueError: for programmer errors (bad ``k``, user id, filter or exclude).
        """
        return self.recommend_many(
            [user], k, histories=None if history is None else [history], query=query,
            exclude=exclude, filters=filters, explain=explain,
        )[0]

    def recommend_many(
        self, users: Sequence[UserId], k: int = 10, *, histories: Sequence[Sequence[str]] | None = None,
        query: str | None = None, exclude: Sequence[str] = (), filters: Mapping[str, Any] | None = None,
        explain: bool = False,
    ) -> list[Recommendations]:
        """Rank items for a batch of users with one model call and one kernel call."""
        ids = [check_user_id(u) for u in users]
        k = self._check_k(k)
        if histories is not None and len(histories) != len(ids):
            raise ValueError("histories must have one entry per user")
        excluded = self._check_exclude(exclude)
        canon = check_filters(filters)
        if query is not None and not isinstance(query, str):
            raise TypeError("query must be a string")
        self._counters.incr("requests", len(ids))
        state = self._state
        if self._closed:
            return [self._degraded(None, k, "closed", ClosedError("recommender is closed")) for _ in ids]
        if state is None:
            return [self._degraded(None, k, "not_ready", NotReadyError("no bundle loaded")) for _ in ids]
        try:
            return self._answer(state, ids, k, histories, excluded, canon, explain, query)
        except (TypeError, ValueError):
            raise
        except EdgerecError as exc:
            return [self._degraded(state, k, "model_error", exc) for _ in ids]
        except Exception as exc:
            return [self._degraded(state, k, "internal_error", exc) for _ in ids]

    def similar_items(
        self, item_id: str, k: int = 10, *, exclude: Sequence[str] = (), filters: Mapping[str, Any] | None = None,
    ) -> Recommendations:
        """"Customers also viewed": items whose vectors are closest to ``item_id``'s.

        An item unknown to the serving bundle gets the popularity ranking (``source="popular"``).
        """
        if not isinstance(item_id, str):
            raise TypeError(f"item_id must be a string, not {type(item_id).__name__}")
        k = self._check_k(k)
        excluded = self._check_exclude(exclude)
        canon = check_filters(filters)
        self._counters.incr("requests")
        state = self._state
        if self._closed or state is None:
            reason: DegradedReason = "closed" if self._closed else "not_ready"
            return self._degraded(None, k, reason, ClosedError("closed") if self._closed else NotReadyError("no bundle"))
        try:
            allow = state.filters.mask(canon)
            ex_rows = state.rows_of(excluded)
            row = state.bundle.catalog.row(item_id)
            if row is None:
                ranked = state.popular_for(k, ex_rows, allow)
            else:
                ranked = state.similar(row, k, exclude=ex_rows, allow=allow)
            source: Source = "similar" if ranked.personalized else "popular"
            return self._result(state, self._items(state, ranked, source, None))
        except (TypeError, ValueError):
            raise
        except Exception as exc:
            reason = "model_error" if isinstance(exc, EdgerecError) else "internal_error"
            return self._degraded(state, k, reason, exc)

    def _answer(
        self, state: ServingState, ids: list[str], k: int, histories: Sequence[Sequence[str]] | None,
        excluded: tuple[str, ...], canon: tuple[tuple[str, Any], ...], explain: bool, query: str | None,
    ) -> list[Recommendations]:
        allow = state.filters.mask(canon)
        query_tokens = state.query_tokens(query)
        ex_rows = state.rows_of(excluded)
        hist_rows, seen_rows, keys = [], [], []
        for i, user in enumerate(ids):
            if histories is not None:
                given = [str(h) for h in histories[i]]
                interest_items, seen_items = given, given
            else:
                events = self._profiles.get(user)
                interest_items = [e.item for e in events if e.type not in _NON_INTEREST_TYPES]
                seen_items = [e.item for e in events]
            rows = state.rows_of(interest_items)
            seen = state.rows_of(seen_items) if self.config.exclude_seen else np.empty(0, np.int64)
            hist_rows.append(rows)
            seen_rows.append(np.union1d(seen, ex_rows) if len(ex_rows) else seen)
            keys.append((state.model_version, hashlib.blake2b(rows.tobytes() + seen.tobytes(), digest_size=16)
                         .digest(), k, excluded, canon, explain, query if query_tokens is not None else None))
        answers: list[tuple[Recommendation, ...] | None] = [self._cache_get(key) for key in keys]
        todo = [i for i, a in enumerate(answers) if a is None]
        if todo:
            fetch = min(k + self.config.candidate_margin, len(state.bundle.catalog))
            ranked = state.rank([hist_rows[i] for i in todo], fetch,
                                excludes=[seen_rows[i] for i in todo], allow=allow, query=query_tokens)
            for i, r in zip(todo, ranked, strict=True):
                if r.nonfinite:
                    raise _NonFinite()
                r = Ranked(r.rows[:k], r.scores[:k], r.personalized)
                reasons = explain_items(state.bundle, hist_rows[i], r.rows.tolist()) if explain else None
                items = self._items(state, r, "personalized" if r.personalized else "popular", reasons)
                answers[i] = items
                self._cache_put(keys[i], items)
        return [self._result(state, a or ()) for a in answers]

    def _items(
        self, state: ServingState, ranked: Ranked, source: Source, reasons: list[str] | None
    ) -> tuple[Recommendation, ...]:
        ids = state.bundle.catalog.ids
        return tuple(
            Recommendation(ids[int(row)], float(score), source, reasons[j] if reasons else None)
            for j, (row, score) in enumerate(zip(ranked.rows, ranked.scores, strict=True))
        )

    def _result(self, state: ServingState | None, items: tuple[Recommendation, ...]) -> Recommendations:
        return Recommendations(items=items, model_version=None if state is None else state.model_version,
                               rec_id=uuid.uuid4().hex)

    def _degraded(
        self, state: ServingState | None, k: int, reason: DegradedReason, exc: BaseException
    ) -> Recommendations:
        if isinstance(exc, _NonFinite):
            reason = "nonfinite_scores"
        if self.config.strict:
            raise exc
        self._counters.incr("degraded")
        self._counters.incr(f"degraded_{reason}")
        _log.warn_once(logger, f"degraded:{reason}", "recommend degraded (%s): %s", reason, type(exc).__name__)
        items: tuple[Recommendation, ...] = ()
        if state is not None and reason != "closed":
            try:
                items = self._items(state, state.popular_for(k, np.empty(0, np.int64), None), "popular", None)
            except Exception:  # the popular list itself is broken: fall through to fallback_items
                items = ()
        if not items:
            items = tuple(Recommendation(i, 0.0, "fallback") for i in self.config.fallback_items[:k])
        return Recommendations(items=items, model_version=None if state is None else state.model_version,
                               rec_id=uuid.uuid4().hex, degraded=True, degraded_reason=reason)

    def _check_k(self, k: object) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, not {type(k).__name__}")
        if k <= 0:
            raise ValueError(f"k must be positive, not {k}")
        return min(int(k), self.config.max_k)

    def _check_exclude(self, exclude: Sequence[str]) -> tuple[str, ...]:
        if isinstance(exclude, str):
            raise TypeError("exclude must be a collection of item ids, not a single string")
        items = tuple(exclude)
        if len(items) > self.config.max_exclude:
            raise ValueError(f"exclude has {len(items)} ids, over max_exclude={self.config.max_exclude}")
        if not all(isinstance(i, str) for i in items):
            raise TypeError("exclude must hold item id strings")
        return items

    def _cache_get(self, key: _CacheKey) -> tuple[Recommendation, ...] | None:
        if self._cache is None:
            return None
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None:
            self._counters.incr("cache_hits")
        return hit

    def _cache_put(self, key: _CacheKey, items: tuple[Recommendation, ...]) -> None:
        if self._cache is not None:
            with self._cache_lock:
                self._cache[key] = items

    # -- feedback -------------------------------------------------------------------------------

    def feedback(self, event: EventLike) -> bool:
        """Record one interaction: the user's next ``recommend`` reflects it at once.

        Returns:
            ``True`` when accepted; ``False`` after ``close()`` (counted, warned once).

        Raises:
            EventError: the event is malformed or oversized (counted as refused).
        """
        if self._closed:
            self._counters.incr("feedback_refused_closed")
            if self.config.strict:
                raise ClosedError("feedback after close()")
            _log.warn_once(logger, "feedback:closed", "feedback refused: the recommender is closed")
            return False
        try:
            normalized = normalize_event(event, max_event_bytes=self.config.max_event_bytes, clock=self._clock)
        except EdgerecError:
            self._counters.incr("feedback_refused")
            raise
        self._profiles.append(normalized.user, ProfileEvent(normalized.item, normalized.type, normalized.ts))
        self._sync.record(normalized)
        self._counters.incr("feedback_accepted")
        return True

    def forget(self, user: UserId) -> None:
        """Erase everything held locally about ``user`` (and, with a hub, ask it to erase its copy)."""
        uid = check_user_id(user)
        self._profiles.forget(uid)
        self._sync.forget(uid)

    # -- lifecycle ------------------------------------------------------------------------------

    def status(self) -> Status:
        """Model version, item count and counters."""
        state = self._state
        return Status(
            model_version=None if state is None else state.model_version,
            n_items=0 if state is None else len(state.bundle.catalog),
            ready=state is not None, closed=self._closed, bundle_origin=self._origin,
            counters=self._counters.snapshot(), sync=self._sync.status(),
        )

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait up to ``timeout_s`` for pending feedback to reach the hub; return whether all of it did."""
        return bool(self._sync.flush(timeout_s))

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout_s`` and release resources. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._sync.close(timeout_s)
        self._profiles.close()

    def postfork(self) -> None:
        """Rebuild locks, sessions and threads in a forked child (called automatically after ``os.fork``)."""
        self._cache_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._counters.postfork()
        state = self._state
        if state is not None:
            state.model.postfork()
        for part in (self._profiles, self._sync):
            hook = getattr(part, "postfork", None)
            if hook is not None:
                hook()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self._state
        version = None if state is None else state.model_version
        return f"<Recommender model_version={version!r} closed={self._closed}>"


class _NonFinite(EdgerecError):
    """The model produced non-finite interest vectors for a user."""


def demo_bundle_path() -> Path:
    """Where the demo bundle shipped inside the package lives."""
    return Path(str(resources.files("edgerec_sdk") / "_demo"))
