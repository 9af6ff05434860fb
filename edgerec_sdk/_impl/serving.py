"""One bundle made ready to serve: model, index, filters and the batched ranking math.

A :class:`ServingState` is immutable once built; a model swap (or a catalogue delta) builds a new one off the
request path and replaces one reference in the recommender, so a request that read the old reference
finishes on it.

Queries: with a text tower (a ``text`` model output and a tokenizer) the query's text vector ``t`` and the
user's interest ``u`` are blended as ``(1 - w) * u / |u| + w * t / |t|`` (``w`` = ``query_weight``); a user
without history is ranked by ``t`` alone. A query that keeps no known token is no query. Models that take a
``query`` input without a text output get the tokens fed in, as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..bundle import Bundle
from ..config import RecommenderConfig
from ..errors import ModelLoadError, SmokeFailure
from ..index import VectorIndex, make_index, providers_for, resolve_device
from ..index._common import in_sorted
from ..rank import FilterCompiler
from ..rank.diversity import DiversityTables
from ..rank.features import RankFeatures
from ..rank.ranker import Ranker
from . import log as _log
from .lexical import LexicalIndex
from .livecat import LiveCatalogue, overlay
from .model import InterestModel, last_item_history, table_mismatch, warmup_history
from .text import encode_query

__all__ = ["Ranked", "ServingState"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ranked:
    """Rows and scores for one user, best first."""

    rows: NDArray[np.int64]
    scores: NDArray[np.float32]
    personalized: bool
    nonfinite: bool = False
    by_query: bool = False  #: ranked by the query alone (a user without history)


class ServingState:
    """Everything one bundle version needs on the request path."""

    model: InterestModel
    _tokenizer: Any

    def __init__(
        self, bundle: Bundle, config: RecommenderConfig, *, live: LiveCatalogue | None = None,
        reuse: ServingState | None = None, strict_catalogue: bool = False,
    ) -> None:
        manifest = bundle.manifest
        self.base = bundle
        self.model_version = manifest.model_version
        self.model_rows = manifest.n_items  # rows the model's own table holds; later rows came from deltas
        self.query_weight = config.query_weight
        self.query_match_weight = config.query_match_weight
        # One device for both sessions, so the interest vector makes one round trip at most.
        self.device = resolve_device(config.device, len(bundle.catalog))
        if reuse is not None and reuse.base is bundle:  # a catalogue delta: same model, same session
            self.model, self._tokenizer = reuse.model, reuse._tokenizer
        else:
            self.model = InterestModel.for_bundle(
                bundle, intra_op_threads=config.index.intra_op_threads, providers=providers_for(self.device)
            )
            self._tokenizer = None
            if self.model.query_input is not None and bundle.tokenizer_json is not None:
                from tokenizers import Tokenizer

                self._tokenizer = Tokenizer.from_str(bundle.tokenizer_json)
        self.hidden: NDArray[np.bool_] | None = None
        self.catalogue_counts: dict[str, int] = {}
        if live is not None and not live.empty:
            made = overlay(bundle, live, self.model, self._tokenizer, strict=strict_catalogue)
            bundle, self.hidden, self.catalogue_counts = made.bundle, made.hidden, dict(made.counts)
        self.bundle = bundle
        self.visible = None if self.hidden is None else ~self.hidden  # the kernel mask of a filterless request
        #: what cached answers are keyed on: the model and the catalogue deltas they were ranked with
        self.cache_tag = (self.model_version, self.catalogue_counts.get("deltas", 0))
        self.index: VectorIndex = make_index(
            bundle.vectors.values,
            bundle.vectors.scales,
            backend=config.index.backend,
            block_rows=config.index.block_rows,
            intra_op_threads=config.index.intra_op_threads,
            ivf=bundle.ivf,
            ann_min_items=config.index.ann_min_items,
            nprobe=config.index.nprobe or None,
            device=self.device,
        )
        self.filters = FilterCompiler(bundle.catalog)
        # The bundle's CTR ranker, when it has one and the config uses it (the rank stage of the pipeline).
        self.ranker = Ranker(bundle, intra_op_threads=config.index.intra_op_threads) \
            if bundle.ranker_bytes is not None and config.use_ranker else None
        self._rank_tables: RankFeatures | None = None if self.ranker is None else self.ranker.tables
        self._tables_lock = threading.Lock()
        self._diversity: DiversityTables | None = None
        self._lexical: LexicalIndex | None = None
        popular = np.asarray(bundle.popular, dtype=np.int64)
        self.popular = popular
        self.popular_scores = np.linspace(1.0, 0.0, num=max(len(popular), 1), dtype=np.float32)[: len(popular)]

    def warm_up(self, timeout_s: float | None = None) -> None:
        """Create the session and run one smoke query so the first request pays nothing extra.

        Also runs the catalogue's last item, so a model whose item table is smaller than the catalogue is
        refused here rather than failing for every user with such an item. With ``timeout_s``, the model
        runs on a helper thread and a run past the deadline is cancelled and refused (``warmup_timeout``):
        the bundle is untrusted until it has served.
        """
        n_items = self.bundle.manifest.n_items
        interest = self._warm_run(self.model.pad([warmup_history(len(self.popular))]), timeout_s)
        try:
            self._warm_run(self.model.pad([last_item_history(n_items)]), timeout_s)
        except SmokeFailure:
            raise
        except ModelLoadError as exc:
            raise SmokeFailure(table_mismatch(n_items, exc), reason="contract",
                               model_version=self.model_version) from exc
        if not np.all(np.isfinite(interest)):
            raise ModelLoadError("interest.onnx: smoke test produced non-finite interest vectors",
                                 model_version=self.model_version)
        self.index.search(interest, 1)
        if self.ranker is not None:
            self.ranker.load()

    def _warm_run(self, tokens: NDArray[np.int64], timeout_s: float | None) -> NDArray[np.float32]:
        if timeout_s is None:
            self.model.load()
            return self.model.embed(tokens)
        out = self.model.embed_bounded([tokens], timeout_s=timeout_s)
        if out is None:
            raise SmokeFailure(f"interest.onnx: warm-up passed its {timeout_s:g} s deadline "
                               "(RecommenderConfig.warmup_timeout_s); cancelled", reason="warmup_timeout",
                               model_version=self.model_version)
        return out[0]

    def category_codes(self) -> NDArray[np.int64] | None:
        """The catalogue's category ids for diversity (built on first use: a Python pass over the catalogue)."""
        tables = self._rank_tables
        if tables is None:
            with self._tables_lock:
                if self._rank_tables is None:
                    self._rank_tables = RankFeatures(self.bundle)
                tables = self._rank_tables
        return tables.cat_codes if tables.n_cats else None

    def diversity_tables(self) -> DiversityTables:
        """Inverse norms and category weights for MMR (built on first use, with :meth:`category_codes`)."""
        tables = self._diversity
        if tables is None:
            codes = self.category_codes()
            with self._tables_lock:
                if self._diversity is None:
                    self._diversity = DiversityTables.build(self.bundle.vectors, codes)
                tables = self._diversity
        return tables

    @property
    def takes_query(self) -> bool:
        """Whether the model reads query text (the bundle ships a tokenizer for its text tower)."""
        return self._tokenizer is not None

    def query_tokens(self, query: str | None) -> NDArray[np.int64] | None:
        """Token ids of ``query`` padded to the model's query length; ``None`` when the model takes no text
        or nothing in the query is in its vocabulary (unknown words, emoji, an empty string)."""
        if query is None:
            return None
        if self._tokenizer is None:
            _log.warn_once(logger, "query-ignored", "this bundle's model takes no query text; query ignored")
            return None
        out = encode_query(self._tokenizer, query, max_tokens=self.model.query_max_len)
        return out if out.any() else None

    def lexical(self) -> LexicalIndex | None:
        """The catalogue titles' word-piece index (built on first query; ``None`` without titles or tokenizer)."""
        titles = self.bundle.catalog.columns.get("title")
        if self._tokenizer is None or titles is None or self.query_match_weight <= 0:
            return None
        index = self._lexical
        if index is None:
            with self._tables_lock:
                if self._lexical is None:
                    self._lexical = LexicalIndex(self._tokenizer, titles)
                index = self._lexical
        return index

    def text_vector(self, tokens: NDArray[np.int64] | None) -> NDArray[np.float32] | None:
        """The unit text vector of query tokens, ``None`` without a text tower or when it is zero."""
        if tokens is None or self.model.text_output is None:
            return None
        t = self.model.embed_text(tokens)[0]
        norm = float(np.linalg.norm(t))
        return (t / norm).astype(np.float32) if norm > 0 and np.isfinite(norm) else None

    def allow_mask(self, canon: tuple[tuple[str, Any], ...]) -> NDArray[np.bool_] | None:
        """The filters' mask with the rows the live catalogue hides left out."""
        allow = self.filters.mask(canon)
        if self.visible is None:
            return allow
        return self.visible if allow is None else allow & self.visible

    def has_added(self, rows: NDArray[np.int64]) -> bool:
        """Whether ``rows`` hold an item a catalogue delta added (beyond the bundle's own tables)."""
        return bool(len(rows)) and int(rows.max()) >= self.model_rows

    def rows_of(self, item_ids: Sequence[str]) -> NDArray[np.int64]:
        """Rows of the known ids, in order; unknown ids are ignored."""
        return self.bundle.catalog.rows(item_ids)

    def popular_for(
        self, k: int, exclude: NDArray[np.int64], allow: NDArray[np.bool_] | None
    ) -> Ranked:
        """The popularity ranking with exclusions and filters applied (hidden rows always left out)."""
        if allow is None:
            allow = self.visible
        keep = np.ones(len(self.popular), dtype=np.bool_)
        if len(exclude):
            keep &= ~np.isin(self.popular, exclude)
        if allow is not None:
            keep &= allow[self.popular]
        idx = np.flatnonzero(keep)[:k]
        return Ranked(rows=self.popular[idx], scores=self.popular_scores[idx], personalized=False)

    def rank(
        self,
        histories: Sequence[NDArray[np.int64]],
        k: int,
        *,
        excludes: Sequence[NDArray[np.int64]],
        allow: NDArray[np.bool_] | None,
        query: NDArray[np.int64] | None = None,
        negatives: Sequence[NDArray[np.int64]] | None = None,
        demotion: float = 0.0,
    ) -> list[Ranked]:
        """Rank for a batch: one model call and one kernel call for all users with history.

        A query (one row of token ids) applies to every user of the batch. ``negatives`` (rows per user)
        demote their nearest neighbours: see :meth:`demote`.
        """
        out: list[Ranked | None] = [None] * len(histories)
        text = self.text_vector(query)
        legacy_query = query if text is None and self.model.text_output is None else None
        model_hist = [h[h < self.model_rows] for h in histories]
        warm = [i for i, h in enumerate(histories) if len(h)]
        users = warm + ([i for i in range(len(histories)) if not len(histories[i])] if text is not None else [])
        if users:
            interest = np.zeros((len(users), self.model.dim), dtype=np.float32)
            by_model = [j for j, i in enumerate(users) if len(model_hist[i])]
            if by_model:
                tokens = self.model.pad([model_hist[users[j]] for j in by_model])
                q = None if legacy_query is None else np.repeat(legacy_query, len(by_model), axis=0)
                interest[by_model] = self.model.embed(tokens, q)
            for j, i in enumerate(users):
                if len(histories[i]) and not len(model_hist[i]):  # only items added after the build
                    interest[j] = self.bundle.vectors.rows_f32(histories[i][-self.model.max_seq_len :]).mean(0)
            finite = np.all(np.isfinite(interest), axis=1)
            interest = np.where(finite[:, None], interest, 0.0).astype(np.float32)
            if negatives is not None and demotion > 0:
                for j, i in enumerate(users):
                    if len(negatives[i]) and len(histories[i]):
                        interest[j] = self.demote(interest[j], negatives[i], demotion)
            matches = None
            if text is not None:
                interest = self._blend(interest, text, [len(histories[i]) > 0 for i in users])
                lexical = self.lexical()
                matches = None if lexical is None or query is None else lexical.match(query[0])
            result = self.index.search(interest, k, exclude=[excludes[i] for i in users], allow=allow)
            for j, i in enumerate(users):
                count = int(result.counts[j])
                if not finite[j] or count == 0:
                    ranked = self.popular_for(k, excludes[i], allow)
                    out[i] = Ranked(ranked.rows, ranked.scores, personalized=False, nonfinite=not finite[j])
                    continue
                rows, scores = result.rows[j, :count], result.scores[j, :count]
                # a query_weight of 0 ignores the query for a user with history, its words included
                if matches is not None and len(matches[0]) and (self.query_weight > 0 or not len(histories[i])):
                    rows, scores = self._lift_matches(rows, scores, interest[j], matches, k, excludes[i], allow)
                out[i] = Ranked(rows, scores, personalized=True, by_query=not len(histories[i]))
        for i in range(len(histories)):
            if out[i] is None:
                out[i] = self.popular_for(k, excludes[i], allow)
        return [r for r in out if r is not None]

    def _lift_matches(
        self, rows: NDArray[np.int64], scores: NDArray[np.float32], vector: NDArray[np.float32],
        matches: tuple[NDArray[np.int64], NDArray[np.float32]], k: int, exclude: NDArray[np.int64],
        allow: NDArray[np.bool_] | None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The kernel's candidates plus the best title matches, each lifted by its match share (see
        ``RecommenderConfig.query_match_weight``), best first, at most ``k``."""
        m_rows, m_share = matches
        take = max(2 * k, 100)
        if len(m_rows) > take:  # the best matches only; ties in share keep the lower rows
            best = np.sort(np.argsort(-m_share, kind="stable")[:take])  # kept in row order
            m_rows, m_share = m_rows[best], m_share[best]
        mask = allow if allow is not None else self.visible
        ok = np.ones(len(m_rows), dtype=np.bool_) if mask is None else mask[m_rows].copy()
        if len(exclude):
            ok &= ~in_sorted(np.sort(exclude), m_rows)
        ok &= ~in_sorted(np.sort(rows), m_rows)
        extra = m_rows[ok]
        extra_scores = (self.bundle.vectors.rows_f32(extra) @ vector).astype(np.float32) if len(extra) else \
            np.zeros(0, np.float32)
        all_rows = np.concatenate([rows, extra])
        semantic = np.concatenate([scores, extra_scores]).astype(np.float64)
        finite = np.isfinite(semantic)
        if not finite.any():
            return rows, scores
        spread = float(semantic[finite].max() - semantic[finite].min()) or 1.0
        at = np.minimum(np.searchsorted(m_rows, all_rows), len(m_rows) - 1)  # m_rows ascend (see match())
        share = np.where(m_rows[at] == all_rows, m_share[at], 0.0)
        lifted = semantic + self.query_match_weight * spread * share
        order = np.argsort(-lifted, kind="stable")[:k]
        return all_rows[order], lifted[order].astype(np.float32)

    def demote(self, interest: NDArray[np.float32], negatives: NDArray[np.int64], strength: float
               ) -> NDArray[np.float32]:
        """The interest vector with ``strength`` of its length taken away along the mean negative direction.

        Every item's score moves by ``-strength * |interest| * <item, mean unit negative>``: the negative
        items' nearest neighbours (the largest inner products) lose the most, and an item is raised only if it
        points away from every negative, so a negative never lifts its neighbours.
        """
        vecs = self.bundle.vectors.rows_f32(negatives).astype(np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        unit = (vecs / np.where(norms > 0, norms, 1.0)).mean(axis=0)
        length = float(np.linalg.norm(unit))
        if length == 0.0:
            return interest
        scale = strength * float(np.linalg.norm(interest)) / length
        out: NDArray[np.float32] = (interest - scale * unit).astype(np.float32)
        return out

    def _blend(self, interest: NDArray[np.float32], text: NDArray[np.float32], warm: list[bool]) -> NDArray[np.float32]:
        """``(1 - w) * u / |u| + w * t`` for users with history, ``t`` alone for those without."""
        norms = np.linalg.norm(interest, axis=1, keepdims=True)
        unit = np.divide(interest, norms, out=np.zeros_like(interest), where=norms > 0)
        w = np.where(np.asarray(warm)[:, None] & (norms > 0), self.query_weight, 1.0).astype(np.float32)
        blended: NDArray[np.float32] = ((1.0 - w) * unit + w * text[None, :]).astype(np.float32)
        return blended

    def similar(
        self, row: int | None, k: int, *, exclude: NDArray[np.int64], allow: NDArray[np.bool_] | None,
        query: NDArray[np.int64] | None = None,
    ) -> Ranked:
        """Items whose vectors are closest to ``row``'s (the item itself left out), blended with a query's
        text vector when given; for an unknown item (``row`` None) the query's ranking, else popularity."""
        if row is None:
            return self.rank([np.empty(0, np.int64)], k, excludes=[exclude], allow=allow, query=query)[0]
        text = self.text_vector(query)
        vec = self.bundle.vectors.rows_f32(np.array([row], dtype=np.int64))
        norm = float(np.linalg.norm(vec))
        if norm > 0:
            vec = vec / norm
        if text is not None:
            vec = self._blend(vec.astype(np.float32), text, [True])
        result = self.index.search(vec.astype(np.float32), k, exclude=[np.append(exclude, row)], allow=allow)
        count = int(result.counts[0])
        return Ranked(result.rows[0, :count], result.scores[0, :count], personalized=True)
