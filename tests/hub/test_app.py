from __future__ import annotations

import gzip
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from edgerec_sdk.hub import HubApp
from edgerec_sdk.hub.publish import make_tar
from edgerec_sdk.sync import protocol
from edgerec_sdk.testing import make_tiny_bundle

ADMIN, EDGE = "admin-tok", "edge-tok"


@pytest.fixture
def app(tmp_path: Path, hub_db: str | None) -> Iterator[HubApp]:
    """The hub over each storage backend (SQLite under its root, PostgreSQL where a server can be started)."""
    hub = HubApp(tmp_path / "hub", admin_tokens=[ADMIN], edge_tokens=[EDGE], max_body_bytes=20_000,
                 max_batch_bytes=200_000, db=hub_db)
    yield hub
    hub.close()


def client(app: HubApp, token: str | None = EDGE) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://hub", headers=headers)


def batch(ids: list[str], *, batch_id: str = "b1", **extra: object) -> tuple[bytes, dict[str, str]]:
    events = [orjson.dumps({"event_id": i, "user": "p" * 32, "item": "it", "type": "click", **extra}) for i in ids]
    return protocol.encode_batch(edge_id="edge-1", batch_id=batch_id, events=events)


def test_healthz_needs_no_token(app: HubApp) -> None:
    assert client(app, None).get("/healthz").status_code == 200


def test_f09_unknown_token_401_even_for_unknown_channel(app: HubApp) -> None:
    c = client(app, "wrong")
    assert c.get("/v1/channels/stable/manifest").status_code == 401
    assert c.get("/v1/channels/nope/manifest").status_code == 401
    assert client(app, None).post("/v1/events", content=b"{}").status_code == 401


def test_f09_edge_token_on_admin_calls_403(app: HubApp) -> None:
    c = client(app)
    assert c.post("/v1/bundles", content=b"x").status_code == 403
    assert c.put("/v1/channels/stable", content=b"{}").status_code == 403


def test_events_dedupe_on_event_id(app: HubApp) -> None:
    c = client(app)
    body, headers = batch(["a", "b"])
    r = c.post("/v1/events", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["accepted"] == 2
    body, headers = batch(["b", "c"], batch_id="b2")
    r = c.post("/v1/events", content=body, headers=headers).json()
    assert r["accepted"] == 1 and r["duplicate_ids"] == ["b"]
    assert app.storage.event_ids() == ["a", "b", "c"]


def test_a13_invalid_events_rejected_per_event(app: HubApp) -> None:
    events = [orjson.dumps({"event_id": "ok", "user": "u", "item": "i", "type": "click"}),
              orjson.dumps({"event_id": "bad", "user": "u", "item": "i", "type": "teleport"})]
    body, headers = protocol.encode_batch(edge_id="e", batch_id="b", events=events)
    r = client(app).post("/v1/events", content=body, headers=headers).json()
    assert r["accepted"] == 1 and r["rejected"] == [{"event_id": "bad", "reason": "bad_type"}]


def test_a14_body_over_cap_413(app: HubApp) -> None:
    big = [orjson.dumps({"event_id": f"e{i}", "user": "u", "item": "x" * 200, "type": "view"}) for i in range(200)]
    body, headers = protocol.encode_batch(edge_id="e", batch_id="b", events=big, compress=False)
    assert client(app).post("/v1/events", content=body, headers=headers).status_code == 413


def test_gzip_bomb_413(app: HubApp) -> None:
    bomb = gzip.compress(b'{"edge_id":"e","batch_id":"b","events":[' + b" " * 1_000_000 + b"]}")
    r = client(app).post("/v1/events", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413


def test_malformed_batch_400(app: HubApp) -> None:
    assert client(app).post("/v1/events", content=b"[1,2]").status_code == 400


def test_429_when_busy(app: HubApp) -> None:
    for _ in range(8):
        app._batch_slots.acquire()
    r = client(app).post("/v1/events", content=batch(["a"])[0], headers=batch(["a"])[1])
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"


def test_f07_tombstone_erases_user(app: HubApp) -> None:
    c = client(app)
    c.post("/v1/events", content=batch(["a", "b"])[0], headers=batch(["a", "b"])[1])
    tomb = orjson.dumps({"event_id": "t1", "user": "p" * 32, "type": "forget"})
    body, headers = protocol.encode_batch(edge_id="e", batch_id="bt", events=[tomb])
    assert c.post("/v1/events", content=body, headers=headers).json()["accepted"] == 1
    assert app.storage.count_events() == 0
    assert c.get("/v1/status").json()["tombstones"] == 1


def publish(app: HubApp, bundle: Path, channel: str | None = "stable", signature: str | None = None) -> httpx.Response:
    url = "/v1/bundles" + (f"?channel={channel}" if channel else "")
    return client(app, ADMIN).post(url, content=make_tar(bundle, signature=signature))


def test_publish_manifest_etag_and_files(app: HubApp, tmp_path: Path) -> None:
    b = make_tiny_bundle(tmp_path / "b1", model_version="v1", signing_key=b"k")
    r = publish(app, b)
    assert r.status_code == 201, r.text
    c = client(app)
    m = c.get("/v1/channels/stable/manifest")
    assert m.status_code == 200 and m.content == (b / "manifest.json").read_bytes()
    assert m.headers["X-Edgerec-Signature"] == (b / "signature").read_text().strip()
    assert c.get("/v1/channels/stable/manifest", headers={"If-None-Match": m.headers["ETag"]}).status_code == 304
    data = (b / "popular.npy").read_bytes()
    f = c.get("/v1/bundles/v1/popular.npy")
    assert f.content == data and f.headers["Content-Length"] == str(len(data))
    part = c.get("/v1/bundles/v1/popular.npy", headers={"Range": "bytes=10-"})
    assert part.status_code == 206 and part.content == data[10:]
    assert part.headers["Content-Range"] == f"bytes 10-{len(data) - 1}/{len(data)}"
    assert c.get("/v1/bundles/v1/..%2Fhub.sqlite3").status_code == 404
    assert c.get("/v1/bundles/v1/hub.sqlite3").status_code == 404
    assert publish(app, b).status_code == 200  # idempotent


def test_publish_refuses_tampered_tar(app: HubApp, tmp_path: Path) -> None:
    b = make_tiny_bundle(tmp_path / "b1", model_version="v1")
    (b / "popular.npy").write_bytes((b / "popular.npy").read_bytes()[:-1] + b"\x07")
    r = publish(app, b)
    assert r.status_code == 400 and "sha256" in r.text


def test_publish_refuses_a_created_at_edges_cannot_order(app: HubApp, tmp_path: Path) -> None:
    import dataclasses

    from edgerec_sdk.bundle import Manifest

    b = make_tiny_bundle(tmp_path / "b1", model_version="v1")
    m = Manifest.from_bytes((b / "manifest.json").read_bytes())
    (b / "manifest.json").write_bytes(dataclasses.replace(m, created_at="last tuesday").to_bytes())
    r = publish(app, b)
    assert r.status_code == 400 and "created_at" in r.text


def test_publish_refuses_path_members(app: HubApp) -> None:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    r = client(app, ADMIN).post("/v1/bundles", content=buf.getvalue())
    assert r.status_code == 400


def test_channel_rollout_and_status_per_version(app: HubApp, tmp_path: Path) -> None:
    publish(app, make_tiny_bundle(tmp_path / "b1", model_version="v1"))
    publish(app, make_tiny_bundle(tmp_path / "b2", model_version="v2", seed=1), channel=None)
    admin = client(app, ADMIN)
    r = admin.put("/v1/channels/stable", json={"version": "v2", "rollout_percent": 10})
    assert r.json() == {"channel": "stable", "version": "v1", "candidate": "v2", "rollout_percent": 10.0,
                        "serving": {"v1": 90.0, "v2": 10.0}}
    m = client(app).get("/v1/channels/stable/manifest")
    assert m.headers["X-Edgerec-Rollout-Version"] == "v2" and m.headers["X-Edgerec-Rollout-Percent"] == "10"
    assert admin.put("/v1/channels/stable", json={"version": "nope"}).status_code == 404
    assert admin.put("/v1/channels/stable", json={"version": "v2"}).json()["version"] == "v2"
    events = [orjson.dumps({"event_id": f"e{i}", "user": "u", "item": "i", "type": t, "model_version": mv})
              for i, (t, mv) in enumerate([("click", "v1"), ("purchase", "v1"), ("click", "v2")])]
    body, headers = protocol.encode_batch(edge_id="e", batch_id="b", events=events)
    client(app).post("/v1/events", content=body, headers=headers)
    per = client(app).get("/v1/status").json()["per_model_version"]
    assert per == {"v1": {"events": 2, "clicks": 1, "purchases": 1}, "v2": {"events": 1, "clicks": 1, "purchases": 0}}


def test_export_events_csv(app: HubApp) -> None:
    events = [orjson.dumps({"event_id": f"e{i}", "user": "u", "item": f"i{i}", "type": "click", "ts": 100 + i})
              for i in range(3)]
    body, headers = protocol.encode_batch(edge_id="e", batch_id="b", events=events)
    client(app).post("/v1/events", content=body, headers=headers)
    out = io.StringIO()
    assert app.storage.export_events(out, since_ts=101) == 2
    head = "user,item,type,timestamp,value,model_version,rec_id,position\n"
    assert out.getvalue() == head + "u,i1,click,101,,,,\nu,i2,click,102,,,,\n"
    shown = {"event_id": "imp", "user": "u", "item": "a", "type": "impression", "ts": 200, "rec_id": "r1",
             "model_version": "v1", "items": ["a", "b"], "positions": [0, 1]}
    more = [shown, {"event_id": "c", "user": "u", "item": "b", "type": "click", "ts": 201, "rec_id": "r1",
                    "model_version": "v1", "position": 1},
            {"event_id": "r", "user": "u", "item": "b", "type": "rating", "ts": 202, "value": 4}]
    body, headers = protocol.encode_batch(edge_id="e", batch_id="b2", events=[orjson.dumps(e) for e in more])
    assert client(app).post("/v1/events", content=body, headers=headers).json()["accepted"] == 3
    out = io.StringIO()
    assert app.storage.export_events(out, since_ts=200) == 4  # the impression row: one line per item shown
    assert out.getvalue() == head + ("u,a,impression,200,,v1,r1,0\nu,b,impression,200,,v1,r1,1\n"
                                     "u,b,click,201,,v1,r1,1\nu,b,rating,202,4.0,,,\n")


def test_promoted_channel_reads_as_everyone_not_nobody(app: HubApp, tmp_path: Path) -> None:
    publish(app, make_tiny_bundle(tmp_path / "b1", model_version="v1"))
    publish(app, make_tiny_bundle(tmp_path / "b2", model_version="v2", seed=1), channel=None)
    admin = client(app, ADMIN)
    admin.put("/v1/channels/stable", json={"version": "v2", "rollout_percent": 10})
    promoted = admin.put("/v1/channels/stable", json={"version": "v2"}).json()
    # before: {"version": "v2", "candidate": null, "rollout_percent": 0.0}, read as "v2 on nobody"
    assert promoted == {"channel": "stable", "version": "v2", "candidate": None, "rollout_percent": None,
                        "serving": {"v2": 100.0}}
    assert admin.get("/v1/channels/stable").json() == promoted


def _post(app: HubApp, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client(app).post("/v1/events", content=body, headers=headers)


def test_absurd_event_timestamps_refused_at_the_hub(app: HubApp) -> None:
    now = time.time()
    ids = ["past", "far", "huge", "ok", "tomorrow"]
    tss = [-1e18, now + 30 * 86400, 1e300, now, now + 86400]
    events = [orjson.dumps({"event_id": i, "user": "u", "item": "it", "type": "click", "ts": ts})
              for i, ts in zip(ids, tss, strict=True)]
    body, headers = protocol.encode_batch(edge_id="e", batch_id="b", events=events)
    r = _post(app, body, headers).json()
    assert {e["event_id"]: e["reason"] for e in r["rejected"]} == {"past": "bad_ts", "far": "bad_ts", "huge": "bad_ts"}
    assert r["accepted"] == 2 and app.storage.count_events() == 2


def test_lenient_batch_parsing_refused(app: HubApp) -> None:
    body, headers = batch(["a"])
    trailing = _post(app, body + gzip.compress(b'{"v":1,"edge_id":"x","batch_id":"y","events":[]}'), headers)
    assert trailing.status_code == 400 and "after the end of the gzip" in trailing.json()["error"]
    dup = b'{"v":1,"edge_id":"e","batch_id":"b","events":[{"event_id":"a","user":"u","user":"w","item":"i","type":"click"}]}'
    r = _post(app, dup, {"Content-Type": "application/json"})
    assert r.status_code == 400 and "duplicate JSON key 'user'" in r.json()["error"]
    for v in (b"2", b"true", b'"1"', b"null"):
        doc = b'{"v":' + v + b',"edge_id":"e","batch_id":"b","events":[]}'
        r = _post(app, doc, {"Content-Type": "application/json"})
        assert r.status_code == 400 and "protocol version" in r.json()["error"]
    nan = b'{"v":1,"edge_id":"e","batch_id":"b","events":[{"event_id":"a","user":"u","item":"i","type":"click","value":NaN}]}'
    assert _post(app, nan, {"Content-Type": "application/json"}).status_code == 400
    assert app.storage.count_events() == 0


def test_lenient_channel_requests_refused_with_the_right_reason(app: HubApp, tmp_path: Path) -> None:
    publish(app, make_tiny_bundle(tmp_path / "b1", model_version="v1"))
    admin = client(app, ADMIN)
    r = admin.put("/v1/channels/stable", json={"version": "v1", "rollout_percent": True})
    assert r.status_code == 400 and "rollout_percent" in r.json()["error"]
    r = admin.put("/v1/channels/stable", content=b'{"version":"v1","version":"v9"}')
    assert r.status_code == 400 and "duplicate JSON key" in r.json()["error"]
    r = admin.put("/v1/channels/bad..name!", json={"version": "v1"})
    assert r.status_code == 400 and "invalid channel name" in r.json()["error"]  # before: "body must be ..."
    for bad in ("nan", "-5", "101", "inf", "x"):
        r = admin.put("/v1/channels/stable", content=b'{"version":"v1","rollout_percent":%s}' % bad.encode())
        assert r.status_code == 400
    assert admin.get("/v1/channels/stable").json()["serving"] == {"v1": 100.0}


def test_publish_with_bad_rollout_refused_before_any_write(app: HubApp, tmp_path: Path) -> None:
    tar = make_tar(make_tiny_bundle(tmp_path / "b1", model_version="v1"))
    admin = client(app, ADMIN)
    for query in ("?channel=stable&rollout=nan", "?channel=stable&rollout=-5", "?channel=stable&rollout=1e9",
                  "?channel=bad!name", "?rollout=50"):
        r = admin.post("/v1/bundles" + query, content=tar)
        assert r.status_code == 400, query  # before: nan -> 500 after registering v1; -5 accepted
    assert app.storage.get_bundle("v1") is None and app.storage.get_channel("stable") is None
    bundles = app.root / "bundles"
    assert not bundles.exists() or not any(bundles.iterdir())
    assert admin.post("/v1/bundles?channel=stable&rollout=100", content=tar).status_code == 201


def test_channel_moved_back_to_an_older_version_warns(app: HubApp, tmp_path: Path) -> None:
    from sync.helpers import rewrite

    old = rewrite(make_tiny_bundle(tmp_path / "b1", model_version="v1"),
                  lambda d: d.update(created_at="2020-01-01T00:00:00Z"), key=None)
    publish(app, old)
    publish(app, make_tiny_bundle(tmp_path / "b2", model_version="v2", seed=1))
    r = client(app, ADMIN).put("/v1/channels/stable", json={"version": "v1"})
    assert r.status_code == 200
    warning = r.json()["warning"]
    assert "v1" in warning and "v2" in warning and "rollback_refused" in warning and "--restamp" in warning
    forward = client(app, ADMIN).put("/v1/channels/stable", json={"version": "v2"}).json()
    assert "warning" not in forward


def test_publish_refuses_a_manifest_from_the_future(app: HubApp, tmp_path: Path) -> None:
    from sync.helpers import rewrite

    future = rewrite(make_tiny_bundle(tmp_path / "b1", model_version="v1"),
                     lambda d: d.update(created_at="2099-01-01T00:00:00Z"), key=None)
    r = publish(app, future)
    assert r.status_code == 400 and "ahead of the hub's clock" in r.json()["error"]
    assert app.storage.get_bundle("v1") is None
