"""Attacks on the updater that once got through (docs/reliability.md, section H), through the FakeHub."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import orjson
import pytest

from edgerec_sdk.sync import protocol
from edgerec_sdk.testing import FakeClock, FakeHub, Fault

from .conftest import edge, stamp


def staged(state: Path) -> list[str]:
    return [p.name for p in (state / "staging").rglob("*") if p.is_file()]


def test_interrupted_downloads_leave_no_staging_files(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                      bundles: dict[str, Path]) -> None:
    state = tmp_path / "state"
    sync = edge(hub, state, clock)
    sync.poll_once()
    hub.publish(bundles["v2"])
    # the first file arrives whole, the second fails: before, the first stayed in staging until a restart
    for failure in (Fault.http(503), Fault.http(404), Fault.http(500)):
        hub.inject("file", Fault(), failure)
        sync.poll_once()
        assert sync.status()["model_version"] == "v1"
        assert staged(state) == []
    # a reset mid-file keeps that one partial file for the Range resume (fault A05) ...
    hub.inject("file", Fault.reset(after_bytes=10))
    sync.poll_once()
    assert len(staged(state)) == 1
    # ... until the hub moves on to another version: the abandoned partial goes then, not at the next restart
    hub.publish(bundles["v3"])
    sync.poll_once()
    assert sync.status()["model_version"] == "v3"
    assert staged(state) == []
    sync.close(0)


class _HeaderAttack(httpx.BaseTransport):
    """Adds unsigned headers to every manifest answer of the wrapped hub."""

    def __init__(self, inner: httpx.BaseTransport, headers: dict[str, str]) -> None:
        self.inner, self.headers = inner, headers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if request.url.path.endswith("/manifest") and resp.status_code == 200:
            resp.headers.update(self.headers)
        return resp


@pytest.mark.parametrize("headers", [
    {protocol.CANDIDATE_HEADER: "../../x", protocol.ROLLOUT_HEADER: "50"},
    {protocol.CANDIDATE_HEADER: "v2", protocol.ROLLOUT_HEADER: "nan"},
    {protocol.CANDIDATE_HEADER: "v2", protocol.ROLLOUT_HEADER: "1e400"},
    {protocol.CANDIDATE_HEADER: "v2"},
])
def test_unsigned_hub_header_cannot_break_poll_once(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                    headers: dict[str, str]) -> None:
    state = tmp_path / "state"
    sync = edge(hub, state, clock)
    sync.poll_once()
    assert sync.status()["model_version"] == "v1"
    sync.updater.on_candidate = lambda bundle, percent: None  # follow rollouts, as a Recommender does
    sync.updater.client._transport = _HeaderAttack(hub, headers)
    sync.updater.client.postfork()  # rebuild the httpx client around the attacking transport
    sync.updater._etag = None
    assert sync.poll_once() > 0  # before: ValueError("not a valid path segment") out of poll_once
    s = sync.status()
    assert s["model_version"] == "v1" and s["candidate_version"] is None
    assert s["last_update_error"]["reason"] == "hub_protocol"
    assert "X-Edgerec-Rollout-" in s["last_update_error"]["message"]
    assert not (tmp_path / "x").exists() and not (state.parent / "x").exists()
    sync.close(0)


def test_no_exception_escapes_poll_once(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                        bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    sync = edge(hub, tmp_path / "state", clock)
    sync.poll_once()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug anywhere below the updater")

    monkeypatch.setattr(sync.updater, "_apply", broken)
    hub.publish(bundles["v2"])
    assert sync.poll_once() > 0
    assert sync.status()["last_update_error"]["reason"] == "internal_error"
    sync.close(0)


def test_manifest_from_the_future_cannot_lock_out_later_bundles(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                                bundles: dict[str, Path]) -> None:
    state = tmp_path / "state"
    sync = edge(hub, state, clock)
    sync.poll_once()
    future = stamp(shutil.copytree(bundles["v2"], tmp_path / "v2-2099"), "2099-01-01T00:00:00Z")
    hub.publish(future)
    sync.poll_once()
    s = sync.status()
    assert s["model_version"] == "v1" and s["last_update_error"]["reason"] == "from_the_future"
    hub.publish(bundles["v3"])  # a later, honest bundle: before, refused as older than the 2099 stamp
    sync.poll_once()
    assert sync.status()["model_version"] == "v3"
    sync.close(0)


def test_high_water_mark_from_the_future_is_ignored(hub: FakeHub, tmp_path: Path, clock: FakeClock,
                                                    bundles: dict[str, Path]) -> None:
    # what an older SDK left after accepting a 2099 manifest: the mark alone must not lock the edge out
    state = tmp_path / "state"
    (state / "high_water").mkdir(parents=True)
    (state / "high_water" / "stable.json").write_bytes(orjson.dumps(
        {"channel": "stable", "created_at": "2099-01-01T00:00:00Z", "model_version": "v9"}))
    sync = edge(hub, state, clock)
    sync.poll_once()
    assert sync.status()["model_version"] == "v1"
    hub.publish(bundles["v2"])
    sync.poll_once()
    assert sync.status()["model_version"] == "v2"
    mark = orjson.loads((state / "high_water" / "stable.json").read_bytes())
    assert mark["model_version"] == "v2"  # the mark is repaired by the next accepted bundle
    sync.close(0)
