"""Frozen, keyword-only configuration dataclasses holding plain values only.

Live collaborators (transports, clocks, stores) go to constructors, never here. Nothing here reads the
environment by itself: call :meth:`RecommenderConfig.from_env` or :meth:`RecommenderConfig.from_mapping`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from ._impl.configs import from_mapping
from .errors import ConfigError
from .profile.factory import parse_profile_spec

__all__ = ["DEFAULT_EVENT_WEIGHTS", "FeedbackConfig", "IndexConfig", "ProfileConfig", "RecommenderConfig"]

IndexBackend = Literal["auto", "numpy", "onnx", "ivf"]

DEFAULT_DIVERSITY = 0.35
"""The MMR knob's default (see ``RecommenderConfig.diversity``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexConfig:
    """How item vectors are scored."""

    backend: IndexBackend = "auto"
    """``numpy`` (exact, blocked), ``onnx`` (onnxruntime MatMul+TopK graph), ``ivf`` (the bundle's approximate
    index) or ``auto`` (IVF from ``ann_min_items`` when the bundle has one, else the fastest exact kernel)."""
    block_rows: int = 65536
    """Rows scored per block by the numpy kernel; bounds the temporary memory of one scan."""
    intra_op_threads: int = 1
    """onnxruntime threads per session; one suits a web worker, more is an explicit choice."""
    ann_min_items: int = 100_000
    """Catalog size from which ``auto`` serves the bundle's approximate (IVF) index, when it has one."""
    nprobe: int = 0
    """IVF lists probed per query; 0 keeps the value tuned when the bundle was written."""

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "numpy", "onnx", "ivf"):
            raise ConfigError(
                f"index backend must be 'auto', 'numpy', 'onnx' or 'ivf', not {self.backend!r}"
            )
        _positive("block_rows", self.block_rows)
        _positive("intra_op_threads", self.intra_op_threads)
        _positive("ann_min_items", self.ann_min_items)
        if isinstance(self.nprobe, bool) or not isinstance(self.nprobe, int) or self.nprobe < 0:
            raise ConfigError(f"nprobe must be an integer >= 0, not {self.nprobe!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileConfig:
    """The per-user recent history kept in process."""

    max_events_per_user: int = 200
    """Newest events kept per user (the model reads at most ``max_seq_len`` of them)."""
    max_users: int = 100_000
    """Users kept in memory (least recently used evicted first)."""

    def __post_init__(self) -> None:
        _positive("max_events_per_user", self.max_events_per_user)
        _positive("max_users", self.max_users)


DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType({
    "impression": 0.0, "view": 0.5, "click": 1.0, "cart": 2.0, "purchase": 3.0, "rating": 2.0,
    "dislike": -1.0, "hide": -1.0, "skip": 0.0,
})
"""How much each event type says about interest: > 0 feeds the interest model (heavier types are kept first
when a history is longer than the model reads), 0 is seen but not interest, < 0 is an explicit negative
(removed at once, its neighbours demoted). A ``rating`` at or below ``negative_rating_max`` is negative."""


@dataclass(frozen=True, kw_only=True, slots=True)
class FeedbackConfig:
    """What feedback does on the edge: type weights, explicit negatives, impression logging and rotation."""

    weights: Mapping[str, float] = dataclasses.field(default_factory=lambda: DEFAULT_EVENT_WEIGHTS)
    """Per event type weight (see :data:`DEFAULT_EVENT_WEIGHTS`); types left out keep their default."""
    negative_rating_max: float = 2.0
    """A rating at or below this many stars is a negative signal."""
    neighbour_demotion: float = 0.5
    """How far a negative pushes its nearest neighbours down: the user's interest vector loses this share of
    its length along the negative item's direction (0 turns demotion off; negatives are still removed)."""
    log_impressions: bool = False
    """Log every answer of ``recommend()`` as one impression row (per request: ``log_impressions=``)."""
    impression_max_items: int = 100
    """Items of one answer logged as shown (the top of a longer answer)."""
    remembered_answers: int = 10_000
    """Answers kept in process so ``impression(rec_id)`` can log a partly rendered one later."""
    rotation_free_shows: int = 3
    """Times an item may be shown to a user without a click before it starts rotating down."""
    rotation_step: float = 0.0
    """Slots an item moves down per show beyond ``rotation_free_shows``; 0 (the default) keeps rotation off, 1 is
    a gentle start. Opt-in: it changes what a user sees by how often it was shown, answers it reorders are not
    cached, and it costs about 35 us per request when active (docs/benchmarks.md)."""
    rotation_max_users: int = 100_000
    """Users whose impression counts are kept in process (least recently shown evicted first)."""

    def __post_init__(self) -> None:
        from .types import EVENT_TYPES

        if not isinstance(self.weights, Mapping):
            raise ConfigError("feedback weights must be a mapping of event type to number")
        unknown = sorted(set(self.weights) - EVENT_TYPES)
        if unknown:
            raise ConfigError(f"feedback weights name unknown event types: {', '.join(map(str, unknown))}")
        for name, weight in self.weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight != weight:
                raise ConfigError(f"feedback weight of {name!r} must be a number, not {weight!r}")
        if self.weights is not DEFAULT_EVENT_WEIGHTS:  # fill in the types left out; keep it read-only
            object.__setattr__(self, "weights", MappingProxyType({**DEFAULT_EVENT_WEIGHTS, **self.weights}))
        if not 1.0 <= self.negative_rating_max < 5.0:
            raise ConfigError("negative_rating_max must be within [1, 5)")
        if not 0.0 <= self.neighbour_demotion <= 4.0:
            raise ConfigError("neighbour_demotion must be within [0, 4]")
        if not self.rotation_step >= 0.0:
            raise ConfigError("rotation_step must be >= 0")
        _positive("impression_max_items", self.impression_max_items)
        _positive("remembered_answers", self.remembered_answers)
        _positive("rotation_max_users", self.rotation_max_users)
        if isinstance(self.rotation_free_shows, bool) or not isinstance(self.rotation_free_shows, int) \
                or self.rotation_free_shows < 0:
            raise ConfigError("rotation_free_shows must be an integer >= 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class RecommenderConfig:
    """Settings of a :class:`~edgerec_sdk.Recommender`."""

    strict: bool = False
    """Raise the underlying error instead of degrading (tests, CI, staging)."""
    max_k: int = 1000
    """Largest ``k`` served; larger requests are clamped."""
    max_exclude: int = 10_000
    """Most ids accepted in ``exclude=``; more is a ``ValueError``."""
    exclude_seen: bool = True
    """Leave out items already in the user's history."""
    cache_size: int = 10_000
    """Results kept in the in-process cache (0 turns it off)."""
    cache_ttl_s: float = 60.0
    """Seconds a cached result lives."""
    candidate_margin: int = 20
    """Extra candidates fetched beyond ``k`` before business rules run."""
    diversity: float = DEFAULT_DIVERSITY
    """The MMR knob in ``[0, 1]`` applied when a request does not give one: each pick maximises
    ``(1 - diversity) * relevance - diversity * similarity to the items already picked`` (0 turns it off)."""
    max_per_category: int | None = None
    """At most this many items of one (first-listed) category per answer; ``None`` turns the cap off."""
    rank_candidates: int = 100
    """Candidates retrieved for the ranking, diversity and rule stages to choose the ``k`` shown from."""
    use_ranker: bool = True
    """Reorder candidates by the bundle's CTR ranker when it has one (``False`` serves the retrieval order)."""
    max_event_bytes: int = 8192
    """Largest accepted feedback event, JSON-encoded."""
    warmup_timeout_s: float = 30.0
    """Deadline of the in-process warm-up of each new bundle (the model's first run); past it the run is
    cancelled and the bundle refused (``warmup_timeout``), the current one keeps serving."""
    exit_flush_timeout_s: float = 2.0
    """Longest wait for pending feedback at interpreter exit (the rows stay in the outbox after it)."""
    fallback_items: tuple[str, ...] = ()
    """Items served when no bundle is loaded at all."""
    query_weight: float = 0.5
    """How much a ``query=`` steers a user with history, in ``[0, 1]``: the ranking vector is
    ``(1 - w) * interest / |interest| + w * text / |text|`` (0: the query is ignored, 1: the query alone).
    A user without history is always ranked by the query alone (``source="query"``)."""
    query_match_weight: float = 1.0
    """How far a query's own words lift the items whose titles hold them, in ``[0, 10]``: an item's score gains
    this times the spread of the answer's candidate scores times the share of the query's IDF weight its title
    holds, so at 1 an item matching every word outranks every candidate matching none, and personal relevance
    orders items that match equally (0: the text tower's blend alone). Bundles with a text tower only."""
    profile_store: str = "memory"
    """Where user history lives: ``"memory"`` (this process), ``"sqlite:///PATH"`` (the workers of a host),
    ``"redis://HOST:PORT/DB"`` (many hosts); see :func:`edgerec_sdk.profile.make_profile_store`."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the interest model and the top-K graph run: ``"cpu"``, ``"cuda"`` (an error without a usable GPU)
    or ``"auto"`` (the GPU for catalogs from 100,000 items when onnxruntime-gpu finds one, else the CPU)."""
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
    """How item vectors are scored (:class:`IndexConfig`)."""
    profile: ProfileConfig = dataclasses.field(default_factory=ProfileConfig)
    """The per-user recent history kept in process (:class:`ProfileConfig`)."""
    feedback: FeedbackConfig = dataclasses.field(default_factory=FeedbackConfig)
    """Event type weights, explicit negatives, impression logging and rotation (:class:`FeedbackConfig`)."""

    def __post_init__(self) -> None:
        _positive("max_k", self.max_k)
        _positive("max_exclude", self.max_exclude)
        _positive("max_event_bytes", self.max_event_bytes)
        if self.cache_size < 0:
            raise ConfigError("cache_size must be >= 0")
        if not self.cache_ttl_s > 0:
            raise ConfigError("cache_ttl_s must be > 0")
        if isinstance(self.warmup_timeout_s, bool) or not isinstance(self.warmup_timeout_s, (int, float)) \
                or not self.warmup_timeout_s > 0:
            raise ConfigError(f"warmup_timeout_s must be a number > 0, not {self.warmup_timeout_s!r}")
        if self.candidate_margin < 0:
            raise ConfigError("candidate_margin must be >= 0")
        if isinstance(self.diversity, bool) or not isinstance(self.diversity, (int, float)) \
                or not 0.0 <= self.diversity <= 1.0:
            raise ConfigError(f"diversity must be a number in [0, 1], not {self.diversity!r}")
        if self.max_per_category is not None:
            _positive("max_per_category", self.max_per_category)
        _positive("rank_candidates", self.rank_candidates)
        if isinstance(self.query_weight, bool) or not 0.0 <= self.query_weight <= 1.0:
            raise ConfigError(f"query_weight must lie in [0, 1], not {self.query_weight!r}")
        if isinstance(self.query_match_weight, bool) or not 0.0 <= self.query_match_weight <= 10.0:
            raise ConfigError(f"query_match_weight must lie in [0, 10], not {self.query_match_weight!r}")
        if not isinstance(self.fallback_items, tuple):
            raise ConfigError("fallback_items must be a tuple of item ids")
        parse_profile_spec(self.profile_store)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', not {self.device!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RecommenderConfig:
        """Build from a plain mapping (Django ``settings.EDGEREC``, Flask ``app.config``).

        Nested ``index``, ``profile`` and ``feedback`` mappings become their dataclasses; unknown keys are an error.

        Example:
            >>> RecommenderConfig.from_mapping({"strict": True, "index": {"backend": "numpy"}}).strict
            True
        """
        return from_mapping(cls, data)

    @classmethod
    def from_env(cls, prefix: str = "EDGEREC_", environ: Mapping[str, str] | None = None) -> RecommenderConfig:
        """Build from environment variables such as ``EDGEREC_STRICT=1`` or ``EDGEREC_MAX_K=50``."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(prefix + f.name.upper())
            if raw is None or f.name in ("index", "profile", "feedback"):
                continue
            kwargs[f.name] = _parse_env(f.name, raw, f.type)
        return cls(**kwargs)


def _parse_env(name: str, raw: str, type_name: Any) -> Any:
    t = str(type_name)
    try:
        if t == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
        if t.startswith("tuple"):
            return tuple(x.strip() for x in raw.split(",") if x.strip())
    except ValueError as exc:
        raise ConfigError(f"environment setting for {name!r} is not a valid {t}") from exc
    return raw


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")
