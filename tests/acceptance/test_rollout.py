"""Rollout channels: ``edgerec channel set stable v2 --rollout 30`` splits users stickily between the
versions (the same split in every worker), every answer and every feedback event is labelled with the version
that served the user, and the hub's status compares the versions; promoting to 100 % moves everyone."""

from __future__ import annotations

from pathlib import Path

import httpx
from sync.helpers import ADMIN, EDGE

from edgerec_sdk.cli import main as edgerec

from .support import HISTORIES, bundle, connect, expected_answers, publish_http, running_hub

USERS = [f"shopper-{i}" for i in range(300)]


def test_rollout_split_is_sticky_labelled_and_compared(tmp_path: Path) -> None:
    v1, v2 = bundle(tmp_path, "v1", seed=1), bundle(tmp_path, "v2", seed=2)
    expected = {"v1": expected_answers(v1), "v2": expected_answers(v2)}
    with running_hub(tmp_path / "hub") as hub:
        publish_http(hub.url, v1)
        publish_http(hub.url, v2, channel=None)
        rec = connect(hub.url, tmp_path / "edge-a", start=False)
        other = connect(hub.url, tmp_path / "edge-b", start=False)  # another worker, or another host
        try:
            rec.poll_once()
            assert edgerec(["channel", "set", "stable", "v2", "--rollout", "30", "--hub", hub.url,
                            "--token", ADMIN]) == 0
            rec.poll_once()
            other.poll_once()
            sync = rec.status().sync
            assert sync["model_version"] == "v1" and sync["candidate_version"] == "v2"
            assert sync["rollout_percent"] == 30.0

            def assignment(r: object) -> dict[str, str]:
                out = {}
                for i, user in enumerate(USERS):
                    hist = HISTORIES[i % len(HISTORIES)]
                    ans = r.recommend(user, k=5, history=list(hist))  # type: ignore[attr-defined]
                    assert not ans.degraded and ans.item_ids == expected[ans.model_version][hist]
                    out[user] = ans.model_version
                return out

            first = assignment(rec)
            share = sum(v == "v2" for v in first.values()) / len(USERS)
            assert 0.2 < share < 0.4, share
            assert assignment(rec) == first  # sticky
            assert assignment(other) == first  # the same split in every worker
            batch = rec.recommend_many(USERS[:50], k=3)  # a batch mixes versions, each answer labelled
            assert [a.model_version for a in batch] == [first[u] for u in USERS[:50]]

            for user in USERS:
                rec.feedback({"user": user, "item": "item-000001", "type": "click"})
                if first[user] == "v2":
                    rec.feedback({"user": user, "item": "item-000002", "type": "purchase"})
            assert rec.flush(15.0)
            status = httpx.get(f"{hub.url}/v1/status", headers={"Authorization": f"Bearer {EDGE}"}).json()
            n_v2 = sum(v == "v2" for v in first.values())
            per = status["per_model_version"]
            assert per["v1"] == {"events": len(USERS) - n_v2, "clicks": len(USERS) - n_v2, "purchases": 0}
            assert per["v2"] == {"events": 2 * n_v2, "clicks": n_v2, "purchases": n_v2}
            assert status["channels"]["stable"] == {"version": "v1", "candidate": "v2", "rollout_percent": 30.0}

            assert edgerec(["channel", "set", "stable", "v2", "--hub", hub.url, "--token", ADMIN]) == 0
            rec.poll_once()
            sync = rec.status().sync
            assert sync["model_version"] == "v2" and sync["candidate_version"] is None
            assert set(assignment(rec).values()) == {"v2"}
        finally:
            rec.close(2.0)
            other.close(2.0)
