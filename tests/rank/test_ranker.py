"""The CTR ranker end to end, in a loopback simulation with a known click model.

Shoppers click by category affinity and price fit, which the retriever (random item vectors) ignores, with a
position bias. An edge connected to a real hub on loopback serves the retrieval-only bundle and logs its answers
as impressions (``log_impressions=True``) and the simulated clicks with ``rec_id`` and position; the hub's
``export-events`` file trains the ranker; fresh shoppers are then served by both bundles: the expected CTR of
the top 10 under the true click model must rise by at least 10 % relative. The held-out AUC and the calibration
per decile come from the training report.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from acceptance.support import ADMIN, EDGE, KEY, connect, publish_http

from edgerec_sdk import Recommender, RecommenderConfig
from edgerec_sdk.bundle import load_bundle
from edgerec_sdk.cli import main as edgerec
from edgerec_sdk.errors import ConfigError
from edgerec_sdk.hub import HubApp, serve_in_thread
from edgerec_sdk.testing import make_bundle
from edgerec_sdk.train.ranker import auc, fit_logistic, impressions_from_events, read_event_log, train_ranker

N_ITEMS = 600
CATEGORIES = ["Nail", "Hair", "Skin", "Makeup", "Fragrance", "Tools"]  # make_bundle's generator


class Shoppers:
    """Each shopper likes one category and one price level; clicks follow a logistic model of both."""

    def __init__(self, catalog: Any, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.ids = list(catalog.ids)
        cats = catalog.columns["category"]
        self.cats = [set(c or ()) for c in cats]
        self.log_price = np.log(np.asarray(catalog.columns["price"], dtype=np.float64))

    def make(self, n: int, start: int) -> list[dict[str, Any]]:
        users = []
        for u in range(start, start + n):
            cat = str(self.rng.choice(CATEGORIES))
            level = float(self.rng.uniform(np.log(5), np.log(150)))
            liked = [i for i, c in enumerate(self.cats) if cat in c and abs(self.log_price[i] - level) < 0.5]
            self.rng.shuffle(liked)
            users.append({"id": f"shopper-{u}", "cat": cat, "level": level, "history": liked[:6]})
        return [u for u in users if len(u["history"]) >= 3]

    def p_click(self, user: dict[str, Any], row: int, position: int) -> float:
        z = -3.2 + 2.0 * (user["cat"] in self.cats[row]) - 1.5 * abs(self.log_price[row] - user["level"])
        return 1.0 / (1.0 + math.exp(-z)) / (1.0 + position) ** 0.5


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("ranker")
    base = make_bundle(root / "base", n_items=N_ITEMS, dim=16, seed=3, model_version="base", signing_key=KEY)
    bundle = load_bundle(base, signing_key=KEY)
    yield {"root": root, "base": base, "shoppers": Shoppers(bundle.catalog, seed=11), "catalog": bundle.catalog}


def _serve(bundle_dir: Path, users: list[dict[str, Any]], shoppers: Shoppers) -> list[tuple[dict[str, Any], Any]]:
    with Recommender.from_bundle(bundle_dir, config=RecommenderConfig(cache_size=0), signing_key=KEY) as rec:
        return [(u, rec.recommend(u["id"], k=10, history=[shoppers.ids[r] for r in u["history"]])) for u in users]


def _log_through_hub(world: dict[str, Any], shoppers: Shoppers, days: int, per_day: int) -> Path:
    """Serve shoppers from an edge connected to a loopback hub, log answers and clicks, export the hub's log."""
    root: Path = world["root"]
    hub = serve_in_thread(HubApp(root / "hub", admin_tokens=[ADMIN], edge_tokens=[EDGE]))
    rec = connect(hub.url, root / "edge", start=False)
    try:
        publish_http(hub.url, world["base"])
        rec.poll_once()
        for day in range(days):
            for u in shoppers.make(per_day, start=day * 1000):
                for r in u["history"]:
                    rec.feedback({"user": u["id"], "item": shoppers.ids[r], "type": "view"})
                answer = rec.recommend(u["id"], k=10, log_impressions=True)
                assert answer.model_version == "base" and not answer.degraded
                for pos, item in enumerate(answer.item_ids):
                    if shoppers.rng.random() < shoppers.p_click(u, shoppers.ids.index(item), pos):
                        rec.feedback({"user": u["id"], "item": item, "type": "click", "rec_id": answer.rec_id,
                                      "position": pos})
        assert rec.flush(60.0)
    finally:
        rec.close(2.0)
        hub.stop()
    out = root / "events.csv"
    assert edgerec(["hub", "export-events", "--root", str(root / "hub"), "--out", str(out)]) == 0
    return out


def _expected_ctr(answers: list[tuple[dict[str, Any], Any]], shoppers: Shoppers) -> float:
    return float(np.mean([np.mean([shoppers.p_click(u, shoppers.ids.index(item), pos)
                                   for pos, item in enumerate(answer.item_ids)]) for u, answer in answers]))


def test_a_trained_ranker_lifts_simulated_ctr_and_is_calibrated(world: dict[str, Any]) -> None:
    shoppers: Shoppers = world["shoppers"]
    log_file = _log_through_hub(world, shoppers, days=3, per_day=400)
    report = train_ranker(world["base"], log_file, world["root"] / "ranked", signing_key=KEY)
    ranked = load_bundle(world["root"] / "ranked", signing_key=KEY)
    assert ranked.manifest.ranker is not None and ranked.ranker_bytes is not None
    assert ranked.manifest.parent_version == "base"

    fresh = shoppers.make(400, start=9000)
    plain_ctr = _expected_ctr(_serve(world["base"], fresh, shoppers), shoppers)
    ranked_ctr = _expected_ctr(_serve(world["root"] / "ranked", fresh, shoppers), shoppers)
    lift = ranked_ctr / plain_ctr - 1.0
    held = report["holdout"]
    print(f"\nsimulated CTR@10 retrieval {plain_ctr:.4f} ranked {ranked_ctr:.4f} (lift {lift:+.1%}); "
          f"held-out AUC {held['auc']:.3f}; calibration {[(round(b['expected'], 3), round(b['observed'], 3)) for b in held['calibration']]}")
    assert lift >= 0.10
    assert held["auc"] > 0.65
    expected = np.array([b["expected"] for b in held["calibration"]])
    observed = np.array([b["observed"] for b in held["calibration"]])
    n = np.array([b["n"] for b in held["calibration"]])
    # calibrated: the mean prediction matches the click rate, and the deciles rise with it
    assert abs(float(np.sum(expected * n) / n.sum()) - float(np.sum(observed * n) / n.sum())) < 0.25 * observed.mean()
    assert observed[-1] > 2 * observed[0]
    assert report["weights"]["category"] > 0 and report["weights"]["price_fit"] > 0


def test_explain_names_the_ranker_features_and_a_ranker_can_be_switched_off(world: dict[str, Any]) -> None:
    ranked_dir = world["root"] / "ranked"
    if not ranked_dir.exists():
        pytest.skip("needs the bundle trained by the test above")
    shoppers: Shoppers = world["shoppers"]
    u = shoppers.make(5, start=20000)[0]
    history = [shoppers.ids[r] for r in u["history"]]
    with Recommender.from_bundle(ranked_dir, config=RecommenderConfig(cache_size=0), signing_key=KEY) as rec:
        answer = rec.recommend(u["id"], k=5, history=history, explain=True)
        assert all(0.0 <= r.score <= 1.0 for r in answer)
        assert any("ranked by" in (r.reason or "") for r in answer)
    off_config = RecommenderConfig(cache_size=0, use_ranker=False)
    with Recommender.from_bundle(ranked_dir, config=off_config, signing_key=KEY) as off, \
            Recommender.from_bundle(world["base"], config=RecommenderConfig(cache_size=0), signing_key=KEY) as base:
        assert off.recommend(u["id"], k=10, history=history).item_ids == \
            base.recommend(u["id"], k=10, history=history).item_ids


def test_too_few_clicks_is_a_clear_refusal(world: dict[str, Any], tmp_path: Path) -> None:
    events = [{"user": "a", "item": "item-000001", "type": "view", "ts": 1.0},
              {"user": "a", "item": "item-000002", "type": "impression", "ts": 2.0, "rec_id": "r1",
               "items": ["item-000002", "item-000003"], "positions": [0, 1]}]
    with pytest.raises(ConfigError, match="needs at least"):
        train_ranker(world["base"], events, tmp_path / "out", signing_key=KEY)
    assert not (tmp_path / "out").exists()


def test_logistic_fit_recovers_known_weights_and_auc_is_a_rank_statistic() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 3))
    p = 1 / (1 + np.exp(-(0.5 + 1.5 * x[:, 0] - 1.0 * x[:, 1])))
    y = (rng.random(20000) < p).astype(np.float64)
    fit = fit_logistic(x, y, l2=0.0)
    assert fit.weights * fit.scale == pytest.approx([1.5, -1.0, 0.0], abs=0.1)
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert math.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_the_hubs_export_one_line_per_slot_becomes_one_impression(tmp_path: Path) -> None:
    f = tmp_path / "export.csv"
    f.write_text("user,item,type,timestamp,value,model_version,rec_id,position\n"
                 "u,i0,view,100,,,,\n"
                 "u,i1,impression,200,,v1,r1,0\n"
                 "u,i2,impression,200,,v1,r1,1\n"
                 "u,i3,impression,200,,v1,r1,2\n"
                 "u,i3,click,210,,,r1,2\n"
                 "u,i2,purchase,4000,,,,\n")
    impressions, history = impressions_from_events(read_event_log(f))
    assert len(impressions) == 1
    imp = impressions[0]
    assert (imp.items, imp.positions, imp.clicked) == (["i1", "i2", "i3"], [0, 1, 2], {"i3"})  # i2: too late
    assert [item for _, item in history["u"]] == ["i0", "i3", "i2"]


def test_csv_export_with_json_lists_is_read(tmp_path: Path) -> None:
    f = tmp_path / "e.csv"
    f.write_text('user,item,type,timestamp,rec_id,position,items,positions\n'
                 'u,i1,impression,2026-01-01T00:00:00Z,r,,"[""i1"", ""i2""]","[0, 1]"\n'
                 'u,i2,click,1767225605,r,1,,\n')
    rows = read_event_log(f)
    assert rows[0]["items"] == ["i1", "i2"] and rows[0]["ts"] == pytest.approx(1767225600.0)
    assert rows[1]["position"] == 1.0 and rows[1]["ts"] == 1767225605.0


def _nonlinear_ranker_onnx(n: int) -> bytes:
    """sigmoid(x^2 @ w - 1): a valid ranker graph whose logit is not affine in the features."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((n, 1), 0.05, dtype=np.float32), "w")
    bias = numpy_helper.from_array(np.asarray([-1.0], dtype=np.float32), "bias")
    nodes = [helper.make_node("Mul", ["features", "features"], ["sq"]),
             helper.make_node("MatMul", ["sq", "w"], ["z0"]),
             helper.make_node("Add", ["z0", "bias"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["ctr"])]
    graph = helper.make_graph(nodes, "nonlinear", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", n])],
                              [helper.make_tensor_value_info("ctr", TensorProto.FLOAT, ["n", 1])], initializer=[w, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@pytest.mark.parametrize("kind", ["logistic", "nonlinear"])
def test_a_logistic_ranker_is_evaluated_in_numpy_with_onnxruntimes_answers(tmp_path: Path, kind: str) -> None:
    from edgerec_sdk.rank.features import FEATURES
    from edgerec_sdk.rank.ranker import Ranker
    from edgerec_sdk.train.ranker import attach_ranker, ranker_onnx

    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, len(FEATURES)))
    y = (rng.random(3000) < 1 / (1 + np.exp(-(x @ rng.normal(size=len(FEATURES)) - 2)))).astype(np.float64)
    fit = fit_logistic(x, y)
    graph = ranker_onnx(fit) if kind == "logistic" else _nonlinear_ranker_onnx(len(FEATURES))
    src = make_bundle(tmp_path / "plain", n_items=50, dim=8)
    bundle = load_bundle(attach_ranker(src, tmp_path / "ranked", ranker_bytes=graph, features=FEATURES,
                                       means=fit.mean.tolist(), report={"purpose": "test"}))
    ranker = Ranker(bundle)
    ranker.load()
    assert ranker.evaluates_in_numpy is (kind == "logistic")
    # far from the probe's rows too: scores and price gaps several units off the means
    matrix = (fit.mean + rng.normal(scale=3.0, size=(500, len(FEATURES)))).astype(np.float32)
    reference = ranker._run(np.ascontiguousarray(matrix[:, ranker._columns]))
    got = ranker.probabilities(matrix)
    assert got.dtype == np.float32 and got.shape == (500,)
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5)
    if kind == "logistic":  # onnxruntime itself computes the graph's float semantics (no per-call quantizing)
        w_scale = np.max(np.abs(fit.weights)) / 127.0
        w = np.clip(np.round(fit.weights / w_scale), -127, 127) * w_scale
        z = ((matrix[:, ranker._columns] - fit.mean) / fit.scale) @ w + fit.bias
        np.testing.assert_allclose(reference, 1 / (1 + np.exp(-z)), rtol=0, atol=1e-5)
