"""Impressions and the new feedback types through the real outbox: a hub outage loses nothing (faults G3, I5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerec_sdk import EventError
from edgerec_sdk.testing import FakeHub

from .conftest import RAW_USERS, balanced, connect, outbox

NEW_TYPES = ({"type": "view"}, {"type": "cart"}, {"type": "purchase", "position": 2}, {"type": "dislike"},
             {"type": "hide"}, {"type": "skip"}, {"type": "rating", "value": 1}, {"type": "impression"})


def test_impressions_and_every_event_type_survive_a_hub_outage(hub: FakeHub, tmp_path: Path) -> None:
    rec = connect(hub, tmp_path / "state")
    rec.poll_once()
    user = RAW_USERS[0]
    hub.down = True
    answers = [rec.recommend(user, k=5, log_impressions=True) for _ in range(3)]
    partial = rec.recommend(user, k=5)
    assert rec.impression(partial.rec_id, [0, 1]) is True
    for i, extra in enumerate(NEW_TYPES):
        rec.feedback({"user": user, "item": answers[0].item_ids[i % 5], "rec_id": answers[0].rec_id,
                      "event_id": f"ev-{i}", **extra})
    assert not rec.flush(0.5)  # the hub is down: everything waits in the outbox
    o = outbox(rec)
    assert o["pending"] == 4 + len(NEW_TYPES) and balanced(o)
    hub.down = False
    assert rec.flush(5.0)
    o = outbox(rec)
    assert o["delivered"] == 4 + len(NEW_TYPES) and o["pending"] == 0 and balanced(o)
    rows = {e["rec_id"]: e for e in hub.events.values() if e["type"] == "impression" and "items" in e}
    assert set(rows) == {a.rec_id for a in answers} | {partial.rec_id}
    first = rows[answers[0].rec_id]
    assert first["items"] == answers[0].item_ids and first["positions"] == [0, 1, 2, 3, 4]
    assert first["model_version"] == "v1" and first["user"] != user  # pseudonymised like every event
    assert rows[partial.rec_id]["items"] == partial.item_ids[:2]
    assert hub.events["ev-2"]["position"] == 2 and hub.events["ev-6"]["value"] == 1
    rec.close()


@pytest.mark.parametrize("bad", [
    {"type": "teleport"},
    {"type": "rating", "value": 0},
    {"type": "rating", "value": 6},
    {"type": "rating"},
    {"type": "impression", "rec_id": None},
    {"type": "click", "position": -1},
    {"type": "click", "position": 1.5},
    {"type": "click", "position": True},
    {"type": "click", "position": "3"},
    {"type": "click", "position": 10**6},
])
def test_bad_events_are_refused_and_nothing_is_written(hub: FakeHub, tmp_path: Path, bad: dict) -> None:
    rec = connect(hub, tmp_path / "state")
    rec.poll_once()
    event = {"user": RAW_USERS[0], "item": "item-000001", **bad}
    if event.get("rec_id", "") is None:
        del event["rec_id"]
    with pytest.raises(EventError):
        rec.feedback(event)
    answer = rec.recommend(RAW_USERS[0], k=3)
    for rec_id, positions in (("no-such-answer", None), (answer.rec_id, [3]), (answer.rec_id, [-1]),
                              (answer.rec_id, [])):
        with pytest.raises(EventError):
            rec.impression(rec_id, positions)
    rec.flush(1.0)
    assert outbox(rec)["accepted"] == 0 and hub.events == {}
    assert rec.status().counters.get("feedback_accepted", 0) == 0
    assert rec._profiles.get(RAW_USERS[0]) == []
    rec.close()
