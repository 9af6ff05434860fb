"""PostgreSQL as the hub's storage, beyond the shared contract: the hub app, CLI and environment choose it,
several hubs share one database, trouble answers 503, and an edge's events land exactly once."""

from __future__ import annotations

import gc
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from acceptance.support import connect
from sync.helpers import ADMIN, EDGE, bundle, publish

from edgerec_sdk.cli import main
from edgerec_sdk.hub import HubApp, app_from_env
from edgerec_sdk.hub.storage import StorageBusyError, open_storage
from edgerec_sdk.sync import protocol


def hub(root: Path, db: str | None) -> HubApp:
    return HubApp(root, admin_tokens=[ADMIN], edge_tokens=[EDGE], db=db)


def client(app: HubApp) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://hub",
                        headers={"Authorization": f"Bearer {EDGE}"})


def post(app: HubApp, ids: list[str], batch_id: str = "b") -> dict[str, Any]:
    events = [orjson.dumps({"event_id": i, "user": "p" * 32, "item": "it", "type": "click"}) for i in ids]
    body, headers = protocol.encode_batch(edge_id="edge-1", batch_id=batch_id, events=events)
    r = client(app).post("/v1/events", content=body, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_unreachable_database_is_busy_and_the_cli_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'edgerec-sdk[hub]')")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"postgresql://edgerec:secret-pw@127.0.0.1:{s.getsockname()[1]}/edgerec"
    with pytest.raises(StorageBusyError, match="postgresql"):
        open_storage(url, connect_timeout_s=2.0)
    assert main(["hub", "export-events", "--db", url]) == 2
    err = capsys.readouterr().err
    assert "postgresql" in err and "secret-pw" not in err


def test_app_answers_503_when_storage_is_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = hub(tmp_path / "hub", None)

    def busy(*_: object) -> None:
        raise StorageBusyError("sqlite: database is locked")

    monkeypatch.setattr(app.storage, "status", busy)
    monkeypatch.setattr(app.storage, "insert_events", busy)
    r = client(app).get("/v1/status")
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    body, headers = protocol.encode_batch(edge_id="e", batch_id="b", events=[orjson.dumps(
        {"event_id": "a", "user": "u", "item": "i", "type": "click"})])
    r = client(app).post("/v1/events", content=body, headers=headers)
    assert r.status_code == 503 and protocol.is_retryable(r.status_code)
    app.close()


def test_pool_exhausted_is_busy_not_a_hang(pg_url: str) -> None:
    storage = open_storage(pg_url, max_connections=1, pool_timeout_s=0.05)
    with storage._read(), pytest.raises(StorageBusyError, match="busy"):
        storage.count_events()
    assert storage.count_events() == 0  # the connection went back to the pool
    storage.close()
    with pytest.raises(StorageBusyError, match="closed"):
        storage.count_events()


def test_forked_child_opens_its_own_connections(pg_url: str) -> None:
    storage = open_storage(pg_url)

    def backend_pid() -> int:
        with storage._read() as conn:
            return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])

    parent_pid = backend_pid()  # one idle pooled connection now
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: its own session, and closing or collecting never ends the parent's
        code = 1
        try:
            ok = backend_pid() != parent_pid and storage.insert_events("child", "b", [
                {"event_id": "child-1", "user": "u", "item": "i", "type": "click"}]).accepted == ("child-1",)
            storage.close()
            gc.collect()
            os.write(w, b"1" if ok else b"0")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    verdict = os.read(r, 4)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert verdict == b"1" and status == 0
    assert backend_pid() == parent_pid and storage.event_ids() == ["child-1"]
    storage.close()


def test_two_hubs_share_one_database(pg_url: str, tmp_path: Path) -> None:
    a, b = hub(tmp_path / "root", pg_url), hub(tmp_path / "root", pg_url)  # two processes behind a balancer
    publish(a, bundle(tmp_path, "v1"))
    assert b.storage.get_channel("stable").version == "v1"  # type: ignore[union-attr]
    assert post(a, ["e1", "e2"])["accepted"] == 2
    r = post(b, ["e2", "e3"], batch_id="b2")  # the same batch resent to the other hub: counted once
    assert r["accepted"] == 1 and r["duplicate_ids"] == ["e2"]
    assert a.storage.status() == b.storage.status()
    assert a.storage.event_ids() == ["e1", "e2", "e3"]
    a.close()
    b.close()


def test_env_and_cli_choose_postgres(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    app = app_from_env({"EDGEREC_HUB_ROOT": str(tmp_path / "hub"), "EDGEREC_ADMIN_TOKEN": ADMIN,
                        "EDGEREC_HUB_DB": pg_url})
    assert app.storage.kind == "postgresql"
    app.storage.insert_events("e", "b", [{"event_id": f"e{i}", "user": "u", "item": f"i{i}", "type": "click",
                                          "ts": 100 + i} for i in range(3)])
    app.close()
    served: list[HubApp] = []
    monkeypatch.setattr("edgerec_sdk.hub.server.serve_forever", lambda app, **kw: served.append(app))
    assert main(["hub", "serve", "--root", str(tmp_path / "hub"), "--db", pg_url, "--admin-token", ADMIN]) == 0
    assert served[0].storage.kind == "postgresql" and served[0].storage.count_events() == 3
    assert not (tmp_path / "hub" / "hub.sqlite3").exists()
    served[0].close()
    assert "(postgresql)" in capsys.readouterr().err
    out = tmp_path / "events.csv"
    assert main(["hub", "export-events", "--db", pg_url, "--since", "101", "--out", str(out)]) == 0
    assert out.read_text() == ("user,item,type,timestamp,value,model_version,rec_id,position\n"
                               "u,i1,click,101,,,,\nu,i2,click,102,,,,\n")
    monkeypatch.setenv("EDGEREC_HUB_DB", pg_url)
    assert main(["hub", "export-events", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 4


class LosesFirstAck(httpx.BaseTransport):
    """The hub commits the first event batch, but its answer never reaches the edge (the edge resends)."""

    def __init__(self, app: HubApp) -> None:
        self.inner = httpx.WSGITransport(app=app)
        self.answers: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path != protocol.EVENTS_PATH:
            return response
        response.read()
        self.answers.append(response.json())
        if len(self.answers) == 1:
            raise httpx.ReadError("connection reset after the hub committed", request=request)
        return response


def test_edge_events_reach_a_postgres_hub_exactly_once(pg_url: str, tmp_path: Path) -> None:
    app = hub(tmp_path / "hub", pg_url)
    publish(app, bundle(tmp_path, "v1"))
    transport = LosesFirstAck(app)
    rec = connect("http://127.0.0.1:1", tmp_path / "edge", transport=transport, start=False)
    rec.poll_once()
    assert rec.status().model_version == "v1"
    for i in range(60):
        r = rec.recommend(f"user-{i % 6}", k=3)
        rec.feedback({"user": f"user-{i % 6}", "item": r.item_ids[0], "type": "click" if i % 3 else "purchase",
                      "rec_id": r.rec_id, "event_id": f"ev-{i:03d}"})
    assert rec.flush(20.0)
    assert len(transport.answers) >= 2 and sum(a["duplicates"] for a in transport.answers) >= 1
    assert app.storage.count_events() == 60 and app.storage.event_ids() == [f"ev-{i:03d}" for i in range(60)]
    assert app.storage.status()["per_model_version"] == {"v1": {"events": 60, "clicks": 40, "purchases": 20}}
    rec.forget("user-0")
    assert rec.flush(20.0)
    assert app.storage.count_events() == 50 and len(app.storage.users()) == 5
    assert [n for _, _, n in app.storage.tombstones()] == [10]
    rec.close(5.0)
    app.close()
