from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from sync.helpers import ADMIN, bundle, new_hub

from edgerec_sdk.cli import main
from edgerec_sdk.hub import serve_in_thread
from edgerec_sdk.hub.cli import parse_since
from edgerec_sdk.sync import protocol


def test_publish_channel_set_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    app = new_hub(tmp_path / "hub")
    with serve_in_thread(app) as hub:
        b1 = bundle(tmp_path, "v1", key=None)
        assert main(["publish", str(b1), "--hub", hub.url, "--token", ADMIN, "--channel", "stable",
                     "--signing-key", "sk"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["version"] == "v1" and out["channel"]["version"] == "v1"
        assert app.storage.get_bundle("v1").signature is not None  # type: ignore[union-attr]
        monkeypatch.setenv("EDGEREC_ADMIN_TOKEN", ADMIN)
        assert main(["publish", str(bundle(tmp_path, "v2", seed=1)), "--hub", hub.url]) == 0
        capsys.readouterr()
        assert main(["channel", "set", "stable", "v2", "--rollout", "25", "--hub", hub.url]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out == {"channel": "stable", "version": "v1", "candidate": "v2", "rollout_percent": 25.0}
        assert main(["channel", "set", "stable", "v2", "--hub", hub.url, "--token", "wrong"]) == 2
    events = [orjson.dumps({"event_id": f"e{i}", "user": "p", "item": f"i{i}", "type": "click", "ts": 100 + i})
              for i in range(3)]
    app.storage.insert_events("edge", "b", [orjson.loads(e) for e in events])
    out_file = tmp_path / "events.csv"
    assert main(["hub", "export-events", "--root", str(tmp_path / "hub"), "--since", "101",
                 "--out", str(out_file)]) == 0
    assert out_file.read_text() == "user,item,type,timestamp\np,i1,click,101\np,i2,click,102\n"
    assert protocol.EVENTS_PATH == "/v1/events"


def test_parse_since() -> None:
    assert parse_since("1700000000") == 1_700_000_000.0
    assert parse_since("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert parse_since("2023-11-14T22:13:20") == 1_700_000_000.0


def test_publish_refuses_remote_http(tmp_path: Path) -> None:
    assert main(["publish", str(bundle(tmp_path, "v1")), "--hub", "http://hub.example.com", "--token", "t"]) == 2
