from __future__ import annotations

import gzip
import inspect
import logging
import random
from pathlib import Path

import httpx
import pytest

from edgerec_sdk.errors import ConfigError
from edgerec_sdk.hub import HubApp
from edgerec_sdk.sync import EdgeSync, NullSync, OutboxConfig, SyncConfig

from .fakes import FakeClock
from .helpers import EDGE, KEY, bundle, new_hub, publish

RAW_USER = "alice@example.com"


class Recording(httpx.BaseTransport):
    """Passes requests to the real hub app and keeps every outbound body and header."""

    def __init__(self, app: HubApp) -> None:
        self.inner = httpx.WSGITransport(app=app)
        self.sent: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.sent.append(body + str(request.url).encode() + str(dict(request.headers)).encode())
        return self.inner.handle_request(request)


def config(tmp_path: Path, **kw: object) -> SyncConfig:
    kw.setdefault("state_dir", str(tmp_path / "state"))
    return SyncConfig(hub_url="http://127.0.0.1:9", token=EDGE, user_id_key="uid-key", signing_key=KEY.decode(),
                      smoke_in_subprocess=False, poll_interval_s=30.0, **kw)  # type: ignore[arg-type]


@pytest.fixture
def app(tmp_path: Path) -> HubApp:
    return new_hub(tmp_path / "hub")


def event(i: int, user: str = RAW_USER) -> dict[str, object]:
    return {"user": user, "item": f"item-{i}", "type": "click", "ts": 1.7e9 + i, "event_id": f"ev-{i}",
            "model_version": "v1", "query": "private search text"}


def test_feedback_reaches_hub_pseudonymised_f05_f06(app: HubApp, tmp_path: Path, clock: FakeClock,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    transport = Recording(app)
    sync = EdgeSync(config(tmp_path), transport=transport, clock=clock, rng=random.Random(0))
    with caplog.at_level(logging.DEBUG):
        for i in range(20):
            assert sync.put(event(i)) == "appended"  # durable in the write-ahead log (appendlog.py)
        assert sync.flush(timeout_s=5.0)
    assert app.storage.count_events() == 20
    users = {r[0] for r in app.storage._conn().execute("SELECT DISTINCT user FROM events")}
    assert users == {sync.pseudonym(RAW_USER)} and len(next(iter(users))) == 32
    blob = b"".join(transport.sent)
    assert RAW_USER.encode() not in blob and b"private search text" not in blob
    assert RAW_USER not in caplog.text and "uid-key" not in caplog.text and EDGE not in caplog.text
    s = sync.status()
    o = s["outbox"]
    assert o["accepted"] == o["delivered"] == 20 and o["pending"] == 0 and s["outbox_durable"]
    sync.close()


def test_f07_forget_erases_local_and_hub(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    sync = EdgeSync(config(tmp_path), transport=httpx.WSGITransport(app=app), clock=clock)
    sync.put(event(1))
    assert sync.flush(5.0)
    sync.put(event(2))
    sync.put(event(3, user="bob"))
    assert sync.forget(RAW_USER) == 1  # the pending one, at once
    assert sync.flush(5.0)
    assert app.storage.event_ids() == ["ev-3"]  # the delivered one erased by the tombstone
    o = sync.status()["outbox"]
    assert o["accepted"] == o["delivered"] + o["pending"] + o["dropped_forgotten"]
    sync.close()


def test_d09_close_is_idempotent_and_refuses_after(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    sync = EdgeSync(config(tmp_path), transport=httpx.WSGITransport(app=app), clock=clock)
    sync.put(event(1))
    assert sync.close(timeout_s=5.0) is True
    assert sync.close(timeout_s=5.0) is True
    assert sync.put(event(2)) is None
    assert sync.status()["feedback_after_close"] == 1
    sync.start()
    assert not sync.uploader.task.started and not sync.updater.task.started


def test_d07_close_with_hub_down_keeps_rows(tmp_path: Path, clock: FakeClock) -> None:
    def down(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down")

    sync = EdgeSync(config(tmp_path), transport=httpx.MockTransport(down), clock=clock)
    for i in range(3):
        sync.put(event(i))
    assert sync.close(timeout_s=2.0) is False
    again = EdgeSync(config(tmp_path), transport=httpx.MockTransport(down), clock=clock)
    assert again.status()["outbox"]["pending"] == 3
    again.close(timeout_s=0.0)


def test_connect_flow_serves_update(app: HubApp, tmp_path: Path, clock: FakeClock) -> None:
    publish(app, bundle(tmp_path, "v1"))
    got: list[str] = []
    sync = EdgeSync(config(tmp_path), transport=httpx.WSGITransport(app=app), clock=clock,
                    on_bundle=lambda b: got.append(b.model_version))
    assert sync.load_last_good() is None
    sync.poll_once()
    assert got == ["v1"] and sync.status()["model_version"] == "v1"
    sync.close()
    again = EdgeSync(config(tmp_path), transport=httpx.WSGITransport(app=app), clock=clock)
    b = again.load_last_good()
    assert b is not None and b.model_version == "v1"
    again.close()


def test_c08_rollout_assignment_sticky(tmp_path: Path) -> None:
    a = EdgeSync(config(tmp_path, outbox=OutboxConfig(path=":memory:")))
    b = EdgeSync(config(tmp_path / "other"))
    users = [f"user-{i}" for i in range(2000)]
    picks = [a.in_rollout(u, 10.0) for u in users]
    assert picks == [b.in_rollout(u, 10.0) for u in users]
    assert 150 < sum(picks) < 250
    a.close(0)
    b.close(0)


def test_f02_http_refused_unless_loopback() -> None:
    with pytest.raises(ConfigError):
        SyncConfig(hub_url="http://hub.example.com", token="t", signing_key="k")
    SyncConfig(hub_url="http://hub.example.com", token="t", signing_key="k", allow_insecure_http=True)
    SyncConfig(hub_url="http://[::1]:8080", token="t", signing_key="k")
    with pytest.raises(ConfigError):
        SyncConfig(hub_url="https://hub", token="t")  # no signing key, not explicitly unsigned


def test_f03_secrets_not_in_repr(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    text = repr(cfg) + repr(EdgeSync(cfg))
    assert "uid-key" not in text and EDGE not in text and KEY.decode() not in text


def test_user_id_key_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        EdgeSync(SyncConfig(hub_url="https://hub", token="t", signing_key="k", state_dir=str(tmp_path)))


def test_d16_state_dir_writable_by_others_is_memory_only(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    sync = EdgeSync(config(tmp_path, state_dir=str(shared)))
    assert not sync.state_dir_safe and sync.load_last_good() is None
    assert sync.put(event(1)) == "spilled" and not sync.status()["outbox_durable"]
    assert not (shared / "outbox.sqlite3").exists()
    sync.close(0)


def test_null_sync_has_the_same_methods() -> None:
    public = {n for n, _ in inspect.getmembers(EdgeSync, inspect.isfunction) if not n.startswith("_")}
    assert public <= {n for n in dir(NullSync) if not n.startswith("_")}
    n = NullSync()
    assert n.flush(1.0) and n.close() and n.put({"user": "u"}) is None and n.status() == {}
