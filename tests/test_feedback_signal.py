"""Feedback on the edge: negatives remove and demote at once, weights choose the history, impressions rotate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources

import numpy as np
import pytest

from edgerec_sdk import Recommender, RecommenderConfig
from edgerec_sdk._impl.weights import split_history
from edgerec_sdk.config import DEFAULT_DIVERSITY, DEFAULT_EVENT_WEIGHTS, FeedbackConfig
from edgerec_sdk.errors import ConfigError
from edgerec_sdk.profile import ProfileEvent
from edgerec_sdk.rank.rotation import ImpressionMemory, rotate, rotate_rows

SHOPPERS = json.loads((resources.files("edgerec_sdk") / "_demo_histories.json").read_text())


@pytest.fixture(scope="module")
def demo() -> Iterator[Recommender]:
    rec = Recommender.demo(config=RecommenderConfig(max_k=20_000, cache_size=0))
    yield rec
    rec.close()


def nearest(rec: Recommender, item: str, n: int = 10) -> list[str]:
    """The item's ``n`` nearest neighbours by cosine of the bundle's item vectors."""
    state = rec._state
    assert state is not None
    vecs = state.bundle.vectors.rows_f32(np.arange(len(state.bundle.catalog)))
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    row = state.bundle.catalog.row(item)
    cos = unit @ unit[row]
    cos[row] = -np.inf
    return [state.bundle.catalog.ids[int(i)] for i in np.argsort(-cos)[:n]]


def ranks(rec: Recommender, user: str, items: list[str]) -> np.ndarray:
    n = len(rec.items)
    pos = {item: i for i, item in enumerate(rec.recommend(user, k=n).item_ids)}
    return np.array([pos.get(i, n) for i in items])


@pytest.mark.parametrize("negative", [{"type": "dislike"}, {"type": "hide"}, {"type": "rating", "value": 1}])
def test_a_negative_removes_the_item_and_never_raises_its_neighbours(demo: Recommender, negative: dict) -> None:
    for shopper in SHOPPERS:
        user = f"{shopper['user']}-{negative['type']}"
        for item in shopper["history"]:
            demo.feedback({"user": user, "item": item, "type": "purchase"})
        target = demo.recommend(user, k=10).item_ids[3]
        neighbours = nearest(demo, target)
        before = ranks(demo, user, neighbours)
        demo.feedback({"user": user, "item": target, **negative})
        assert target not in demo.recommend(user, k=10).item_ids
        after = ranks(demo, user, neighbours)
        assert after.mean() > before.mean()  # demoted as a group
        assert np.all(after >= before), (before, after)  # and no single neighbour rises


def test_a_later_purchase_overrides_a_dislike(demo: Recommender) -> None:
    user, item = "override", SHOPPERS[0]["history"][0]
    demo.feedback({"user": user, "item": item, "type": "dislike"})
    demo.feedback({"user": user, "item": item, "type": "purchase"})
    signals = split_history(demo._profiles.get(user), DEFAULT_EVENT_WEIGHTS, max_len=50)
    assert signals.negatives == [] and signals.interest == [item]


def test_weights_keep_purchases_over_later_views_when_the_history_is_truncated() -> None:
    events = [ProfileEvent("bought", "purchase", 1.0), ProfileEvent("carted", "cart", 2.0)]
    events += [ProfileEvent(f"v{i}", "view", 3.0 + i) for i in range(5)]
    events += [ProfileEvent("meh", "rating", 9.0, 2.0), ProfileEvent("good", "rating", 10.0, 5.0),
               ProfileEvent("s", "skip", 11.0)]
    signals = split_history(events, DEFAULT_EVENT_WEIGHTS, max_len=4)
    assert signals.interest == ["bought", "carted", "v4", "good"]  # chronological, heaviest kept
    assert signals.negatives == ["meh"] and "s" in signals.seen
    assert split_history(events, DEFAULT_EVENT_WEIGHTS, max_len=100).interest[:3] == ["bought", "carted", "v0"]


@pytest.mark.parametrize("diversity", [0.0, DEFAULT_DIVERSITY])
def test_rotation_moves_items_shown_without_a_click_down_and_a_click_resets_them(diversity: float) -> None:
    # with diversity on, MMR reads the scores: rotation must lower them too, or MMR would pick the items back
    rec = Recommender.demo(config=RecommenderConfig(diversity=diversity, feedback=FeedbackConfig(
        rotation_free_shows=2, rotation_step=10.0)))
    user = "rotating"
    rec.feedback({"user": user, "item": SHOPPERS[0]["history"][0], "type": "purchase"})
    first = rec.recommend(user, k=5, log_impressions=True)
    for _ in range(3):
        rec.impression(first.rec_id)
    # every shown item is over its free shows by 2: each moves 20 slots, behind the next candidates
    later = rec.recommend(user, k=5)
    assert not set(later.item_ids) & set(first.item_ids)
    rec.feedback({"user": user, "item": first.item_ids[0], "type": "click", "rec_id": first.rec_id,
                  "position": 0})
    counts = rec._answer_log.shown.counts(user)
    assert first.item_ids[0] not in counts and counts[first.item_ids[1]] == 4  # the click starts it over
    off = Recommender.demo()  # rotation is opt-in: the default config never reorders by shows
    off.feedback({"user": user, "item": SHOPPERS[0]["history"][0], "type": "purchase"})
    shown = [off.recommend(user, k=5, log_impressions=True).item_ids for _ in range(6)]
    assert all(s == shown[0] for s in shown)  # rotation_step 0 (the default) keeps it off
    rec.close()
    off.close()


def test_rotate_and_impression_memory() -> None:
    assert rotate(["a", "b", "c"], {}, free_shows=1, step=1.0).tolist() == [0, 1, 2]
    assert rotate(["a", "b", "c"], {"a": 3}, free_shows=1, step=1.0).tolist() == [1, 0, 2]
    assert rotate(["a", "b", "c"], {"a": 3}, free_shows=1, step=2.0).tolist() == [1, 2, 0]
    memory = ImpressionMemory(max_users=2, max_items_per_user=2)
    memory.shown("u", ["a", "b", "c"])
    assert memory.counts("u") == {"b": 1, "c": 1}
    memory.acted("u", "b")
    assert memory.counts("u") == {"c": 1}
    memory.shown("v", ["a"])
    memory.shown("w", ["a"])
    assert memory.counts("u") == {}  # least recently shown user evicted


def test_feedback_config_checks_weights() -> None:
    assert FeedbackConfig(weights={"view": 0.1}).weights["purchase"] == DEFAULT_EVENT_WEIGHTS["purchase"]
    for bad in ({"teleport": 1.0}, {"view": "x"}, {"view": float("nan")}):
        with pytest.raises(ConfigError):
            FeedbackConfig(weights=bad)
    with pytest.raises(ConfigError):
        FeedbackConfig(negative_rating_max=5)
    assert RecommenderConfig.from_mapping({"feedback": {"log_impressions": True}}).feedback.log_impressions


def test_rotate_rows_matches_rotate_on_ids() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(0, 40))
        rows = rng.choice(1000, size=n, replace=False).astype(np.int64)
        shown = rng.choice(1000, size=int(rng.integers(0, 30)), replace=False)
        counts = {int(r): int(rng.integers(1, 9)) for r in shown} | {int(r): int(rng.integers(1, 9))
                                                                      for r in rows[: n // 3]}
        free, step = int(rng.integers(0, 4)), float(rng.choice([0.0, 0.5, 1.0, 3.0]))
        by_rows = rotate_rows(rows, {str(r): c for r, c in counts.items()}, int, free_shows=free, step=step)
        by_ids = rotate([str(r) for r in rows.tolist()], {str(r): c for r, c in counts.items()},
                        free_shows=free, step=step)
        assert by_rows.tolist() == by_ids.tolist()
