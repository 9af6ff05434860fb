"""Filters over any catalogue column: every form, AND, and clear errors checked against the column types."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgerec_sdk.bundle import Catalog
from edgerec_sdk.rank import FilterCompiler, check_filters

CAT = Catalog(["a", "b", "c", "d"], {
    "brand": ["acme", "zeta", None, "acme"],
    "price": [5.0, 15.0, 25.0, None],
    "in_stock": [True, False, None, True],
    "category": [["Nail"], ["Hair", "Nail"], None, ["Skin"]],
    "vegan": [True, False, None, False],
    "size_ml": [30, 50, 30, None],
})


def rows(filters: dict[str, Any]) -> list[str]:
    mask = FilterCompiler(CAT).mask(check_filters(filters))
    assert mask is not None
    return [CAT.ids[i] for i in np.flatnonzero(mask)]


@pytest.mark.parametrize(("filters", "want"), [
    ({"brand": "acme"}, ["a", "d"]),
    ({"brand": ["acme", "zeta"]}, ["a", "b", "d"]),
    ({"brand": {"in": ["zeta"]}}, ["b"]),
    ({"brand": None}, ["c"]),
    ({"brand": {"missing": False}}, ["a", "b", "d"]),
    ({"price": (10, None)}, ["b", "c"]),
    ({"price": [None, 15]}, ["a", "b"]),
    ({"price": {"gt": 5, "lt": 25}}, ["b"]),
    ({"price": (None, None)}, ["a", "b", "c"]),
    ({"size_ml": 30}, ["a", "c"]),
    ({"size_ml": [50, 99]}, ["b"]),
    ({"vegan": False}, ["b", "d"]),
    ({"in_stock": True}, ["a", "c", "d"]),  # missing counts as available
    ({"in_stock": False}, ["b"]),
    ({"category": "Nail"}, ["a", "b"]),
    ({"category": ["Skin", "Hair"]}, ["b", "d"]),
    ({"brand": "acme", "price": (None, 10), "in_stock": True}, ["a"]),
    ({"items": ["d", "b", "zz"]}, ["b", "d"]),
])
def test_filter_forms(filters: dict[str, Any], want: list[str]) -> None:
    assert rows(filters) == want


@pytest.mark.parametrize(("filters", "error", "match"), [
    ({"colour": "red"}, ValueError, "unknown filter 'colour'.*columns"),
    ({"brand": {"gte": 3}}, TypeError, "range needs a number column; 'brand' holds str"),
    ({"price": "cheap"}, TypeError, "column 'price' holds number, got str"),
    ({"vegan": "yes"}, TypeError, "column 'vegan' holds bool"),
    ({"size_ml": True}, TypeError, "holds number, got bool"),
    ({"category": 3}, TypeError, "holds list"),
])
def test_type_errors_name_the_column(filters: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        rows(filters)


@pytest.mark.parametrize(("filters", "error"), [
    ({"price": (20, 10)}, ValueError),
    ({"price": (float("nan"), None)}, ValueError),
    ({"brand": {"like": "ac%"}}, ValueError),
    ({"brand": {"missing": "yes"}}, TypeError),
    ({"brand": {"in": "acme"}}, TypeError),
    ({"brand": object()}, TypeError),
    ({"in_stock": "yes"}, TypeError),
    ({"items": "a"}, TypeError),
    ({3: "x"}, TypeError),
    (["brand"], TypeError),
])
def test_malformed_filters_fail_before_any_lookup(filters: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_filters(filters)


def test_canonical_form_is_order_independent_and_hashable() -> None:
    a = check_filters({"brand": ["zeta", "acme"], "price": (1, 2)})
    b = check_filters({"price": [1, 2], "brand": {"acme", "zeta"}})
    assert a == b and hash(a) == hash(b)
