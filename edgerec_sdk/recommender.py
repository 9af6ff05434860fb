# Over 500 lines: the one public facade (every Recommender method); the math, I/O and parsing it calls live elsewhere.
"""The facade: wiring, lifecycle and the fallback policy. No math, HTTP or file parsing here."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import orjson
from cachetools import TTLCache

from ._impl import log as _log
from ._impl.checks import check_diversity, check_exclude, check_k, check_query
from ._impl.counters import Counters
from ._impl.events import check_user_id, normalize_event
from ._impl.impressions import AnswerLog
from ._impl.items import ItemCatalog
from ._impl.latency import timed
from ._impl.serving import Ranked, ServingState
from ._impl.threads import at_exit_weakly, register_postfork
from ._impl.weights import user_rows
from .bundle import Bundle, load_bundle
from .config import RecommenderConfig
from .errors import ClosedError, EdgerecError, NonFiniteScoresError, NotReadyError, RuleError
from .profile import ProfileEvent, ProfileStore, make_profile_store
from .rank import RuleSet, check_filters, explain_items
from .rank.pipeline import Candidates, StageOptions, merge_rule_sets, run_stages
from .sync import EdgeSync, NullSync, Sync, SyncConfig
from .sync.artifacts import Artifact
from .sync.config import connect_sync_config
from .types import (
    DegradedReason,
    EventLike,
    FeedbackEvent,
    Recommendation,
    Recommendations,
    Source,
    Status,
    UserId,
)

__all__ = ["Recommender"]

logger = logging.getLogger(__name__)

_CacheKey = tuple[Any, ...]
_Answer = tuple[tuple[Recommendation, ...], tuple[str, ...]]
"""A cached answer: its items and the merchandising rules that touched it."""


def _flush_at_exit(rec: Recommender) -> None:
    """One bounded best-effort flush at interpreter exit."""
    if not rec._closed:
        rec._sync.flush(rec.config.exit_flush_timeout_s)


@dataclass(frozen=True, slots=True)
class _StageRequest:
    """What one call asks of the stages after retrieval (validated before any work)."""

    diversity: float
    rules: RuleSet | None


class Recommender:
    """Real-time recommendations in process, from a verified model bundle.

    Args:
        bundle: the bundle to serve (``None`` serves ``fallback_items`` until one is swapped in).
        config: settings; defaults suit a web worker.
        profile_store: where per-user history lives (in process by default).
        clock: wall clock in seconds, for event times (tests inject one).
        origin: a label of where the bundle came from, shown in ``status()``.
        sync: the hub connection feedback goes to and updates come from; :meth:`connect` builds an
            :class:`~edgerec_sdk.sync.EdgeSync`. Default :class:`~edgerec_sdk.sync.NullSync`: no hub, feedback only
            updates the local profile.

    Attributes:
        config: the settings in force.
        items: the serving catalog, read-only, following swaps: ``len(rec.items)``, ``"B0047" in rec.items``,
            iteration over the item ids, and ``rec.items["B0047"]`` or ``rec.items.get("B0047")`` for one
            item's metadata (a dict: title, category, brand, price ... as the bundle's catalog holds them).

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
        sync: Sync | None = None,
    ) -> None:
        self.config = config or RecommenderConfig()
        cfg = self.config
        self._profiles: ProfileStore = profile_store or make_profile_store(
            cfg.profile_store, max_events_per_user=cfg.profile.max_events_per_user, max_users=cfg.profile.max_users
        )
        self._clock = clock
        self._sync: Sync = sync or NullSync()
        self._candidate: tuple[ServingState, float] | None = None
        self._counters = Counters()
        self._cache: TTLCache[_CacheKey, _Answer] | None = (
            TTLCache(maxsize=cfg.cache_size, ttl=cfg.cache_ttl_s) if cfg.cache_size else None
        )
        self._cache_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closed = False
        self._state: ServingState | None = None
        self._origin: str | None = None
        self._rules: RuleSet | None = None
        self.items = ItemCatalog(self)
        self._answer_log = AnswerLog(cfg.feedback, clock)
        if bundle is not None:
            self.swap(bundle, origin=origin or "path")
        register_postfork(self.postfork)
        at_exit_weakly(self, _flush_at_exit)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_bundle(
        cls, path: str | Path, *, config: RecommenderConfig | None = None, signing_key: str | bytes | None = None,
        profile_store: ProfileStore | None = None,
    ) -> Recommender:
        """Load, verify and serve the bundle at ``path``.

        Args:
            path: the bundle directory.
            config: recommender settings.
            signing_key: when given, the bundle's ``signature`` must verify under it; ``str`` (taken as UTF-8, like
                ``edgerec publish --signing-key``) or ``bytes``.
            profile_store: where per-user history lives.

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

    @classmethod
    def connect(
        cls, hub_url: str | Sequence[str], *, token: str, user_id_key: str, state_dir: str | Path,
        channel: str = "stable", signing_key: str | bytes | None = None, allow_unsigned_bundles: bool = False,
        poll_interval_s: float = 30.0, config: RecommenderConfig | None = None,
        sync_config: SyncConfig | None = None, transport: Any = None, profile_store: ProfileStore | None = None,
        start: bool = True,
    ) -> Recommender:
        """Serve the bundles a hub publishes, and ship feedback to it durably.

        Returns at once: the last good bundle in ``state_dir`` serves immediately, even with the hub down;
        before any bundle exists answers are degraded with reason ``not_ready``. Threads start lazily.

        Args:
            hub_url: the hub's base URL (``https://``; ``http://`` only for loopback), or a list of replicas.
            token: the edge token (never logged).
            user_id_key: the HMAC key that pseudonymises user ids before they leave the process.
            state_dir: where the outbox and the last good bundle live (created ``0700``).
            channel: the hub channel to follow.
            signing_key: the HMAC key bundles are signed with (``edgerec publish --signing-key``); ``str``
                (taken as UTF-8) or ``bytes``.
            allow_unsigned_bundles: accept unsigned bundles (development only).
            poll_interval_s: seconds between manifest polls.
            config: recommender settings.
            sync_config: full sync settings; overrides the sync arguments above when given.
            transport: an ``httpx`` transport (tests hand in ``MockTransport`` or ``WSGITransport``).
            profile_store: where per-user history lives.
            start: start the updater thread now (the uploader starts on the first feedback).
        """
        sync_cfg = sync_config or connect_sync_config(
            hub_url, token=token, user_id_key=user_id_key, state_dir=state_dir, channel=channel,
            signing_key=signing_key, allow_unsigned_bundles=allow_unsigned_bundles, poll_interval_s=poll_interval_s,
        )
        rec = cls(None, config, profile_store=profile_store)
        sync = EdgeSync(sync_cfg, transport=transport, on_bundle=rec._swap_from_hub,
                        on_candidate=rec._set_candidate,
                        on_artifact={"catalogue": rec.items.apply_artifact, "rules": rec._rules_from_hub})
        rec._sync = sync
        sync.load_saved_artifacts()  # folded in before the bundle, so the serving state is built once
        last_good = sync.load_last_good()
        if last_good is not None:
            rec.swap(last_good, origin="disk")
        if start:
            sync.start()
        return rec

    def _swap_from_hub(self, bundle: Bundle) -> None:
        self.swap(bundle, origin="hub")

    def _rules_from_hub(self, artifact: Artifact) -> None:
        """A verified rule set published on the channel: applied whole, or refused (the old set serves on)."""
        try:
            doc = orjson.loads(artifact.body)
        except orjson.JSONDecodeError as exc:
            raise RuleError(f"rule set {artifact.seq} is not JSON") from exc
        self.set_rules(doc)

    def _set_candidate(self, bundle: Bundle | None, percent: float) -> None:
        if bundle is None or percent <= 0:
            self._candidate = None
            return
        state = ServingState(bundle, self.config, live=self.items.live)
        state.warm_up(timeout_s=self.config.warmup_timeout_s)
        self._candidate = (state, float(percent))

    def swap(self, bundle: Bundle, *, origin: str = "path") -> None:
        """Build and smoke-test a serving state for ``bundle`` (with the live catalogue laid over it), then
        replace the current one atomically."""
        with self.items._lock:  # a catalogue delta applied meanwhile is not lost
            state = ServingState(bundle, self.config, live=self.items.live)
            state.warm_up(timeout_s=self.config.warmup_timeout_s)
            previous = self._state
            self._state = state
            self._origin = origin
        if previous is not None and previous.model_version != state.model_version:
            logger.info("bundle swapped %s -> %s", previous.model_version, state.model_version)

    # -- request path ---------------------------------------------------------------------------

    def recommend(
        self, user: UserId, k: int = 10, *, history: Sequence[str] | None = None, query: str | None = None,
        exclude: Sequence[str] = (), filters: Mapping[str, Any] | None = None, explain: bool = False,
        diversity: float | None = None, rules: RuleSet | Mapping[str, Any] | Sequence[Any] | None = None,
        log_impressions: bool | None = None,
    ) -> Recommendations:
        """Rank items for one user.

        Args:
            user: the storefront's user id (``str``, or ``int`` taken as its decimal string).
            k: how many items (clamped to ``max_k`` and the catalog; fewer is a valid answer).
            history: item ids the user interacted with, oldest first; overrides the stored profile.
            query: search text blended with the user's interest (``config.query_weight``; alone, with
                ``source="query"``, for a user without history) when the bundle has a text tower.
            exclude: item ids never to return.
            filters: catalog filters, e.g. ``{"in_stock": True, "price": (None, 30)}``.
            explain: give each item a ``reason`` naming the history items that drove it.
            diversity: the MMR knob in ``[0, 1]`` for this request (``None``: ``config.diversity``; 0: off).
            rules: merchandising rules for this request (a :class:`~edgerec_sdk.rank.RuleSet` or its JSON
                form), applied after the rule set of :meth:`set_rules`; the answer's ``rules`` names those
                that touched it.
            log_impressions: log this answer as shown (one outbox row keyed by its ``rec_id``); ``None``
                follows ``config.feedback.log_impressions``.

        Raises:
            TypeError, ValueError: for programmer errors (bad ``k``, user id, filter, exclude, diversity);
                :class:`~edgerec_sdk.RuleError` (a ``ValueError``) for a malformed or conflicting rule set.
        """
        return self.recommend_many(
            [user], k, histories=None if history is None else [history], query=query,
            exclude=exclude, filters=filters, explain=explain, diversity=diversity, rules=rules,
            log_impressions=log_impressions,
        )[0]

    @timed
    def recommend_many(
        self, users: Sequence[UserId], k: int = 10, *, histories: Sequence[Sequence[str]] | None = None,
        query: str | None = None, exclude: Sequence[str] = (), filters: Mapping[str, Any] | None = None,
        explain: bool = False, diversity: float | None = None,
        rules: RuleSet | Mapping[str, Any] | Sequence[Any] | None = None, log_impressions: bool | None = None,
    ) -> list[Recommendations]:
        """Rank items for a batch of users with one model call and one kernel call."""
        ids = [check_user_id(u) for u in users]
        k = check_k(k, max_k=self.config.max_k)
        if histories is not None and len(histories) != len(ids):
            raise ValueError("histories must have one entry per user")
        excluded = check_exclude(exclude, max_exclude=self.config.max_exclude)
        canon, query = check_filters(filters), check_query(query)
        stages = _StageRequest(
            diversity=self.config.diversity if diversity is None else check_diversity(diversity),
            rules=None if rules is None else rules if isinstance(rules, RuleSet) else RuleSet.parse(rules),
        )
        self._counters.incr("requests", len(ids))
        if self._closed:
            return [self._degraded(None, k, "closed", ClosedError("recommender is closed")) for _ in ids]
        if self._state is None:
            return [self._degraded(None, k, "not_ready", NotReadyError("no bundle loaded")) for _ in ids]
        # Users of a rollout candidate form their own batch, so every answer comes from exactly one version.
        groups: dict[int, tuple[ServingState, list[int]]] = {}
        for i, user in enumerate(ids):
            st = self._state_for(user)
            if st is not None:
                groups.setdefault(id(st), (st, []))[1].append(i)
        results: list[Recommendations | None] = [None] * len(ids)
        for state, idx in groups.values():
            sub_hist = None if histories is None else [histories[i] for i in idx]
            try:
                answers = self._answer(state, [ids[i] for i in idx], k, sub_hist, excluded, canon, explain, query,
                                       stages)
            except (TypeError, ValueError):
                raise
            except EdgerecError as exc:
                answers = [self._degraded(state, k, "model_error", exc) for _ in idx]
            except Exception as exc:
                answers = [self._degraded(state, k, "internal_error", exc) for _ in idx]
            for i, answer in zip(idx, answers, strict=True):
                results[i] = answer
        done = [r if r is not None else self._degraded(None, k, "not_ready", NotReadyError("no bundle"))
                for r in results]
        if logged := self._answer_log.answered(ids, done, self._sync, log_impressions):
            self._counters.incr("impressions_logged", logged)
        return done

    def set_rules(self, rules: RuleSet | Mapping[str, Any] | Sequence[Any] | None) -> RuleSet | None:
        """Apply a merchandising rule set to every following answer (``None`` clears it).

        The set is validated against the serving catalogue's columns first; a malformed or conflicting one raises
        :class:`~edgerec_sdk.RuleError` and the previous set keeps serving. A hub-published rule set arrives the
        same way. Per-request ``rules=`` are applied after this set.
        """
        if rules is None:
            self._rules = None
            return None
        state = self._state
        columns = None if state is None else state.bundle.catalog.column_names
        parsed = RuleSet.parse(rules.to_json() if isinstance(rules, RuleSet) else rules, columns=columns)
        self._rules = parsed  # one reference swap: a request sees the old set or the new one, never a mix
        logger.info("merchandising rules %r applied (%d rules)", parsed.version, len(parsed))
        return parsed

    def _state_for(self, user: str) -> ServingState | None:
        """The serving state of ``user``: the rollout candidate for the users sticky-assigned to it."""
        candidate = self._candidate
        if candidate is not None and self._sync.in_rollout(user, candidate[1]):
            return candidate[0]
        return self._state

    @timed
    def similar_items(
        self, item_id: str, k: int = 10, *, exclude: Sequence[str] = (), filters: Mapping[str, Any] | None = None,
        query: str | None = None,
    ) -> Recommendations:
        """"Customers also viewed": items whose vectors are closest to ``item_id``'s.

        ``query`` is blended in as in :meth:`recommend`. An unknown item gets the query's ranking
        (``source="query"``) or else the popularity ranking (``source="popular"``).
        """
        if not isinstance(item_id, str):
            raise TypeError(f"item_id must be a string, not {type(item_id).__name__}")
        query = check_query(query)
        k = check_k(k, max_k=self.config.max_k)
        excluded = check_exclude(exclude, max_exclude=self.config.max_exclude)
        canon = check_filters(filters)
        self._counters.incr("requests")
        state = self._state
        if self._closed or state is None:
            reason: DegradedReason = "closed" if self._closed else "not_ready"
            return self._degraded(None, k, reason, ClosedError("closed") if self._closed else NotReadyError("no bundle"))
        try:
            allow = state.allow_mask(canon)
            ex_rows = state.rows_of(excluded)
            ranked = state.similar(state.bundle.catalog.row(item_id), k, exclude=ex_rows, allow=allow,
                                   query=state.query_tokens(query))
            source: Source = "query" if ranked.by_query else "similar" if ranked.personalized else "popular"
            return self._result(state, self._items(state, ranked, source, None))
        except (TypeError, ValueError):
            raise
        except Exception as exc:
            reason = "model_error" if isinstance(exc, EdgerecError) else "internal_error"
            return self._degraded(state, k, reason, exc)

    def _answer(
        self, state: ServingState, ids: list[str], k: int, histories: Sequence[Sequence[str]] | None,
        excluded: tuple[str, ...], canon: tuple[tuple[str, Any], ...], explain: bool, query: str | None,
        stages: _StageRequest,
    ) -> list[Recommendations]:
        allow = state.allow_mask(canon)
        query_tokens = state.query_tokens(query)
        rules = merge_rule_sets([self._rules, stages.rules])
        ex_rows = state.rows_of(excluded)
        fetch = k + self.config.candidate_margin
        if stages.diversity > 0 or self.config.max_per_category is not None or rules or state.ranker is not None:
            fetch = max(fetch, self.config.rank_candidates)  # the later stages choose among more than they show
        fetch = min(fetch, len(state.bundle.catalog))
        applied: tuple[str, ...] = ()
        if rules is not None:
            never = rules.never_rows(state.bundle.catalog)
            if len(never) > fetch - k:
                # Too many to drop after retrieval without running short: they leave inside the kernel, and
                # the answer names those rules as applied (whether or not an item of theirs would have ranked).
                ex_rows = np.union1d(ex_rows, never)
                applied = tuple(r.id for r in rules.rules if r.action == "never")
        stage_key = (stages.diversity, self.config.max_per_category, None if rules is None else rules.rules)
        fb = self.config.feedback
        hist_rows, seen_rows, neg_rows, keys, shown = [], [], [], [], []
        unavailable: set[int] = set()
        for i, user in enumerate(ids):
            events = None if histories is not None else self._read_profile(user)
            if histories is None and events is None:  # shared store down (fault D20): a cold user, flagged
                unavailable.add(i)
            rows, seen, negatives = user_rows(state, None if histories is None else histories[i], events or [], fb,
                                              exclude_seen=self.config.exclude_seen)
            hist_rows.append(rows)
            neg_rows.append(negatives)
            seen_rows.append(np.union1d(seen, ex_rows) if len(ex_rows) else seen)
            counts = self._answer_log.over_free_shows(user)
            shown.append(counts)
            # answers that impressions reorder are not cached: every show changes them
            keys.append(None if counts else (
                state.cache_tag, hashlib.blake2b(rows.tobytes() + seen.tobytes() + negatives.tobytes(),
                                                     digest_size=16).digest(),
                k, excluded, canon, explain, query if query_tokens is not None else None, stage_key))
        answers: list[_Answer | None] = [self._cache_get(key) for key in keys]
        todo = [i for i, a in enumerate(answers) if a is None]
        if todo:
            options = [StageOptions(k=k, diversity=stages.diversity, max_per_category=self.config.max_per_category,
                                    rules=rules, allow=allow, blocked=seen_rows[i]) for i in todo]
            ranked = state.rank([hist_rows[i] for i in todo], fetch,
                                excludes=[seen_rows[i] for i in todo], allow=allow, query=query_tokens,
                                negatives=[neg_rows[i] for i in todo], demotion=fb.neighbour_demotion)
            for i, r, opt in zip(todo, ranked, options, strict=True):
                if r.nonfinite:
                    raise NonFiniteScoresError("non-finite interest scores", model_version=state.model_version)
                if shown[i]:  # impression decay reorders the candidates before the later stages choose;
                    # a moved item takes the score of the slot it lands in, so the stages that read scores (the
                    # ranker's retrieval feature, MMR's relevance) see the decay instead of undoing it
                    order = self._answer_log.rotation_of_rows(r.rows, shown[i], state.bundle.catalog.row)
                    r = Ranked(r.rows[order], r.scores, r.personalized)
                # the ranker's feature tables cover the bundle's rows, not items a catalogue delta added
                ranker = None if state.ranker is None or not r.personalized or state.has_added(r.rows) else \
                    state.ranker.stage(hist_rows[i], now=self._clock(), explain=explain)
                # the popularity list and a no-history user's query answer (a search result) stay as they are
                if (not r.personalized or not len(hist_rows[i])) and opt.diversity > 0:
                    opt = dataclasses.replace(opt, diversity=0.0)
                tables = state.diversity_tables() if opt.diversity > 0 or opt.max_per_category is not None else None
                shaped = run_stages(state.bundle, Candidates(r.rows, r.scores, applied), opt, ranker, tables) \
                    if opt.active or ranker is not None else Candidates(r.rows[:k], r.scores[:k])
                r = Ranked(shaped.rows, shaped.scores, r.personalized, by_query=r.by_query)
                reasons = explain_items(state.bundle, hist_rows[i], r.rows.tolist()) if explain else None
                if reasons and shaped.features:  # the ranker's features that moved each item most
                    reasons = [f"{why}; ranked by {', '.join(shaped.features[int(row)])}"
                               if shaped.features.get(int(row)) else why for why, row in zip(reasons, r.rows, strict=True)]
                source: Source = "query" if r.by_query else "personalized" if r.personalized else "popular"
                items = self._items(state, r, source, reasons)
                answer = (items, shaped.touched)
                answers[i] = answer
                self._cache_put(keys[i], answer)
        results = [self._result(state, *(a or ((), ()))) for a in answers]
        for i in unavailable:
            results[i] = dataclasses.replace(results[i], degraded=True, degraded_reason="profile_unavailable")
        return results

    def _read_profile(self, user: str) -> list[ProfileEvent] | None:
        """The stored history, or ``None`` when the profile store failed (degrade, never raise; strict raises)."""
        try:
            return self._profiles.get(user)
        except Exception as exc:
            if self.config.strict:
                raise
            self._counters.incr("degraded")
            self._counters.incr("degraded_profile_unavailable")
            _log.warn_once(logger, "degraded:profile_unavailable", "recommend degraded (profile_unavailable): %s",
                           type(exc).__name__)
            return None

    def _items(
        self, state: ServingState, ranked: Ranked, source: Source, reasons: list[str] | None
    ) -> tuple[Recommendation, ...]:
        ids = state.bundle.catalog.ids
        return tuple(
            Recommendation(ids[int(row)], float(score), source, reasons[j] if reasons else None)
            for j, (row, score) in enumerate(zip(ranked.rows, ranked.scores, strict=True))
        )

    def _result(
        self, state: ServingState | None, items: tuple[Recommendation, ...], rules: tuple[str, ...] = ()
    ) -> Recommendations:
        return Recommendations(items=items, model_version=None if state is None else state.model_version,
                               rec_id=uuid.uuid4().hex, rules=rules)

    def _degraded(
        self, state: ServingState | None, k: int, reason: DegradedReason, exc: BaseException
    ) -> Recommendations:
        if isinstance(exc, NonFiniteScoresError):
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

    def _cache_get(self, key: _CacheKey | None) -> _Answer | None:
        if self._cache is None or key is None:
            return None
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None:
            self._counters.incr("cache_hits")
        return hit

    def _cache_put(self, key: _CacheKey | None, answer: _Answer) -> None:
        if self._cache is not None and key is not None:
            with self._cache_lock:
                self._cache[key] = answer

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
        try:
            if self._answer_log.observe(normalized):  # not an impression: it joins the user's history
                value = normalized.value if normalized.type == "rating" else None
                self._profiles.append(normalized.user,
                                      ProfileEvent(normalized.item, normalized.type, normalized.ts, value))
        except Exception as exc:  # shared store down (fault D20): the event still goes to the outbox
            self._counters.incr("profile_write_failed")
            if self.config.strict:
                self._ship(normalized)
                raise
            _log.warn_once(logger, "profile:write", "profile write failed (%s); event kept for the hub only",
                           type(exc).__name__)
        self._ship(normalized)
        self._counters.incr("feedback_accepted")
        return True

    def _ship(self, event: FeedbackEvent) -> None:
        """Hand the event to the hub sync (a no-op without a hub), labelled with the version serving the user."""
        state = self._state_for(event.user)
        outcome = self._sync.put({
            "user": event.user, "item": event.item, "type": event.type, "ts": event.ts, "value": event.value,
            "rec_id": event.rec_id, "event_id": event.event_id, "position": event.position,
            "model_version": None if state is None else state.model_version,
        })
        if outcome is not None and outcome.startswith("dropped"):
            self._counters.incr(f"feedback_{outcome}")

    def impression(self, rec_id: str, positions: Sequence[int] | None = None) -> bool:
        """Log that a recent answer of this process was shown, or only its 0-based slots ``positions`` (pages
        rendering part of an answer); ``False`` after ``close()``.

        Raises:
            EventError: ``rec_id`` is not an answer this process gave recently (``remembered_answers``), or a
                position is not a slot of that answer. Nothing is logged then.
        """
        answer, slots = self._answer_log.find(rec_id, positions)
        if self._closed:
            self._counters.incr("feedback_refused_closed")
            return False
        self._answer_log.log(self._sync, answer, slots, fresh_id=True)
        self._counters.incr("impressions_logged")
        return True

    def forget(self, user: UserId) -> None:
        """Erase everything held locally about ``user`` (and, with a hub, ask it to erase its copy)."""
        uid = check_user_id(user)
        self._answer_log.forget(uid)
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
            device=None if state is None else state.device, index=None if state is None else state.index.name,
            takes_query=state is not None and state.takes_query,
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

    def poll_once(self) -> float:
        """One model-update step without the updater thread (uWSGI without threads, tests); the next delay."""
        return float(self._sync.poll_once())

    def install_signal_handlers(self, timeout_s: float | None = None) -> bool:
        """Opt in: on SIGTERM, ``close()`` (flushing feedback for up to ``timeout_s``, default
        ``config.exit_flush_timeout_s``), then the previous handler or the default action. Main thread only.
        Servers with their own graceful shutdown (gunicorn, uWSGI, Celery) do not need it: atexit flushes."""
        from ._impl.signals import install_flush_on_signal

        limit = self.config.exit_flush_timeout_s if timeout_s is None else timeout_s
        return install_flush_on_signal(self.close, timeout_s=limit)

    def postfork(self) -> None:
        """Rebuild locks, sessions and threads in a forked child (called automatically after ``os.fork``)."""
        self._cache_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._counters.postfork()
        self._answer_log.postfork()
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


def demo_bundle_path() -> Path:
    """Where the demo bundle shipped inside the package lives."""
    return Path(str(resources.files("edgerec_sdk") / "_demo"))
