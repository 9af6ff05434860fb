"""A/B experiments end to end: a loopback hub, two bundles at a 50 % rollout, synthetic shoppers with a known
click model; the report names the better arm, its intervals hold the true rates, and the guard aborts the worse
candidate. With identical arms the same report code finds no difference in at least 95 of 100 seeded runs."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from sync.helpers import ADMIN, KEY

from edgerec_sdk import Recommender
from edgerec_sdk.bundle import load_bundle
from edgerec_sdk.cli import main as edgerec
from edgerec_sdk.hub import HubApp, serve_in_thread
from edgerec_sdk.hub.experiments import ExperimentGuard, GuardRunner, guard_verdict
from edgerec_sdk.hub.stats import ArmCounts, report_dict, sample_ratio_p, wilson
from edgerec_sdk.testing import make_bundle

from .support import EDGE, connect, publish_http

N_ITEMS, K, SHOPPERS = 200, 5, 800


def click_probability(shown: list[str], relevant: set[str]) -> float:
    """The known click model: a shopper clicks an answer more often the more of it is truly relevant."""
    return 0.04 + 0.2 * sum(i in relevant for i in shown) / len(shown)


def test_loopback_ab_report_names_the_better_arm_and_the_guard_aborts_the_worse(tmp_path: Path,
                                                                                  capsys: pytest.CaptureFixture[str]
                                                                                  ) -> None:
    good = make_bundle(tmp_path / "good", n_items=N_ITEMS, dim=16, seed=1, model_version="good", signing_key=KEY)
    bad = make_bundle(tmp_path / "bad", n_items=N_ITEMS, dim=16, seed=2, model_version="bad", signing_key=KEY)
    with Recommender(load_bundle(good, signing_key=KEY)) as truth:  # true relevance: the good model's top 10
        relevant = {h: set(truth.recommend("x", k=10, history=[h]).item_ids)
                    for h in (f"item-{i:06d}" for i in range(1, N_ITEMS + 1))}
    app = HubApp(tmp_path / "hub", admin_tokens=[ADMIN], edge_tokens=[EDGE])
    hub = serve_in_thread(app)
    rec = connect(hub.url, tmp_path / "edge", start=False)
    try:
        publish_http(hub.url, good)
        publish_http(hub.url, bad, channel=None)
        assert edgerec(["channel", "set", "stable", "bad", "--rollout", "50", "--hub", hub.url, "--token",
                        ADMIN]) == 0
        rec.poll_once()
        rng = np.random.default_rng(7)
        true_q: dict[str, list[float]] = {"good": [], "bad": []}
        for n in range(SHOPPERS):
            user, history = f"shopper-{n}", f"item-{n % N_ITEMS + 1:06d}"
            answer = rec.recommend(user, k=K, history=[history], log_impressions=True)
            q = click_probability(answer.item_ids, relevant[history])
            true_q[str(answer.model_version)].append(q)
            if rng.random() < q:
                pos = int(rng.integers(K))
                rec.feedback({"user": user, "item": answer.item_ids[pos], "type": "click",
                              "rec_id": answer.rec_id, "position": pos})
                if rng.random() < 0.3:
                    rec.feedback({"user": user, "item": answer.item_ids[pos], "type": "purchase",
                                  "rec_id": answer.rec_id, "position": pos})
        assert rec.flush(30.0)
        capsys.readouterr()
        assert edgerec(["experiment", "report", "--channel", "stable", "--hub", hub.url, "--token", ADMIN,
                        "--json", "--plot", str(tmp_path / "ab.png")]) == 0
        report = orjson.loads(capsys.readouterr().out)
        assert (tmp_path / "ab.png").stat().st_size > 0
        arms = report["arms"]
        assert arms["base"]["impressions"] == len(true_q["good"]) and arms["candidate"]["impressions"] == len(
            true_q["bad"])
        ctr = report["metrics"]["ctr"]
        assert ctr["better"] == "good" and ctr["p_value"] < 0.01 and ctr["high"] < 0
        for side, version in (("base", "good"), ("candidate", "bad")):
            true_ctr = float(np.mean(true_q[version]))
            assert ctr[side]["low"] <= true_ctr <= ctr[side]["high"], (version, true_ctr, ctr[side])
        assert not report["sample_ratio"]["mismatch"] and ctr["mde"] < abs(ctr["difference"])
        assert edgerec(["experiment", "report", "--channel", "stable", "--hub", hub.url, "--token", ADMIN]) == 0
        table = capsys.readouterr().out
        assert "ctr" in table and "conversion" in table and "good" in table and "MISMATCH" not in table

        # the guard, armed now, judges after the next event batch and ends the rollout
        app.guard = GuardRunner(ExperimentGuard(confidence=0.99, min_impressions=100), interval_s=0.0)
        rec.feedback({"user": "shopper-0", "item": "item-000001", "type": "view"})
        assert rec.flush(15.0)
        assert app.guard.aborted == [("stable", "bad")]
        channel = httpx.get(f"{hub.url}/v1/channels/stable", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        assert channel["version"] == "good" and channel["candidate"] is None
        rec.poll_once()
        assert {rec.recommend(f"shopper-{n}", k=K).model_version for n in range(50)} == {"good"}
        # the ended test stays readable by naming its arms
        r = httpx.get(f"{hub.url}/v1/experiments/stable", params={"base": "good", "candidate": "bad", "rollout": 50},
                      headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200 and r.json()["metrics"]["ctr"]["better"] == "good"
        assert httpx.get(f"{hub.url}/v1/experiments/stable", headers={"Authorization": f"Bearer {ADMIN}"}
                         ).status_code == 409
        assert httpx.get(f"{hub.url}/v1/experiments/stable", headers={"Authorization": f"Bearer {EDGE}"}
                         ).status_code == 403
    finally:
        rec.close(2.0)
        hub.stop()


def test_identical_arms_show_no_difference_in_at_least_95_of_100_seeded_runs() -> None:
    """The same report code on counts simulated from one click model for both arms (a 50 % rollout)."""
    no_difference, guard = 0, ExperimentGuard(confidence=0.99, min_impressions=100)
    for seed in range(100):
        rng = np.random.default_rng(seed)
        users = 4000
        on_candidate = int(rng.binomial(users, 0.5))
        arms = []
        for name, n_users in (("v1", users - on_candidate), ("v2", on_candidate)):
            shown = int(rng.integers(1, 4, size=n_users).sum())
            clicked = int(rng.binomial(shown, 0.08))
            purchased = int(rng.binomial(clicked, 0.25))
            arms.append(ArmCounts(version=name, impressions=shown, clicked=clicked, purchased=purchased,
                                  clicks=clicked, purchases=purchased, users=n_users))
        report = report_dict("stable", arms[0], arms[1], 50.0)
        assert not report["sample_ratio"]["mismatch"] and not guard_verdict(report, guard)
        if all(m["better"] is None for m in report["metrics"].values()):
            no_difference += 1
    assert no_difference >= 95, f"{100 - no_difference} false positives in 100 runs"


def test_interval_and_ratio_checks() -> None:
    p = wilson(0, 50)
    assert p.low == 0.0 and 0.05 < p.high < 0.1  # Wilson stays sensible at zero successes
    assert sample_ratio_p(5000, 5000, 0.5) == pytest.approx(1.0)
    assert sample_ratio_p(5300, 4700, 0.5) < 0.001  # a broken split is flagged
    assert sample_ratio_p(7000, 3000, 0.3) == pytest.approx(1.0)
