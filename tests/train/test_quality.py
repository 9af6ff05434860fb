"""Acceptance (slow): the shipped demo bundle meets the Beauty targets on the served int8 path."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_bundle_meets_beauty_targets(beauty_dir: Path) -> None:
    from edgerec_sdk.recommender import demo_bundle_path
    from edgerec_sdk.train.evaluate import evaluate_bundle

    metrics = evaluate_bundle(demo_bundle_path(), beauty_dir / "Beauty.txt", baselines=False, write=False)
    served = metrics["test"]["served_int8"]
    assert served["users"] == 22363
    assert served["HR@10"] >= 0.0921 and served["NDCG@10"] >= 0.0531
    f32 = metrics["test"].get("float32")
    if f32:  # written by the build
        assert served["NDCG@10"] >= 0.99 * f32["NDCG@10"]
