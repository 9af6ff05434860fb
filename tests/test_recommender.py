from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgerec_sdk import (
    ClosedError,
    EventError,
    ModelIntegrityError,
    ModelLoadError,
    Recommender,
    RecommenderConfig,
)
from edgerec_sdk.testing import FakeHub, make_bundle, make_tiny_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "bundle", n_items=300, dim=16, seed=3)


@pytest.fixture()
def rec(bundle_dir: Path) -> Recommender:
    r = Recommender.from_bundle(bundle_dir, config=RecommenderConfig(strict=True))
    yield r
    r.close()


def ids(rec: Recommender) -> list[str]:
    return list(rec.items)


def test_recommend_ranks_k_items_with_metadata(rec: Recommender) -> None:
    history = ids(rec)[:5]
    result = rec.recommend("u1", k=10, history=history, diversity=0.0)
    assert len(result) == 10
    # scores descend in the retrieval order; diversity and rules reorder while each item keeps its own score
    assert result.scores == sorted(result.scores, reverse=True)
    assert all(r.source == "personalized" for r in result)
    assert result.model_version == rec.status().model_version
    assert not result.degraded
    assert not set(result.item_ids) & set(history)  # seen items excluded by default
    assert len(set(result.item_ids)) == 10
    assert result.rec_id != rec.recommend("u1", k=10, history=history).rec_id


def test_matches_brute_force_over_the_bundle(rec: Recommender, bundle_dir: Path) -> None:
    from edgerec_sdk.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    history = ids(rec)[10:14]
    rows = bundle.catalog.rows(history)
    state = rec._state
    assert state is not None
    interest = state.model.embed(state.model.pad([rows]))[0].astype(np.float64)
    scores = bundle.vectors.dense_f32().astype(np.float64) @ interest
    scores[rows] = -np.inf
    expected = [bundle.catalog.ids[i] for i in np.argsort(-scores)[:5]]
    got = rec.recommend("u", k=5, history=history).item_ids
    assert len(set(got) & set(expected)) >= 4  # int8 vectors: at most one near-tie swapped


def test_cold_user_gets_popular_and_is_not_degraded(rec: Recommender) -> None:
    result = rec.recommend("nobody", k=5)
    assert [r.source for r in result] == ["popular"] * 5
    assert not result.degraded
    assert result.item_ids == [rec._state.bundle.catalog.ids[r] for r in rec._state.popular[:5]]


def test_feedback_is_reflected_by_the_next_call(rec: Recommender) -> None:
    items = ids(rec)
    for item in items[:3]:
        assert rec.feedback({"user": "u2", "item": item, "type": "purchase"})
    before = rec.recommend("u2", k=10)
    assert before.items[0].source == "personalized"
    clicked = before.item_ids[0]
    rec.feedback({"user": "u2", "item": clicked, "type": "click", "rec_id": before.rec_id})
    after = rec.recommend("u2", k=10)
    assert clicked not in after.item_ids
    assert after.item_ids != before.item_ids


def test_history_overrides_profile_and_unknown_items_are_ignored(rec: Recommender) -> None:
    items = ids(rec)
    a = rec.recommend("u3", k=5, history=[items[7], "no-such-item"])
    b = rec.recommend("u3", k=5, history=[items[7]])
    assert a.item_ids == b.item_ids


@pytest.mark.parametrize("k", [0, -1])
def test_k_must_be_positive(rec: Recommender, k: int) -> None:
    with pytest.raises(ValueError):
        rec.recommend("u", k=k)


@pytest.mark.parametrize("k", [True, 2.0, "3", None])
def test_k_must_be_an_int(rec: Recommender, k: object) -> None:
    with pytest.raises(TypeError):
        rec.recommend("u", k=k)  # type: ignore[arg-type]


@pytest.mark.parametrize("user", [None, 1.5, b"u", True, ["u"]])
def test_user_must_be_str_or_int(rec: Recommender, user: object) -> None:
    with pytest.raises(TypeError):
        rec.recommend(user)  # type: ignore[arg-type]


@pytest.mark.parametrize("user", ["", "x" * 257])
def test_user_length_is_checked(rec: Recommender, user: str) -> None:
    with pytest.raises(ValueError):
        rec.recommend(user)


def test_int_user_is_its_decimal_string(rec: Recommender) -> None:
    item = ids(rec)[0]
    rec.feedback({"user": 42, "item": item, "type": "view"})
    assert item not in rec.recommend("42", k=20).item_ids


def test_k_larger_than_the_catalog_is_clamped(rec: Recommender) -> None:
    history = ids(rec)[:4]
    result = rec.recommend("u", k=1000, history=history)
    assert len(result) == 300 - 4


def test_unknown_filter_is_a_value_error(rec: Recommender) -> None:
    with pytest.raises(ValueError, match="unknown filter"):
        rec.recommend("u", filters={"colour": "red"})


def test_filters_are_applied_inside_the_kernel(rec: Recommender) -> None:
    history = ids(rec)[:3]
    categories = {c for i in ids(rec) for c in (rec.items[i].get("category") or [])}
    category = sorted(categories)[0]
    in_cat = [i for i in ids(rec) if category in (rec.items[i].get("category") or []) and i not in history]
    result = rec.recommend("u", k=len(in_cat) + 5, history=history, filters={"category": category})
    assert sorted(result.item_ids) == sorted(in_cat)  # all of them, not a post-filtered top-k
    priced = rec.recommend("u", k=50, history=history, filters={"price": (10, 20), "in_stock": True})
    for item in priced.item_ids:
        meta = rec.items[item]
        assert 10 <= meta["price"] <= 20 and meta.get("in_stock", True) is not False


def test_exclude_and_bad_exclude(rec: Recommender) -> None:
    history = ids(rec)[:3]
    first = rec.recommend("u", k=5, history=history).item_ids
    again = rec.recommend("u", k=5, history=history, exclude=first[:2])
    assert not set(first[:2]) & set(again.item_ids)
    with pytest.raises(TypeError):
        rec.recommend("u", exclude="abc")
    with pytest.raises(ValueError):
        Recommender.from_bundle(rec._state.bundle.path, config=RecommenderConfig(max_exclude=2)).recommend(
            "u", exclude=["a", "b", "c"])


def test_recommend_many_is_one_model_call_and_matches_single_calls(rec: Recommender, monkeypatch) -> None:
    items = ids(rec)
    histories = [items[0:3], items[5:9], [], items[20:21]]
    singles = [rec.recommend(f"m{i}", k=7, history=h).item_ids for i, h in enumerate(histories)]
    rec._cache.clear()
    state = rec._state
    calls = []
    original = state.model.embed
    monkeypatch.setattr(state.model, "embed", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    many = rec.recommend_many([f"m{i}" for i in range(4)], k=7, histories=histories)
    assert [m.item_ids for m in many] == singles
    assert len(calls) == 1
    assert many[2].items[0].source == "popular"


def test_similar_items(rec: Recommender) -> None:
    item = ids(rec)[11]
    result = rec.similar_items(item, k=5)
    assert len(result) == 5 and item not in result.item_ids
    assert all(r.source == "similar" for r in result)
    assert [r.source for r in rec.similar_items("unknown-item", k=3)] == ["popular"] * 3


def test_explain_names_history_items(rec: Recommender) -> None:
    history = ids(rec)[30:33]
    result = rec.recommend("u", k=3, history=history, explain=True)
    for r in result:
        assert r.reason and any(h in r.reason for h in history)


def test_items_view(rec: Recommender) -> None:
    first = ids(rec)[0]
    assert len(rec.items) == 300 and first in rec.items and "zzz" not in rec.items
    assert rec.items[first]["id"] == first
    with pytest.raises(KeyError):
        rec.items["zzz"]


def test_status_counts(rec: Recommender) -> None:
    rec.recommend("u", k=3)
    rec.feedback({"user": "u", "item": ids(rec)[0], "type": "click"})
    with pytest.raises(ValueError):
        rec.feedback({"user": "u", "item": ids(rec)[0], "type": "teleport"})
    status = rec.status()
    assert status.counters["requests"] >= 1
    assert status.counters["feedback_accepted"] == 1
    assert status.counters["feedback_refused"] == 1
    assert status.n_items == 300 and status.ready


def test_close_is_idempotent_and_degrades(bundle_dir: Path) -> None:
    rec = Recommender.from_bundle(bundle_dir)
    rec.close()
    rec.close()
    result = rec.recommend("u", k=3)
    assert result.degraded and result.degraded_reason == "closed"
    assert rec.feedback({"user": "u", "item": "x", "type": "click"}) is False
    assert rec.status().counters["feedback_refused_closed"] == 1
    strict = Recommender.from_bundle(bundle_dir, config=RecommenderConfig(strict=True))
    with strict:
        pass
    with pytest.raises(ClosedError):
        strict.recommend("u")


def test_model_failure_degrades_to_popular_or_raises_in_strict(bundle_dir: Path, monkeypatch) -> None:
    rec = Recommender.from_bundle(bundle_dir)
    history = list(rec.items)[:3]

    def boom(*args, **kwargs):
        raise ModelLoadError("interest.onnx: inference failed")

    monkeypatch.setattr(rec._state.model, "embed", boom)
    result = rec.recommend("u", k=4, history=history)
    assert result.degraded and result.degraded_reason == "model_error"
    assert len(result) == 4 and all(r.source == "popular" for r in result)
    assert rec.status().counters["degraded_model_error"] == 1
    strict = Recommender.from_bundle(bundle_dir, config=RecommenderConfig(strict=True))
    monkeypatch.setattr(strict._state.model, "embed", boom)
    with pytest.raises(ModelLoadError):
        strict.recommend("u", k=4, history=history)


def test_nonfinite_interest_degrades(bundle_dir: Path, monkeypatch) -> None:
    rec = Recommender.from_bundle(bundle_dir)
    monkeypatch.setattr(rec._state.model, "embed", lambda t, q=None: np.full((len(t), 16), np.nan, np.float32))
    result = rec.recommend("u", k=4, history=list(rec.items)[:2])
    assert result.degraded and result.degraded_reason == "nonfinite_scores" and len(result) == 4


def test_not_ready_serves_fallback_items() -> None:
    rec = Recommender(None, RecommenderConfig(fallback_items=("a", "b")))
    result = rec.recommend("u", k=5)
    assert result.degraded and result.degraded_reason == "not_ready"
    assert result.item_ids == ["a", "b"] and result.items[0].source == "fallback"


def test_swap_changes_version_and_never_serves_stale_cache(bundle_dir: Path, tmp_path: Path) -> None:
    from edgerec_sdk.bundle import load_bundle

    rec = Recommender.from_bundle(bundle_dir)
    history = list(rec.items)[:3]
    v1 = rec.recommend("u", k=5, history=history)
    other = make_bundle(tmp_path / "v2", n_items=300, dim=16, seed=4, model_version="v2")
    rec.swap(load_bundle(other))
    v2 = rec.recommend("u", k=5, history=history)
    assert v1.model_version != v2.model_version == "v2"
    assert rec.status().counters.get("cache_hits", 0) == 0


def test_demo_bundle_serves() -> None:
    with Recommender.demo() as rec:
        assert len(rec.items) > 1000
        first = next(iter(rec.items))
        result = rec.recommend("demo-user", k=5, history=[first])
        assert len(result) == 5 and not result.degraded


def test_query_on_a_model_without_text_is_ignored_with_a_warning(rec: Recommender, caplog) -> None:
    history = ids(rec)[:3]
    with caplog.at_level("WARNING", logger="edgerec_sdk"):
        with_query = rec.recommend("u", k=5, history=history, query="red nail polish")
    assert with_query.item_ids == rec.recommend("u", k=5, history=history).item_ids
    assert "takes no query text" in caplog.text
    with pytest.raises(TypeError):
        rec.recommend("u", query=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["sig-key", b"sig-key"])
def test_from_bundle_takes_a_str_or_bytes_signing_key(tmp_path: Path, key: str | bytes) -> None:
    path = make_tiny_bundle(tmp_path / "b", signing_key=b"sig-key")
    with Recommender.from_bundle(path, signing_key=key) as rec:
        assert rec.status().ready
    with pytest.raises(ModelIntegrityError):
        Recommender.from_bundle(path, signing_key=key[:3])  # another key of the same type


@pytest.mark.parametrize("key", ["sig-key", b"sig-key"])
def test_connect_takes_a_str_or_bytes_signing_key(tmp_path: Path, key: str | bytes) -> None:
    hub = FakeHub(token="edge", signing_key=b"sig-key")
    hub.publish(make_tiny_bundle(tmp_path / "v1", model_version="v1", signing_key=b"sig-key"))
    for signing_key, served in ((key[:3], None), (key, "v1")):  # a wrong key refuses the bundle
        rec = Recommender.connect("http://127.0.0.1:9", token="edge", user_id_key="uid",
                                  state_dir=tmp_path / f"state-{served}", signing_key=signing_key, transport=hub,
                                  start=False)
        try:
            rec.poll_once()
            assert rec.status().model_version == served
        finally:
            rec.close(timeout_s=0.5)


def test_model_instance_as_user_id_says_pass_pk(rec: Recommender) -> None:
    class User:  # what a Django view has at hand: request.user
        pk = 42

    with pytest.raises(TypeError, match=r"pass its primary key, e.g. user.pk"):
        rec.recommend(User(), k=3)  # type: ignore[arg-type]
    with pytest.raises(EventError, match=r"user.pk"):
        rec.feedback({"user": User(), "item": "x", "type": "click"})
