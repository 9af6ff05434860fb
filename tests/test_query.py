"""Query intent on a bundle with a text tower: blended for users with history, alone for users without,
and never an error for strange text."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerec_sdk import Recommender, RecommenderConfig
from edgerec_sdk.errors import ConfigError
from edgerec_sdk.testing import make_text_bundle, make_tiny_bundle


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_text_bundle(tmp_path_factory.mktemp("text") / "b", n_items=300)


def titles(rec: Recommender, ids: list[str]) -> list[str]:
    return [rec.items[i]["title"] for i in ids]


def test_a_user_without_history_is_ranked_by_the_query(text_bundle: Path) -> None:
    with Recommender.from_bundle(text_bundle) as rec:
        assert rec.status().takes_query
        out = rec.recommend("new-user", k=10, query="red lipstick")
        assert not out.degraded and {r.source for r in out.items} == {"query"}
        got = titles(rec, list(out.item_ids))
        assert all("red" in t or "lipstick" in t for t in got), got
        assert sum("red" in t and "lipstick" in t for t in got) >= 2, got
        plain = rec.recommend("new-user", k=10)
        assert {r.source for r in plain.items} == {"popular"}


def test_the_query_steers_a_user_with_history_by_the_configured_weight(text_bundle: Path) -> None:
    history = ["item-000001", "item-000002", "item-000003"]

    def shampoo_share(weight: float) -> float:
        with Recommender.from_bundle(text_bundle, config=RecommenderConfig(query_weight=weight)) as rec:
            out = rec.recommend("u", k=20, history=history, query="shampoo")
            assert {r.source for r in out.items} == {"personalized"}
            return sum("shampoo" in t for t in titles(rec, list(out.item_ids))) / 20

    assert shampoo_share(0.0) < shampoo_share(0.5) <= shampoo_share(1.0)
    assert shampoo_share(1.0) >= 0.5
    with pytest.raises(ConfigError):
        RecommenderConfig(query_weight=1.5)


@pytest.mark.parametrize("query", ["", "   ", "qqqq", "😀🎉🛍️", "口紅とシャンプー red", "x" * 10_000,
                                   "red " * 3000, "\x00\ud7ff", "DROP TABLE items; --"])
def test_strange_queries_never_fail(text_bundle: Path, query: str) -> None:
    with Recommender.from_bundle(text_bundle, config=RecommenderConfig(strict=True)) as rec:
        for history in ([], ["item-000001"]):
            out = rec.recommend("u", k=5, history=history, query=query)
            assert len(out.items) == 5 and not out.degraded
        assert len(rec.similar_items("item-000001", k=5, query=query).items) == 5


def test_a_non_string_query_is_a_type_error(text_bundle: Path) -> None:
    with Recommender.from_bundle(text_bundle) as rec:
        for bad in (b"red", 3, ["red"]):
            with pytest.raises(TypeError):
                rec.recommend("u", query=bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                rec.similar_items("item-000001", query=bad)  # type: ignore[arg-type]


def test_similar_items_takes_a_query(text_bundle: Path) -> None:
    with Recommender.from_bundle(text_bundle, config=RecommenderConfig(query_weight=0.7)) as rec:
        plain = rec.similar_items("item-000005", k=10)
        steered = rec.similar_items("item-000005", k=10, query="gold candle")
        gold = [sum("gold" in t for t in titles(rec, list(r.item_ids))) for r in (plain, steered)]
        assert gold[1] > gold[0]
        unknown = rec.similar_items("not-an-item", k=5, query="gold candle")
        assert {r.source for r in unknown.items} == {"query"}


def test_a_bundle_without_text_ignores_the_query(tmp_path: Path) -> None:
    with Recommender.from_bundle(make_tiny_bundle(tmp_path / "b")) as rec:
        assert not rec.status().takes_query
        a = rec.recommend("u", k=5, history=["item-000001"], query="red lipstick")
        b = rec.recommend("u", k=5, history=["item-000001"])
        assert a.item_ids == b.item_ids and not a.degraded


def test_title_matches_lead_a_query_answer_and_personal_relevance_orders_them(text_bundle: Path) -> None:
    history = ["item-000001", "item-000002", "item-000003"]
    with Recommender.from_bundle(text_bundle, config=RecommenderConfig(cache_size=0)) as rec, \
            Recommender.from_bundle(text_bundle, config=RecommenderConfig(cache_size=0,
                                                                          query_match_weight=0.0)) as blend_only:
        both = [i for i in rec.items if "red" in rec.items[i]["title"] and "lipstick" in rec.items[i]["title"]]
        assert len(both) >= 5
        for hist in ([], history):
            lifted = titles(rec, list(rec.recommend("u", k=len(both), history=hist, query="red lipstick").item_ids))
            plain = titles(blend_only, list(blend_only.recommend("u", k=len(both), history=hist,
                                                                 query="red lipstick").item_ids))
            assert "red" in lifted[0] and "lipstick" in lifted[0], lifted
            matched = sum("red" in t and "lipstick" in t for t in lifted)
            assert matched >= len(both) - 1 and matched > sum("red" in t and "lipstick" in t for t in plain)
        # among equal matches the user's interest decides: two users with different histories, same query
        other = ["item-000150", "item-000151", "item-000152"]
        a = rec.recommend("a", k=5, history=history, query="red lipstick").item_ids
        b = rec.recommend("b", k=5, history=other, query="red lipstick").item_ids
        assert a != b
        # query_weight 0 ignores the query for a user with history, its words included
        with Recommender.from_bundle(text_bundle, config=RecommenderConfig(cache_size=0, query_weight=0.0)) as off:
            assert off.recommend("u", k=5, history=history, query="red lipstick").item_ids == \
                off.recommend("u", k=5, history=history).item_ids
    with pytest.raises(ConfigError):
        RecommenderConfig(query_match_weight=-1.0)
