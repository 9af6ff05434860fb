"""Merchandising rule sets published on a channel: signed, applied whole on every edge, refused with a reason
(the previous set serving on) when malformed, conflicting with the catalogue, or unsigned."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from edgerec_sdk.cli import main as edgerec
from edgerec_sdk.hub import HubApp, serve_in_thread

from .support import ADMIN, EDGE, KEY, bundle, connect, publish_http


def _publish(url: str, path: Path, doc: object, *key: str) -> int:
    path.write_text(json.dumps(doc))
    return edgerec(["rules", "publish", str(path), "--channel", "stable", "--hub", url, "--token", ADMIN, *key])


def test_rule_sets_on_a_channel_apply_on_every_edge_and_bad_ones_are_refused(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:
    hub = serve_in_thread(HubApp(tmp_path / "hub", admin_tokens=[ADMIN], edge_tokens=[EDGE]))
    edges = [connect(hub.url, tmp_path / f"edge{i}", start=False) for i in range(2)]
    key = ["--signing-key", KEY.decode()]
    try:
        publish_http(hub.url, bundle(tmp_path, "v1", seed=1))
        for rec in edges:
            rec.poll_once()
        plain = edges[0].recommend("u", k=5, history=["item-000001"]).item_ids
        hero = "item-000017" if "item-000017" not in plain else "item-000018"
        good = {"version": "sale-1", "rules": [{"id": "hero", "action": "pin", "item": hero, "position": 0},
                                               {"id": "gone", "action": "never", "item": plain[0]}]}
        assert _publish(hub.url, tmp_path / "good.json", good, *key) == 0
        for rec in edges:
            rec.poll_once()
            answer = rec.recommend("u", k=5, history=["item-000001"])
            assert answer.item_ids[0] == hero and plain[0] not in answer.item_ids
            assert set(answer.rules) == {"hero", "gone"}

        # the hub refuses a malformed or self-contradicting set at once: nothing is stored
        conflicting = {"rules": [{"action": "never", "item": hero}, {"action": "pin", "item": hero, "position": 1}]}
        assert _publish(hub.url, tmp_path / "bad.json", conflicting, *key) != 0
        assert "'never' rule" in capsys.readouterr().err
        # a set naming a column this catalogue lacks passes the hub (it knows no catalogue); edges refuse it
        assert _publish(hub.url, tmp_path / "col.json", {"version": "x", "rules": [
            {"action": "bury", "where": {"colour": "red"}}]}, *key) == 0
        # an unsigned set is refused by edges that hold a signing key
        assert _publish(hub.url, tmp_path / "unsigned.json", {"version": "u", "rules": []}) == 0
        for rec in edges:
            rec.poll_once()
            answer = rec.recommend("u", k=5, history=["item-000001"])
            assert answer.item_ids[0] == hero and set(answer.rules) == {"hero", "gone"}  # the good set serves on
            refusals = rec.status().sync["artifacts"]["rules"]["refusals"]
            reasons = [r["reason"] for r in refusals]
            assert len(reasons) == 2 and any("column" in r["message"] for r in refusals), refusals
        r = httpx.get(f"{hub.url}/v1/channels/stable/artifacts/rules", headers={"Authorization": f"Bearer {EDGE}"})
        assert r.status_code == 200 and len(r.json()["artifacts"]) == 3
    finally:
        for rec in edges:
            rec.close(2.0)
        hub.stop()


def test_rules_check_validates_against_a_bundles_catalogue(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    b = bundle(tmp_path, "v2", seed=2)
    (tmp_path / "ok.json").write_text(json.dumps([{"action": "boost", "where": {"brand": "brand-01"}, "factor": 2}]))
    assert edgerec(["rules", "check", str(tmp_path / "ok.json"), "--bundle", str(b)]) == 0
    assert "valid" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps([{"action": "boost", "where": {"colour": "red"}, "factor": 2}]))
    assert edgerec(["rules", "check", str(tmp_path / "bad.json"), "--bundle", str(b)]) != 0
    assert "colour" in capsys.readouterr().err
