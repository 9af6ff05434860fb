from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import httpx
import pytest

from edgerec_sdk.bundle import Bundle, Manifest
from edgerec_sdk.bundle.restamp import restamp_bundle
from edgerec_sdk.hub import HubApp
from edgerec_sdk.sync import SyncConfig
from edgerec_sdk.sync.client import HubClient
from edgerec_sdk.sync.updater import Updater
from edgerec_sdk.testing import make_tiny_bundle

from .fakes import FakeClock
from .helpers import EDGE, KEY, admin, bundle, new_hub, publish, replace_file, rewrite


class Swaps:
    def __init__(self) -> None:
        self.versions: list[str] = []

    def __call__(self, b: Bundle) -> None:
        self.versions.append(b.model_version)


def make(app: HubApp | None, state: Path, clock: FakeClock, swaps: Swaps | None = None,
         transport: httpx.BaseTransport | None = None, **kw: object) -> Updater:
    transport = transport or httpx.WSGITransport(app=app)
    client = HubClient("http://hub", token=EDGE, transport=transport, clock=clock)
    kw.setdefault("smoke_in_subprocess", False)
    config = SyncConfig(hub_url="http://hub", allow_insecure_http=True, state_dir=str(state), signing_key=KEY, **kw)  # type: ignore[arg-type]
    return Updater(client, config, on_bundle=swaps, clock=clock, rng=random.Random(0))


@pytest.fixture
def app(tmp_path: Path) -> HubApp:
    return new_hub(tmp_path / "hub")


def test_update_then_a16_not_modified(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    publish(app, bundle(tmp_path, "v1"))
    swaps = Swaps()
    up = make(app, tmp_path / "state", clock, swaps)
    assert up.poll_once() >= 30.0
    assert swaps.versions == ["v1"]
    assert (tmp_path / "state" / "current").read_text().startswith("v1-")
    up.poll_once()
    assert swaps.versions == ["v1"] and up.counts["not_modified"] == 1
    s = up.status()
    assert s["model_version"] == "v1" and s["bundle_origin"] == "hub" and s["last_update_error"] is None


def test_a02_restart_serves_last_good_with_hub_down(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    publish(app, bundle(tmp_path, "v1"))
    make(app, tmp_path / "state", clock).poll_once()

    def down(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("hub down")

    up = make(None, tmp_path / "state", clock, transport=httpx.MockTransport(down))
    b = up.load_last_good()
    assert b is not None and b.model_version == "v1" and up.status()["bundle_origin"] == "disk"
    assert up.poll_once() >= 30.0  # a01/a02: retries, never raises
    assert up.status()["model_version"] == "v1"


def test_c05_corrupt_last_good_moved_aside(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    publish(app, bundle(tmp_path, "v1"))
    make(app, tmp_path / "state", clock).poll_once()
    name = (tmp_path / "state" / "current").read_text().strip()
    pop = tmp_path / "state" / "bundles" / name / "popular.npy"
    pop.write_bytes(pop.read_bytes()[:-1] + b"\x01")
    up = make(app, tmp_path / "state", clock)
    assert up.load_last_good() is None
    assert any(".corrupt-" in p.name for p in (tmp_path / "state" / "bundles").iterdir())


def _refused(app: HubApp, tmp_path: Path, clock: FakeClock, bad: Path, reason: str, **kw: object) -> Updater:
    publish(app, rewrite(bundle(tmp_path, "v1"), lambda d: d.update(created_at="2020-01-01T00:00:00Z")))
    swaps = Swaps()
    up = make(app, tmp_path / "state", clock, swaps, **kw)
    up.poll_once()
    publish(app, bad)
    up.poll_once()
    s = up.status()
    assert swaps.versions == ["v1"] and s["model_version"] == "v1"  # the old version keeps serving
    assert s["last_update_error"]["reason"] == reason, s["last_update_error"]
    assert not list((tmp_path / "state" / "staging").iterdir())
    return up


def test_b05_bad_signature_refused(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    up = _refused(app, tmp_path, clock, bundle(tmp_path, "v2", seed=1, key=b"another-key"), "signature_invalid")
    up.poll_once()  # not fetched again until the manifest changes
    assert up.counts["refused"] == 1


def test_b05_signature_missing_refused(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    _refused(app, tmp_path, clock, bundle(tmp_path, "v2", seed=1, key=None), "signature_invalid")


def test_b02_flipped_byte_refused(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    publish(app, bundle(tmp_path, "v1"))
    swaps = Swaps()
    up = make(app, tmp_path / "state", clock, swaps)
    up.poll_once()
    publish(app, bundle(tmp_path, "v2", seed=1), channel="stable")
    served = tmp_path / "hub" / "bundles" / "v2" / "popular.npy"
    data = bytearray(served.read_bytes())
    data[-1] ^= 0xFF
    served.write_bytes(bytes(data))
    up.poll_once()
    err = up.status()["last_update_error"]
    assert err["reason"] == "sha256_mismatch" and up.counts["verify_failed"] == 1
    assert swaps.versions == ["v1"]


def test_b01_truncated_body_refused_and_retried(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    publish(app, bundle(tmp_path, "v1"))
    swaps = Swaps()
    up = make(app, tmp_path / "state", clock, swaps)
    up.poll_once()
    publish(app, bundle(tmp_path, "v2", seed=1))
    served = tmp_path / "hub" / "bundles" / "v2" / "popular.npy"
    good = served.read_bytes()
    served.write_bytes(good[:-10])
    up.poll_once()
    assert up.status()["last_update_error"]["reason"] == "size_mismatch"
    assert swaps.versions == ["v1"]
    served.write_bytes(good)  # the hub heals: the next poll retries (not marked bad)
    up.poll_once()
    assert swaps.versions == ["v1", "v2"]


def test_b03_bundle_over_cap_refused(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    big = make_tiny_bundle(tmp_path / "v2", model_version="v2", n_items=20_000, signing_key=KEY)
    cap = sum(p.stat().st_size for p in big.iterdir()) // 10  # ten times over the cap
    _refused(app, tmp_path, clock, big, "too_large", max_bundle_bytes=cap)


def test_b10_wrong_dimension_refused(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    bad = rewrite(bundle(tmp_path, "v2", seed=1), lambda d: d.update(dim=d["dim"] * 10))
    up = _refused(app, tmp_path, clock, bad, "format")
    assert up.counts["refused"] == 1


def test_corrupt_onnx_refused(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    bad = replace_file(bundle(tmp_path, "v2", seed=1), "interest.onnx", b"\x08\x07garbage" * 50)
    up = _refused(app, tmp_path, clock, bad, "format")
    assert up.status()["refusals"][-1]["version"] == "v2"


def _unloadable_model() -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOperator", ["history"], ["interest"], domain="")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("history", TensorProto.INT64, [None, 10])],
                              [helper.make_tensor_value_info("interest", TensorProto.FLOAT, [None, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_b08_b09_unloadable_model_refused_in_child_process(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    bad = replace_file(bundle(tmp_path, "v2", seed=1), "interest.onnx", _unloadable_model())
    up = _refused(app, tmp_path, clock, bad, "load_failed", smoke_in_subprocess=True)
    assert up.status()["refusals"][-1]["version"] == "v2"
    assert len(list((tmp_path / "state" / "smoke_ok").iterdir())) == 1  # v1 only


def test_a08_auth_failure_keeps_bundle_and_backs_off(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    publish(app, bundle(tmp_path, "v1"))
    up = make(app, tmp_path / "state", clock)
    up.poll_once()
    up.client = HubClient("http://hub", token="revoked", transport=httpx.WSGITransport(app=app), clock=clock)
    delay = up.poll_once()
    assert 150 <= delay <= 300 and up.status()["auth_failed"] and up.status()["model_version"] == "v1"


def test_a09_unknown_channel_long_backoff(app: HubApp, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    up = make(app, tmp_path / "state", clock, channel="nope")
    with caplog.at_level(logging.ERROR):
        assert up.poll_once() >= 150
        assert up.poll_once() >= 150
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # once per episode


def test_a06_poll_backoff_never_sooner_than_interval(tmp_path: Path, clock: FakeClock) -> None:
    up = make(None, tmp_path / "state", clock, transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    assert all(up.poll_once() >= 30.0 for _ in range(4))


def test_d11_staging_leftovers_removed(tmp_path: Path, clock: FakeClock) -> None:
    up = make(None, tmp_path / "state", clock, transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    dead = tmp_path / "state" / "staging" / "v9-abc.999999999"
    dead.mkdir()
    (dead / "items.int8.npy").write_bytes(b"partial")
    up.load_last_good()
    assert not dead.exists()


def test_c04_channel_moved_back_refused_restamp_reuses_disk(app: HubApp, tmp_path: Path, clock: FakeClock,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    v1 = rewrite(bundle(tmp_path, "v1"), lambda d: d.update(created_at="2020-01-01T00:00:00Z"))
    v2 = rewrite(bundle(tmp_path, "v2", seed=1), lambda d: d.update(created_at="2020-01-02T00:00:00Z"))
    publish(app, v1)
    swaps = Swaps()
    up = make(app, tmp_path / "state", clock, swaps)
    up.poll_once()
    publish(app, v2)
    up.poll_once()
    with admin(app) as c:  # `edgerec channel set stable v1` is not a rollback the edges accept
        c.put("/v1/channels/stable", json={"version": "v1"})
    with caplog.at_level(logging.WARNING):
        up.poll_once()
        assert swaps.versions == ["v1", "v2"] and up.status()["last_update_error"]["reason"] == "rollback_refused"
        again = restamp_bundle(v1, tmp_path / "v1-again", signing_key=KEY)
        publish(app, again)
        version = Manifest.from_bytes((again / "manifest.json").read_bytes()).model_version
        shutil.rmtree(tmp_path / "hub" / "bundles" / version)  # its files gone from the hub: must come from disk
        up.poll_once()
    assert swaps.versions == ["v1", "v2", version] and version.startswith("v1-restamp-")
    assert any("rolled back on purpose" in r.getMessage() for r in caplog.records)
    assert os.path.exists(tmp_path / "state" / "current")


def test_c08_rollout_candidate_loaded_beside_base(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    publish(app, bundle(tmp_path, "v1"))
    publish(app, bundle(tmp_path, "v2", seed=1), channel=None)
    swaps = Swaps()
    cands: list[tuple[str | None, float]] = []
    client = HubClient("http://hub", token=EDGE, transport=httpx.WSGITransport(app=app), clock=clock)
    config = SyncConfig(hub_url="http://hub", allow_insecure_http=True, signing_key=KEY, smoke_in_subprocess=False)
    up = Updater(client, config, state_dir=tmp_path / "state", on_bundle=swaps, clock=clock,
                 on_candidate=lambda b, p: cands.append((b.model_version if b else None, p)), rng=random.Random(0))
    up.poll_once()
    with admin(app) as c:
        c.put("/v1/channels/stable", json={"version": "v2", "rollout_percent": 10})
        up.poll_once()
        c.put("/v1/channels/stable", json={"version": "v2", "rollout_percent": 50})
        up.poll_once()
        c.put("/v1/channels/stable", json={"version": "v2", "rollout_percent": 100})
        up.poll_once()
    assert swaps.versions == ["v1", "v2"]
    assert cands == [("v2", 10.0), ("v2", 50.0), (None, 0.0)]
    assert up.status()["candidate_version"] is None and up.status()["model_version"] == "v2"
