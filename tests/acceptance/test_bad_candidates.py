"""Acceptance 3: each bad candidate is refused with its reason in ``rec.status().sync`` while the old
version keeps serving: a truncated download, a wrong sha256, a bad signature, a corrupt ONNX file, a wrong
dimension, a bundle ten times over the size cap."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sync.helpers import KEY, publish, replace_file, rewrite

from edgerec_sdk.hub import HubApp
from edgerec_sdk.testing import make_tiny_bundle

from .support import HISTORIES, bundle, connect, expected_answers, new_hub, wsgi


def _truncated(app: HubApp, tmp: Path) -> None:
    publish(app, bundle(tmp, "v2-truncated", seed=2))
    served = app.root / "bundles" / "v2-truncated" / "popular.npy"
    served.write_bytes(served.read_bytes()[:-10])


def _wrong_sha(app: HubApp, tmp: Path) -> None:
    publish(app, bundle(tmp, "v2-flipped", seed=3))
    served = app.root / "bundles" / "v2-flipped" / "items.int8.npy"
    data = bytearray(served.read_bytes())
    data[-1] ^= 0xFF
    served.write_bytes(bytes(data))


def _bad_signature(app: HubApp, tmp: Path) -> None:
    publish(app, bundle(tmp, "v2-foreign", seed=4, key=b"someone-elses-key"))


def _corrupt_onnx(app: HubApp, tmp: Path) -> None:
    publish(app, replace_file(bundle(tmp, "v2-onnx", seed=5), "interest.onnx", b"\x08\x07garbage" * 50))


def _wrong_dimension(app: HubApp, tmp: Path) -> None:
    publish(app, rewrite(bundle(tmp, "v2-dim", seed=6), lambda d: d.update(dim=d["dim"] * 2)))


def _ten_times_over_cap(app: HubApp, tmp: Path) -> None:
    publish(app, make_tiny_bundle(tmp / "v2-huge", model_version="v2-huge", n_items=5000, signing_key=KEY))


CASES: list[tuple[str, Callable[[HubApp, Path], None], str]] = [
    ("truncated", _truncated, "size_mismatch"),
    ("wrong_sha256", _wrong_sha, "sha256_mismatch"),
    ("bad_signature", _bad_signature, "signature_invalid"),
    ("corrupt_onnx", _corrupt_onnx, "format"),
    ("wrong_dimension", _wrong_dimension, "format"),
    ("ten_times_over_cap", _ten_times_over_cap, "too_large"),
]


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[tuple[str, ...], list[str]]]:
    path = bundle(tmp_path_factory.mktemp("v1"), "v1", seed=1)
    return path, expected_answers(path)


@pytest.mark.parametrize(("make_bad", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_candidate_refused_old_version_keeps_serving(
    tmp_path: Path, v1: tuple[Path, dict[tuple[str, ...], list[str]]], make_bad: Callable[[HubApp, Path], None],
    reason: str,
) -> None:
    path, expected = v1
    app = new_hub(tmp_path / "hub")
    publish(app, path)
    v1_bytes = sum(p.stat().st_size for p in path.iterdir())
    # a cap the good bundle fits under and the "huge" one exceeds ten times over
    rec = connect("http://127.0.0.1:1", tmp_path / "edge", transport=wsgi(app), start=False,
                  max_bundle_bytes=2 * v1_bytes)
    try:
        rec.poll_once()
        assert rec.status().model_version == "v1"
        make_bad(app, tmp_path)
        rec.poll_once()
        status = rec.status()
        sync = status.sync
        assert status.model_version == "v1" and sync["model_version"] == "v1", sync["last_update_error"]
        assert sync["last_update_error"]["reason"] == reason, sync["last_update_error"]
        assert sync["refusals"][-1]["reason"] == reason
        if reason != "signature_invalid":  # an unsigned manifest is never parsed, so its version is unknown
            assert sync["refusals"][-1]["version"].startswith("v2-"), sync["refusals"][-1]
        for hist in HISTORIES:  # the old version keeps serving, with its own answers
            r = rec.recommend("shopper", k=5, history=list(hist))
            assert r.model_version == "v1" and not r.degraded and r.item_ids == expected[hist]
        staged = [p.name for p in (tmp_path / "edge" / "staging").glob("*/*")]
        if reason == "size_mismatch":  # good files stay staged for the retry (fault A05); the bad one is gone
            assert "popular.npy" not in staged
        else:
            assert not staged
    finally:
        rec.close(1.0)


def test_huge_candidate_really_is_ten_times_over(tmp_path: Path) -> None:
    small = bundle(tmp_path, "v1", seed=1)
    huge = make_tiny_bundle(tmp_path / "huge", model_version="huge", n_items=5000, signing_key=KEY)
    size = [sum(p.stat().st_size for p in b.iterdir()) for b in (small, huge)]
    assert size[1] > 10 * 2 * size[0]
