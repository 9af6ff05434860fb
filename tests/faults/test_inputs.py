"""Faults E through the connected facade: bad caller input raises at once, or is handled; nothing is lost."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from edgerec_sdk import EventError, Recommender
from edgerec_sdk.testing import FakeHub

from .conftest import RAW_USERS, balanced, click, connect, outbox


@pytest.fixture
def rec(hub: FakeHub, tmp_path: Path) -> Recommender:
    r = connect(hub, tmp_path / "state")
    r.poll_once()
    return r


def test_e04_user_ids_typed_bounded_and_opaque(rec: Recommender) -> None:
    for bad in (b"alice", None, 1.5, True):
        with pytest.raises(TypeError):
            rec.recommend(bad, k=3)  # type: ignore[arg-type]
    for bad in ("", "u" * 257):
        with pytest.raises(ValueError):
            rec.recommend(bad, k=3)
    assert rec.recommend(42, k=3).items == rec.recommend("42", k=3).items
    odd = "a\nb\x1b[31m\x00c"  # control characters are kept as given: ids are opaque
    assert rec.feedback(click(odd, 1)) and not rec.recommend(odd, k=3).degraded
    rec.close(0.5)


def test_e05_unknown_items_ignored_by_the_model_kept_for_the_hub(rec: Recommender, hub: FakeHub) -> None:
    r = rec.recommend(RAW_USERS[0], k=5, history=["no-such-item", "item-000003", "../../etc/passwd"])
    assert not r.degraded and len(r.items) == 5
    assert rec.feedback({"user": RAW_USERS[0], "item": "not-in-catalog", "type": "view", "event_id": "e-unknown"})
    assert rec.flush(5.0) and hub.events["e-unknown"]["item"] == "not-in-catalog"
    rec.close(0.5)


def test_e07_one_megabyte_event_and_nan_value_refused_and_counted(rec: Recommender) -> None:
    with pytest.raises(EventError):
        rec.feedback({"user": RAW_USERS[0], "item": "i" * 1_000_000, "type": "click"})
    with pytest.raises(EventError):
        rec.feedback({"user": RAW_USERS[0], "item": "item-000001", "type": "rating", "value": float("nan")})
    with pytest.raises(EventError):
        rec.feedback({"user": RAW_USERS[0], "item": "item-000001", "type": "teleport"})
    assert rec.status().counters["feedback_refused"] == 3
    o = outbox(rec)
    assert o["accepted"] == 0 and balanced(o)
    rec.close(0.5)


def test_e08_event_times(rec: Recommender, hub: FakeHub) -> None:
    naive = dt.datetime(2024, 5, 1, 12, 0, 0)
    assert rec.feedback(click(RAW_USERS[0], 1, ts=naive))
    assert rec.feedback(click(RAW_USERS[0], 2))  # missing: now
    with pytest.raises(EventError):
        rec.feedback(click(RAW_USERS[0], 3, ts=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)))
    assert rec.flush(5.0)
    assert hub.events["ev-ali-1"]["ts"] == naive.replace(tzinfo=dt.timezone.utc).timestamp()
    assert isinstance(hub.events["ev-ali-2"]["ts"], float)
    rec.close(0.5)


def test_e09_duplicate_event_id_counted_once_end_to_end(rec: Recommender, hub: FakeHub) -> None:
    assert rec.feedback(click(RAW_USERS[0], 1))
    assert rec.feedback(click(RAW_USERS[0], 1))  # the same event_id again
    assert rec.flush(5.0)
    assert rec.feedback(click(RAW_USERS[0], 1))  # and once more after delivery: the hub dedupes
    assert rec.flush(5.0)
    o = outbox(rec)
    assert list(hub.events) == ["ev-ali-1"] and o["duplicates"] == 1 and balanced(o)
    rec.close(0.5)


def test_e14_callback_that_raises_keeps_the_current_bundle(rec: Recommender, hub: FakeHub,
                                                           bundles: dict[str, Path]) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("user callback bug")

    rec._sync.updater.on_bundle = broken
    hub.publish(bundles["v2"])
    rec.poll_once()
    s = rec.status()
    assert s.model_version == "v1" and s.sync["last_update_error"]["reason"] == "swap_failed"
    assert not rec.recommend(RAW_USERS[0], k=3).degraded
    rec.close(0.5)
