from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest

from edgerec_sdk import EventError, FeedbackEvent
from edgerec_sdk._impl.events import normalize_event

NOW = 1_700_000_000.0


def norm(event, max_bytes=8192):
    return normalize_event(event, max_event_bytes=max_bytes, clock=lambda: NOW)


def test_minimal_event_gets_time_and_id() -> None:
    e = norm({"user": "u", "item": "i", "type": "click"})
    assert e.ts == NOW and len(e.event_id) == 32 and e.value is None


def test_event_ids_are_kept() -> None:
    assert norm({"user": "u", "item": "i", "type": "view", "event_id": "e1"}).event_id == "e1"


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"item": "i", "type": "click"}, "user"),
        ({"user": "u", "type": "click"}, "item"),
        ({"user": "u", "item": "i"}, "type"),
        ({"user": "u", "item": "i", "type": "teleport"}, "type"),
        ({"user": "u", "item": "i", "type": "click", "color": 1}, "color"),
        ({"user": 1.5, "item": "i", "type": "click"}, "user"),
        ({"user": "u", "item": "i" * 300, "type": "click"}, "item"),
        ({"user": "u", "item": "i", "type": "click", "value": float("nan")}, "value"),
        ({"user": "u", "item": "i", "type": "click", "ts": NOW + 2 * 86400}, "ts"),
    ],
)
def test_e06_malformed_events_name_the_field(event, field) -> None:
    with pytest.raises(EventError) as info:
        norm(event)
    assert info.value.field == field


def test_e07_oversized_event() -> None:
    with pytest.raises(EventError, match="over the"):
        norm({"user": "u" * 200, "item": "i" * 200, "type": "click", "rec_id": "r" * 200}, max_bytes=300)


def test_e13_values_are_normalized() -> None:
    e = norm({"user": "u", "item": "i", "type": "rating", "value": Decimal("4.5"),
              "ts": dt.datetime(2023, 1, 1)})
    assert e.value == 4.5 and e.ts == dt.datetime(2023, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    assert norm({"user": "u", "item": "i", "type": "rating", "value": np.float32(2.0)}).value == 2.0


def test_feedback_event_objects_are_accepted() -> None:
    e = norm(FeedbackEvent(user="u", item="i", type="cart", ts=NOW - 5))
    assert e.ts == NOW - 5 and e.event_id


def test_non_mapping_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        norm(["u", "i", "click"])
