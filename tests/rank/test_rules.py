"""Merchandising rules: validation refuses with the rule named; a property test over random rule sets checks
that pins sit at their positions, buried items never rise above un-buried ones, never-shown items never show."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerec_sdk.bundle import Catalog
from edgerec_sdk.errors import EdgerecError, RuleError
from edgerec_sdk.rank.rules import RuleSet, apply_rules

N = 40
IDS = [f"item-{i:02d}" for i in range(N)]
CATALOG = Catalog(
    IDS,
    {
        "brand": [("acme" if i % 3 == 0 else "zeta" if i % 3 == 1 else None) for i in range(N)],
        "price": [float(i) if i % 5 else None for i in range(N)],
        "in_stock": [i % 7 != 0 for i in range(N)],
        "category": [(("nail",) if i % 2 else ("hair", "care")) for i in range(N)],
    },
)


def _shape(raw: object, rows: list[int], scores: list[float], k: int = 10, **kw: object):  # type: ignore[no-untyped-def]
    rules = RuleSet.parse(raw, columns=CATALOG.column_names)
    return apply_rules(rules, CATALOG, np.asarray(rows, dtype=np.int64), np.asarray(scores), k, **kw)


def test_pin_boost_bury_never_always_together() -> None:
    rows = list(range(20))
    scores = [1.0 - i / 20 for i in rows]
    shaped = _shape({"version": "v1", "rules": [
        {"id": "hero", "action": "pin", "item": "item-30", "position": 0},
        {"id": "acme", "action": "boost", "where": {"brand": "acme"}, "factor": 3.0},
        {"id": "oos", "action": "bury", "where": {"in_stock": False}},
        {"id": "recall", "action": "never", "items": ["item-01", "item-03"]},
        {"id": "house", "action": "always", "items": ["item-35"]},
    ]}, rows, scores)
    ids = [IDS[r] for r in shaped.rows]
    # pinned first; acme (every third item) tripled; item-00 (out of stock) buried out of the top 10; item-01/03
    # never shown; the always-shown item-35 takes the last place.
    assert ids == ["item-30", "item-06", "item-09", "item-12", "item-02", "item-04", "item-05", "item-15",
                   "item-08", "item-35"]
    assert shaped.scores[1] == pytest.approx(2.1)
    assert shaped.touched == ("recall", "acme", "oos", "house", "hero")


def test_boost_factor_raises_negative_scores_too() -> None:
    shaped = _shape([{"action": "boost", "item": "item-02", "factor": 2.0}], [1, 2], [-1.0, -1.5])
    assert [IDS[r] for r in shaped.rows] == ["item-02", "item-01"]


def test_where_range_list_and_missing() -> None:
    shaped = _shape([{"id": "cheap", "action": "never", "where": {"price": {"max": 10}}},
                     {"id": "nobrand", "action": "never", "where": {"brand": None}}], list(range(30)), [0.0] * 30, k=30)
    for r in shaped.rows:
        price = CATALOG.columns["price"][r]
        assert price is None or price > 10
        assert CATALOG.columns["brand"][r] is not None


def test_pins_and_always_respect_request_filters_and_exclusions() -> None:
    allow = np.ones(N, dtype=np.bool_)
    allow[30] = False
    shaped = _shape([{"action": "pin", "item": "item-30", "position": 0},
                     {"action": "always", "items": ["item-31"]}], [1, 2, 3], [3.0, 2.0, 1.0],
                    allow=allow, blocked=np.array([31]))
    assert [IDS[r] for r in shaped.rows] == ["item-01", "item-02", "item-03"]
    assert shaped.touched == ()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ([{"action": "shove", "item": "item-01"}], "'action' must be one of"),
        ([{"action": "pin", "item": "item-01"}], "'position' must be an int"),
        ([{"action": "pin", "item": "item-01", "position": -1}], "'position' must be an int"),
        ([{"action": "pin", "item": "item-01", "position": True}], "'position' must be an int"),
        ([{"action": "boost", "item": "item-01"}], "needs 'factor'"),
        ([{"action": "boost", "item": "item-01", "factor": float("nan")}], "finite number"),
        ([{"action": "boost", "item": "item-01", "factor": -2}], "must be > 0"),
        ([{"action": "bury"}], "selects nothing"),
        ([{"action": "bury", "where": {"colour": "red"}}], "column(s) the catalogue lacks"),
        ([{"action": "bury", "where": {"price": {"min": 5, "max": 1}}}], "min > max"),
        ([{"action": "bury", "where": {"price": {"above": 5}}}], "takes 'min' and/or 'max'"),
        ([{"action": "never", "item": "item-01"}, {"action": "pin", "item": "item-01", "position": 2}], "'never' rule"),
        ([{"action": "bury", "item": "item-01"}, {"action": "always", "item": "item-01"}], "'bury' rule"),
        ([{"action": "pin", "item": "item-01", "position": 2}, {"action": "pin", "item": "item-02", "position": 2}],
         "already pinned"),
        ([{"id": "a", "action": "bury", "item": "x"}, {"id": "a", "action": "bury", "item": "y"}], "duplicate rule id"),
        ([{"action": "bury", "item": "item-01", "colour": "red"}], "unknown key"),
        ({"rules": [], "extra": 1}, "unknown key"),
        ("not rules", "must be a list"),
    ],
)
def test_malformed_or_conflicting_rule_sets_are_refused_with_the_reason(raw: object, needle: str) -> None:
    with pytest.raises(RuleError) as info:
        RuleSet.parse(raw, columns=CATALOG.column_names)
    assert needle in str(info.value)
    assert isinstance(info.value, EdgerecError)


_item = st.sampled_from(IDS)
_where = st.one_of(
    st.fixed_dictionaries({"brand": st.sampled_from(["acme", "zeta", None])}),
    st.fixed_dictionaries({"in_stock": st.booleans()}),
    st.fixed_dictionaries({"price": st.fixed_dictionaries({"min": st.integers(0, 20), "max": st.integers(20, 40)})}),
    st.fixed_dictionaries({"category": st.sampled_from(["nail", "hair", ["care", "nail"]])}),
)
_rule = st.one_of(
    st.fixed_dictionaries({"action": st.just("pin"), "item": _item, "position": st.integers(0, 12)}),
    st.fixed_dictionaries({"action": st.just("boost"), "where": _where,
                           "factor": st.floats(0.1, 10.0), "add": st.floats(-1.0, 1.0)}),
    st.fixed_dictionaries({"action": st.just("bury"), "where": _where}),
    st.fixed_dictionaries({"action": st.just("bury"), "items": st.lists(_item, min_size=1, max_size=4)}),
    st.fixed_dictionaries({"action": st.just("never"), "items": st.lists(_item, min_size=1, max_size=4)}),
    st.fixed_dictionaries({"action": st.just("always"), "items": st.lists(_item, min_size=1, max_size=2)}),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.lists(_rule, max_size=8),
    candidates=st.lists(st.integers(0, N - 1), min_size=0, max_size=30, unique=True),
    scores_seed=st.integers(0, 2**16),
    k=st.integers(1, 15),
)
def test_random_rule_sets_keep_their_promises(raw: list[dict[str, object]], candidates: list[int],
                                              scores_seed: int, k: int) -> None:
    try:
        rules = RuleSet.parse(raw, columns=CATALOG.column_names)
    except RuleError:
        return  # a conflicting random set is refused, which the table test above covers
    scores = np.random.default_rng(scores_seed).normal(size=len(candidates))
    shaped = apply_rules(rules, CATALOG, np.asarray(candidates, dtype=np.int64), scores, k)
    out = shaped.rows.tolist()
    assert len(out) == len(set(out)) <= k
    never = set(rules.never_rows(CATALOG).tolist())
    assert not never & set(out)
    pinned = {}
    for r in rules.rules:
        if r.action == "pin" and r.position is not None and r.position < k:
            row = CATALOG.row(r.items[0])
            if row is not None and row not in never:
                pinned[row] = r.position
    for row, pos in pinned.items():
        assert row in out
        if len(out) == k:  # a full answer: every pin at its exact position (a short one keeps their order)
            assert out[pos] == row
    always = {CATALOG.row(i) for r in rules.rules if r.action == "always" for i in r.items} - never
    buried_mask = np.zeros(N, dtype=np.bool_)
    for r in rules.rules:
        if r.action == "bury":
            buried_mask |= rules.mask(r, CATALOG)
    free = [row for row in out if row not in pinned]
    kinds = [bool(buried_mask[row]) and row not in always for row in free]
    assert kinds == sorted(kinds), "a buried item sits above an un-buried one"
    if len(always) + len(pinned) <= k:
        assert always <= set(out)


def test_a_rule_set_round_trips_through_its_json_form() -> None:
    raw = {"version": "v7", "rules": [
        {"id": "p", "action": "pin", "item": "item-01", "position": 3},
        {"id": "b", "action": "boost", "where": {"price": {"min": 2}, "brand": ["acme", None]}, "factor": 2.0},
        {"id": "n", "action": "never", "items": ["item-09"]},
    ]}
    rules = RuleSet.parse(raw, columns=CATALOG.column_names)
    again = RuleSet.parse(rules.to_json(), columns=CATALOG.column_names)
    assert again.rules == rules.rules and again.version == "v7"
