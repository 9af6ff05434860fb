"""The live catalogue in one process: upserts, stock changes and deletes take effect at once, whole or not
at all, and history items the model never saw never break a request."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerec_sdk import Recommender, RecommenderConfig
from edgerec_sdk.bundle.delta import make_delta
from edgerec_sdk.errors import CatalogueError
from edgerec_sdk.testing import make_text_bundle, make_tiny_bundle

NEW = {"id": "NEW-1", "title": "green mascara deluxe", "price": 12.5, "in_stock": True, "colour": "green"}


@pytest.fixture
def rec(tmp_path: Path) -> Recommender:
    r = Recommender.from_bundle(make_text_bundle(tmp_path / "b", n_items=200),
                                config=RecommenderConfig(strict=True))
    yield r
    r.close()


def test_an_upserted_item_is_served_from_its_text_at_once(rec: Recommender) -> None:
    assert "NEW-1" not in rec.recommend("u", k=5, query="green mascara").item_ids
    rec.items.upsert([NEW])
    assert rec.recommend("u", k=5, query="green mascara").item_ids[0] == "NEW-1"
    assert rec.items["NEW-1"]["price"] == 12.5 and len(rec.items) == 201
    # a history holding only the new item, or mixing it with known ones: personalised, no error
    for history in (["NEW-1"], ["item-000001", "NEW-1"], ["NEW-1", "never-heard-of"]):
        out = rec.recommend("u", k=5, history=history)
        assert not out.degraded and {r.source for r in out.items} == {"personalized"}
        assert "NEW-1" not in out.item_ids
    assert not rec.similar_items("NEW-1", k=3).degraded


def test_out_of_stock_hides_and_delete_removes(rec: Recommender) -> None:
    rec.items.upsert([NEW])
    rec.items.upsert([{"id": "NEW-1", "in_stock": False}])
    assert "NEW-1" not in rec.recommend("u", k=50, query="green mascara").item_ids
    assert rec.items["NEW-1"]["title"] == "green mascara deluxe"  # a merge: other columns kept
    rec.items.upsert([{"id": "NEW-1", "in_stock": True}])
    assert "NEW-1" in rec.recommend("u", k=5, query="green mascara").item_ids
    rec.items.delete(["NEW-1", "item-000007"])
    for out in (rec.recommend("u", k=200, query="green mascara"), rec.recommend("cold", k=200),
                rec.similar_items("item-000001", k=200)):
        assert "NEW-1" not in out.item_ids and "item-000007" not in out.item_ids
    assert "item-000007" not in rec.items and rec.items.get("item-000007") is None


def test_new_columns_are_filterable(rec: Recommender) -> None:
    rec.items.upsert([NEW, {"id": "NEW-2", "title": "blue mascara", "colour": "blue", "weight_g": 30}])
    got = rec.recommend("u", k=10, query="mascara", filters={"colour": "green"})
    assert got.item_ids == ["NEW-1"]
    assert rec.recommend("u", k=10, filters={"weight_g": {"gte": 10}}).item_ids == ["NEW-2"]
    missing = rec.recommend("u", k=300, filters={"colour": None})
    assert "NEW-1" not in missing.item_ids and len(missing.items) == 200


def test_a_refused_delta_changes_nothing(rec: Recommender) -> None:
    rec.items.upsert([NEW])
    before = rec.recommend("u", k=10, query="green mascara").item_ids
    with pytest.raises(CatalogueError) as clash:
        rec.items.upsert([{"id": "X", "colour": 3}])  # colour was declared str
    assert clash.value.reason == "column_type"
    with pytest.raises(CatalogueError) as clash:
        rec.items.upsert([{"id": "X", "price": "cheap"}], column_types={"price": "str"})
    assert "X" not in rec.items and rec.recommend("u", k=10, query="green mascara").item_ids == before
    with pytest.raises(CatalogueError):
        rec.items.apply_delta(make_delta([{"id": "Y", "title": "y"}, {"id": "Y", "title": "again"}]))
    assert "Y" not in rec.items


def test_a_bundle_without_text_hides_new_items_but_serves_their_histories(tmp_path: Path) -> None:
    with Recommender.from_bundle(make_tiny_bundle(tmp_path / "b"), config=RecommenderConfig(strict=True)) as rec:
        rec.items.upsert([{"id": "NEW-1", "title": "whatever"}])
        assert "NEW-1" in rec.items
        assert "NEW-1" not in rec.recommend("u", k=50).item_ids
        out = rec.recommend("u", k=5, history=["item-000001", "NEW-1"])
        assert not out.degraded and len(out.items) == 5


def test_a_new_bundle_keeps_the_live_catalogue(tmp_path: Path) -> None:
    with Recommender.from_bundle(make_text_bundle(tmp_path / "a", n_items=100)) as rec:
        rec.items.upsert([NEW])
        rec.swap(__import__("edgerec_sdk").bundle.load_bundle(make_text_bundle(tmp_path / "b", n_items=120, seed=1)))
        assert len(rec.items) == 121 and rec.recommend("u", k=3, query="green mascara").item_ids[0] == "NEW-1"


def test_a_type_clash_refuses_the_delta_but_never_the_next_bundle(tmp_path: Path) -> None:
    import dataclasses

    from edgerec_sdk.bundle import Catalog, load_bundle

    base = load_bundle(make_text_bundle(tmp_path / "b", n_items=50))
    cat = base.catalog
    sized = dataclasses.replace(base, catalog=Catalog(cat.ids, {**cat.columns, "size": [30] * len(cat)}))
    with Recommender(sized, RecommenderConfig(strict=True)) as rec:
        with pytest.raises(CatalogueError) as clash:
            rec.items.upsert([{"id": "item-000001", "size": "large"}])  # size is a number column here
        assert clash.value.reason == "column_type" and rec.items["item-000001"]["id"] == "item-000001"
    with Recommender(base, RecommenderConfig(strict=True)) as rec:
        rec.items.upsert([NEW, {"id": "item-000001", "size": "large"}])
        rec.swap(sized)  # the delta's "size" values clash with the new bundle's column: left out, bundle served
        assert rec.status().ready and rec.recommend("u", k=3, query="green mascara").item_ids[0] == "NEW-1"
        assert rec.recommend("u", k=5, filters={"size": 30}).items
