"""The chain after retrieval through the public API, on the demo bundle: rules per request and per recommender,
diversity per request and by default, and the plain path unchanged when no stage is active."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources

import numpy as np
import pytest

from edgerec_sdk import Recommender, RecommenderConfig, RuleError
from edgerec_sdk.rank.diversity import blended_similarity

HISTORY = ["B004756YJA"]


@pytest.fixture(scope="module")
def rec() -> Iterator[Recommender]:
    r = Recommender.demo(config=RecommenderConfig(cache_size=0, diversity=0.0))
    yield r
    r.close()


def _ids(rec: Recommender, **kw: object) -> list[str]:
    return rec.recommend("u", k=10, history=HISTORY, **kw).item_ids  # type: ignore[arg-type]


def test_plain_path_is_unchanged_by_inactive_stages(rec: Recommender) -> None:
    assert _ids(rec) == _ids(rec, diversity=0.0, rules=[])
    state = rec._state
    assert state is not None
    rows = state.rows_of(HISTORY)
    kernel = state.rank([rows], 10, excludes=[rows], allow=None)[0]
    assert _ids(rec) == [state.bundle.catalog.ids[int(r)] for r in kernel.rows]


def test_the_default_config_diversifies() -> None:
    with Recommender.demo(config=RecommenderConfig(cache_size=0)) as r:
        assert r.config.diversity > 0
        assert r.recommend("u", k=10, history=HISTORY).item_ids != \
            r.recommend("u", k=10, history=HISTORY, diversity=0.0).item_ids


def test_request_rules_pin_never_and_report_what_touched(rec: Recommender) -> None:
    plain = _ids(rec)
    far = list(rec.items)[-1]
    result = rec.recommend("u", k=10, history=HISTORY, rules=[
        {"id": "hero", "action": "pin", "item": far, "position": 2},
        {"id": "gone", "action": "never", "items": plain[:3]},
    ])
    ids = result.item_ids
    assert ids[2] == far
    assert not set(plain[:3]) & set(ids)
    assert len(ids) == 10
    assert set(result.rules) == {"hero", "gone"}


def test_set_rules_applies_to_every_answer_and_a_bad_set_keeps_the_previous(rec: Recommender) -> None:
    plain = _ids(rec)
    try:
        rec.set_rules({"version": "v1", "rules": [{"id": "drop", "action": "never", "item": plain[0]}]})
        assert plain[0] not in _ids(rec)
        with pytest.raises(RuleError, match="column"):
            rec.set_rules([{"action": "bury", "where": {"no_such_column": 1}}])
        with pytest.raises(RuleError, match="'never' rule"):
            rec.recommend("u", k=10, history=HISTORY, rules=[{"action": "pin", "item": plain[0], "position": 0}])
        assert plain[0] not in _ids(rec)  # the previous set still serves
    finally:
        rec.set_rules(None)
    assert _ids(rec) == plain


def test_diversity_lowers_the_similarity_it_penalises(rec: Recommender) -> None:
    # MMR penalises the blend of item-vector cosine and category cosine (diversity_vectors); the item-vector
    # cosine alone may go either way for one list, so the blend is what must fall. Greedy MMR does not promise
    # a lower mean for every list: where every candidate shares the category (a one-item history here) the
    # penalties tie and the list may stay as it is, so the mean over the shoppers must fall clearly and no list
    # may get more alike by more than rounding
    state = rec._state
    assert state is not None
    codes = state.category_codes()

    def ils(ids: list[str]) -> float:
        rows = state.bundle.catalog.rows(ids)
        sims = blended_similarity(state.bundle.vectors.rows_f32(rows), None if codes is None else codes[rows])
        return float((sims.sum() - np.trace(sims)) / (len(rows) * (len(rows) - 1)))

    shoppers = json.loads((resources.files("edgerec_sdk") / "_demo_histories.json").read_text())
    before, after = [], []
    for history in [HISTORY] + [s["history"] for s in shoppers]:
        plain = rec.recommend("u", k=10, history=history, diversity=0.0).item_ids
        mixed = rec.recommend("u", k=10, history=history, diversity=0.5).item_ids
        assert mixed[0] == plain[0]
        before.append(ils(list(plain)))
        after.append(ils(list(mixed)))
        assert after[-1] < before[-1] + 0.002, history
    assert np.mean(after) < 0.8 * np.mean(before), (before, after)


def test_config_default_diversity_and_category_cap() -> None:
    with Recommender.demo(config=RecommenderConfig(cache_size=0, diversity=0.5, max_per_category=2)) as r:
        ids = r.recommend("u", k=10, history=HISTORY).item_ids
        cats = r._state.bundle.catalog.columns["category"]  # type: ignore[union-attr]
        rows = r._state.bundle.catalog.rows(ids)  # type: ignore[union-attr]
        firsts = [cats[int(row)][0] for row in rows]
        assert max(firsts.count(c) for c in firsts) <= 2
        assert len(ids) == 10


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.3", True])
def test_bad_diversity_is_a_programmer_error(rec: Recommender, bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        rec.recommend("u", k=5, history=HISTORY, diversity=bad)  # type: ignore[arg-type]


def test_cached_answers_are_separate_per_stage_settings() -> None:
    with Recommender.demo() as r:
        plain = r.recommend("u", k=10, history=HISTORY).item_ids
        pinned = r.recommend("u", k=10, history=HISTORY,
                             rules=[{"action": "pin", "item": plain[5], "position": 0}]).item_ids
        assert pinned[0] == plain[5] and r.recommend("u", k=10, history=HISTORY).item_ids == plain
        assert np.all([isinstance(i, str) for i in pinned])
