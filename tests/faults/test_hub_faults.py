"""Faults A and B through the scriptable FakeHub: the hub misbehaves, the edge keeps serving and loses nothing."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgerec_sdk import RecommenderConfig
from edgerec_sdk.bundle import write_bundle
from edgerec_sdk.bundle.manifest import Manifest
from edgerec_sdk.bundle.restamp import restamp_bundle
from edgerec_sdk.testing import FakeClock, FakeHub, Fault, make_interest_model

from .conftest import RAW_USERS, SIGNING, TOKEN, balanced, click, connect, edge, outbox


def staged(state: Path) -> list[str]:
    """Files left in staging (an emptied per-attempt directory is reused by the next attempt)."""
    return [p.name for p in (state / "staging").rglob("*") if p.is_file()]


def served_dirs(state: Path) -> list[str]:
    return sorted(p.name.split("-")[0] for p in (state / "bundles").iterdir())


def test_a01_hub_down_at_cold_start_serves_fallback_then_first_bundle(hub: FakeHub, tmp_path: Path) -> None:
    hub.down = True
    t0 = time.monotonic()
    rec = connect(hub, tmp_path / "state", config=RecommenderConfig(fallback_items=("item-000003", "item-000001")))
    assert time.monotonic() - t0 < 5.0  # construction never waits on the hub
    r = rec.recommend(RAW_USERS[0], k=2)
    assert r.degraded and r.degraded_reason == "not_ready"
    assert [i.item_id for i in r] == ["item-000003", "item-000001"]
    assert rec.poll_once() >= 30.0  # RETRY in the background, never raises
    assert rec.feedback(click(RAW_USERS[0], 1)) is True  # acknowledged while the hub is down
    hub.down = False
    rec.poll_once()  # the first good bundle loads without a restart
    r = rec.recommend(RAW_USERS[0], k=2)
    assert not r.degraded and r.model_version == "v1" and rec.status().bundle_origin == "hub"
    assert rec.flush(5.0)
    o = outbox(rec)
    assert hub.event_ids == ["ev-ali-1"] and o["delivered"] == 1 and balanced(o)
    rec.close()


def test_a03_black_hole_on_a_real_socket_is_bounded(hub: FakeHub, tmp_path: Path) -> None:
    with hub.serve() as url:
        sync = edge(None, tmp_path / "state", url=url, read_timeout_s=0.3, connect_timeout_s=0.3)
        hub.inject("manifest", Fault.hole())
        hub.inject("events", *[Fault.hole()] * 5)
        t0 = time.monotonic()
        assert sync.poll_once() >= 30.0
        assert time.monotonic() - t0 < 3.0 and sync.status()["updater_poll_errors"] == 1
        sync.put(click(RAW_USERS[0], 1))
        t0 = time.monotonic()
        assert sync.flush(timeout_s=1.0) is False  # the request is cut at the flush deadline
        assert time.monotonic() - t0 < 3.0
        o = sync.status()["outbox"]
        assert o["pending"] == 1 and balanced(o)
        sync.close(0.5)


def test_a05_reset_mid_download_resumes_with_range(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                   bundles: dict[str, Path]) -> None:
    sync = edge(hub, tmp_path / "state", clock)
    sync.poll_once()
    hub.publish(bundles["v2"])
    hub.inject("file", Fault.reset(after_bytes=100))
    sync.poll_once()
    assert sync.status()["model_version"] == "v1"  # the reset cost one retry, nothing else
    sync.poll_once()
    assert sync.status()["model_version"] == "v2"
    ranged = [r for r in hub.requests if r.route == "file" and "range" in r.headers]
    assert [r.headers["range"] for r in ranged] == ["bytes=100-"]
    assert staged(tmp_path / "state") == []
    sync.close(0)


def test_a06_manifest_500_502_503_then_ok_exact_requests(hub: FakeHub, tmp_path: Path, clock: FakeClock) -> None:
    sync = edge(hub, tmp_path / "state", clock)
    hub.inject("manifest", Fault.http(500), Fault.http(502), Fault.http(503))
    delays = [sync.poll_once() for _ in range(4)]
    assert hub.count("manifest") == 4 and all(d >= 30.0 for d in delays)
    assert sync.status()["model_version"] == "v1" and sync.updater.backoff.failures == 0  # reset by the 200
    sync.close(0)


def test_a11_html_or_truncated_manifest_persists_nothing(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                        bundles: dict[str, Path]) -> None:
    state = tmp_path / "state"
    sync = edge(hub, state, clock)
    sync.poll_once()
    files = hub.count("file")
    hub.publish(bundles["v2"])
    hub.inject("manifest", Fault.html(), Fault.truncated_json())
    sync.poll_once()  # HTML: HubProtocolError, a retry
    sync.poll_once()  # truncated JSON: no valid signature over it, refused before parsing
    s = sync.status()
    assert s["model_version"] == "v1" and s["updater_poll_errors"] == 1 and hub.count("file") == files
    assert s["last_update_error"]["reason"] == "signature_invalid"
    assert served_dirs(state) == ["v1"] and staged(state) == []
    sync.poll_once()  # the hub heals: RETRY
    assert sync.status()["model_version"] == "v2"
    sync.close(0)


def test_a12_wrong_schema_refused_unknown_fields_ignored(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                        bundles: dict[str, Path]) -> None:
    sync = edge(hub, tmp_path / "state", clock)
    sync.poll_once()
    hub.publish(bundles["v2"])
    hub.inject("manifest", Fault.rewrite_manifest(lambda d: d.pop("dim")))  # signed, but the wrong schema
    sync.poll_once()
    assert sync.status()["last_update_error"]["reason"] == "format"
    hub.inject("manifest", Fault.rewrite_manifest(lambda d: d.update(format_version=99)))
    sync.poll_once()
    assert sync.status()["last_update_error"]["reason"] == "format" and sync.status()["model_version"] == "v1"
    hub.inject("manifest", Fault.rewrite_manifest(lambda d: d.update(x_added_in_v1_9={"a": 1})))
    sync.poll_once()
    assert sync.status()["model_version"] == "v2" and sync.status()["last_update_error"] is None
    sync.close(0)


def _errors_naming(caplog: pytest.LogCaptureFixture, *names: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.ERROR and all(repr(n) in r.getMessage() for n in names)]


def test_c04_replayed_older_manifest_refused(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                            bundles: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    sync = edge(hub, state, clock)
    sync.poll_once()
    hub.publish(bundles["v2"])
    sync.poll_once()
    assert sync.status()["model_version"] == "v2"
    requests_before = len(hub.requests)
    # An attacker between edge and hub (or a hub restored from an old backup) answers with the validly
    # signed v1 manifest it saw earlier, twice.
    hub.inject("manifest", Fault.replay_manifest("v1"), Fault.replay_manifest("v1"))
    with caplog.at_level(logging.ERROR):
        sync.poll_once()
        sync.poll_once()
    s = sync.status()
    assert s["model_version"] == "v2"  # fault C04: refused, the current bundle keeps serving
    assert s["last_update_error"]["reason"] == "rollback_refused" and s["last_update_error"]["version"] == "v1"
    assert [r.route for r in hub.requests[requests_before:]] == ["manifest", "manifest"]  # nothing downloaded
    assert staged(state) == [] and s["updater_refused"] == 1
    assert len(_errors_naming(caplog, "v1", "v2")) == 1  # ERROR once per version, naming both
    sync.poll_once()  # the honest answer again: v2, nothing to do
    assert sync.status()["model_version"] == "v2" and hub.count("file") == sum(
        r.route == "file" for r in hub.requests[:requests_before])
    hub.inject("manifest", Fault.rewrite_manifest(lambda d: d.update(created_at="yesterday")))
    sync.poll_once()  # signed, but a stamp the edge cannot order: refused too
    assert sync.status()["last_update_error"]["reason"] == "format" and sync.status()["model_version"] == "v2"
    hub.inject("manifest", Fault.rewrite_manifest(lambda d: d.update(model_version="v0")))
    hub.signing_key = b"not-the-publisher-key"  # a forged manifest: refused before its stamp is even read
    sync.poll_once()
    assert sync.status()["last_update_error"]["reason"] == "signature_invalid"
    sync.close(0)


def test_c04_operator_rollback_by_restamp_is_accepted(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                      bundles: dict[str, Path],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    sync = edge(hub, tmp_path / "state", clock)
    sync.poll_once()
    hub.publish(bundles["v2"])
    sync.poll_once()
    files_before = hub.count("file")
    # `edgerec publish runs/v1 --restamp --signing-key K --channel stable` does exactly this
    again = restamp_bundle(bundles["v1"], tmp_path / "v1-again", signing_key=SIGNING)
    version = hub.publish(again)
    assert version.startswith("v1-restamp-")
    with caplog.at_level(logging.WARNING):
        sync.poll_once()
    s = sync.status()
    assert s["model_version"] == version and s["last_update_error"] is None
    assert hub.count("file") == files_before  # same sha256s: every file came from the v1 copy on disk
    assert any(r.levelno == logging.WARNING and all(repr(n) in r.getMessage() for n in ("v2", version, "v1"))
               for r in caplog.records)
    m = Manifest.from_bytes((again / "manifest.json").read_bytes())
    assert m.extra["restamped_from"]["model_version"] == "v1"
    assert {n: e.sha256 for n, e in m.files.items()} == {
        n: e.sha256 for n, e in Manifest.from_bytes((bundles["v1"] / "manifest.json").read_bytes()).files.items()}
    hub.inject("manifest", Fault.replay_manifest("v2"))  # the rollback is now the newest: v2 cannot come back
    sync.poll_once()
    assert sync.status()["model_version"] == version
    assert sync.status()["last_update_error"]["reason"] == "rollback_refused"
    sync.close(0)


def test_c04_high_water_mark_survives_restart(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                              bundles: dict[str, Path]) -> None:
    state = tmp_path / "state"
    first = edge(hub, state, clock)
    first.poll_once()
    hub.publish(bundles["v2"])
    first.poll_once()
    first.close(0)
    mark = json.loads((state / "high_water" / "stable.json").read_text())
    assert mark["model_version"] == "v2" and mark["created_at"] == "2020-01-02T00:00:00Z"
    (state / "current").unlink()  # even with no last good bundle to start from, the mark alone holds
    again = edge(hub, state, clock)
    assert again.load_last_good() is None
    hub.inject("manifest", Fault.replay_manifest("v1"))
    again.poll_once()
    s = again.status()
    assert s["model_version"] is None and s["last_update_error"]["reason"] == "rollback_refused"
    again.poll_once()  # the channel's real answer
    assert again.status()["model_version"] == "v2"
    again.close(0)


def test_c04_unsigned_development_mode_orders_too(bundles: dict[str, Path], tmp_path: Path,
                                                  clock: FakeClock) -> None:
    hub = FakeHub(token=TOKEN, signing_key=None, clock=clock)
    hub.publish(bundles["v2"])
    sync = edge(hub, tmp_path / "state", clock, signing_key=None, allow_unsigned_bundles=True)
    sync.poll_once()
    hub.publish(bundles["v1"])  # unsigned mode cannot tell a forgery from the publisher; order still holds
    sync.poll_once()
    s = sync.status()
    assert s["model_version"] == "v2" and s["last_update_error"]["reason"] == "rollback_refused"
    sync.close(0)


def test_a16_flapping_etag_downloads_and_swaps_nothing(hub: FakeHub, tmp_path: Path, clock: FakeClock) -> None:
    hub.flap_etag = True
    swaps: list[str] = []
    sync = edge(hub, tmp_path / "state", clock)
    sync.updater.on_bundle = lambda b: swaps.append(b.model_version)
    sync.poll_once()
    files = hub.count("file")
    for _ in range(5):
        sync.poll_once()
    assert swaps == ["v1"] and hub.count("file") == files and sync.status()["updater_updates"] == 1
    sync.close(0)


def test_a18_hours_of_outage_backoff_capped_then_first_success(hub: FakeHub, tmp_path: Path,
                                                               clock: FakeClock) -> None:
    sync = edge(hub, tmp_path / "state", clock)
    for i in range(5):
        sync.put(click(RAW_USERS[0], i))
    hub.down = True
    delays = []
    for _ in range(40):  # about an hour of retries
        delays.append(sync.upload_once())
        clock.advance(delays[-1])
    assert max(delays) <= 30.0 and min(delays[10:]) >= 15.0  # capped at 30 s, jitter 50-100 %
    assert all(sync.poll_once() <= 300.0 for _ in range(3))
    hub.down = False
    clock.advance(30.0)
    assert sync.upload_once() >= 0.0
    o = sync.status()["outbox"]
    assert o["delivered"] == 5 and sync.uploader.backoff.failures == 0 and balanced(o)
    sync.close(0)


def test_b04_gzip_bomb_refused_for_files_and_manifests(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                      bundles: dict[str, Path]) -> None:
    state = tmp_path / "state"
    sync = edge(hub, state, clock)
    sync.poll_once()
    hub.publish(bundles["v2"])
    hub.inject("file", Fault.gzip_bomb())
    sync.poll_once()
    assert sync.status()["last_update_error"]["reason"] == "content_encoding" and staged(state) == []
    hub.inject("manifest", Fault.gzip_bomb())
    errors = sync.status()["updater_poll_errors"]
    sync.poll_once()
    assert sync.status()["updater_poll_errors"] == errors + 1 and sync.status()["model_version"] == "v1"
    assert all(r.headers.get("accept-encoding") == "identity" for r in hub.requests if r.route != "events")
    sync.poll_once()
    assert sync.status()["model_version"] == "v2"
    sync.close(0)


def test_b06_traversal_name_in_hub_manifest_writes_nothing_outside(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                                  bundles: dict[str, Path]) -> None:
    state = tmp_path / "state"
    sync = edge(hub, state, clock)
    sync.poll_once()
    hub.publish(bundles["v2"])

    def evil(d: dict[str, object]) -> None:
        d["files"]["../../evil.npy"] = {"sha256": "0" * 64, "size": 10}  # type: ignore[index]

    hub.inject("manifest", Fault.rewrite_manifest(evil))
    sync.poll_once()
    assert sync.status()["last_update_error"]["reason"] == "format"
    assert not list(tmp_path.rglob("evil*")) and not any("evil" in r.path for r in hub.requests)
    sync.close(0)


def test_b06_only_listed_artifacts_are_requested(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                bundles: dict[str, Path]) -> None:
    sync = edge(hub, tmp_path / "state", clock)
    sync.poll_once()
    listed = set(Manifest.from_bytes((bundles["v1"] / "manifest.json").read_bytes(), source="t").files)
    asked = {r.path.rsplit("/", 1)[1] for r in hub.requests if r.route == "file"}
    assert asked == listed
    sync.close(0)


def _nan_bundle(root: Path, version: str) -> Path:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    weights = np.full((8, 8), np.nan, dtype=np.float32)
    return write_bundle(root, model_bytes=make_interest_model(vectors, max_seq_len=10, weights=weights),
                        vectors=vectors, catalog_ids=[f"item-{i:06d}" for i in range(1, 21)],
                        popular=np.arange(20, dtype=np.int64), vector_dtype="float32", max_seq_len=10,
                        model_version=version, signing_key=SIGNING)


def test_b11_nan_model_weights_refused_by_smoke_test(hub: FakeHub, tmp_path: Path, clock: FakeClock) -> None:
    sync = edge(hub, tmp_path / "state", clock)
    sync.poll_once()
    hub.publish(_nan_bundle(tmp_path / "nan", "v9"))
    sync.poll_once()
    s = sync.status()
    assert s["last_update_error"]["reason"] == "nonfinite" and s["model_version"] == "v1"
    files = hub.count("file")
    sync.poll_once()  # that content is marked bad: never fetched again until the manifest changes
    assert hub.count("file") == files
    sync.close(0)


def _fake_python(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(("body", "reason"), [("kill -SEGV $$", "smoke_crashed"), ("exec sleep 30", "smoke_timeout")])
def test_b09_b14_smoke_child_crash_or_hang_parent_lives(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                        bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                        body: str, reason: str) -> None:
    sync = edge(hub, tmp_path / "state", clock, smoke_in_subprocess=True, smoke_timeout_s=0.5)
    sync.updater.config = dataclasses.replace(sync.updater.config, smoke_in_subprocess=False)
    sync.poll_once()
    sync.updater.config = dataclasses.replace(sync.updater.config, smoke_in_subprocess=True)
    hub.publish(bundles["v2"])
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, body))
    t0 = time.monotonic()
    sync.poll_once()
    assert time.monotonic() - t0 < 10.0
    s = sync.status()
    assert s["last_update_error"]["reason"] == reason and s["model_version"] == "v1"
    assert staged(tmp_path / "state") == []
    sync.close(0)
