from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from sync.helpers import ADMIN, bundle, new_hub, rewrite

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
        assert out == {"channel": "stable", "version": "v1", "candidate": "v2", "rollout_percent": 25.0,
                       "serving": {"v1": 75.0, "v2": 25.0}}
        assert main(["channel", "set", "stable", "v2", "--hub", hub.url, "--token", "wrong"]) == 2
    events = [orjson.dumps({"event_id": f"e{i}", "user": "p", "item": f"i{i}", "type": "click", "ts": 100 + i})
              for i in range(3)]
    app.storage.insert_events("edge", "b", [orjson.loads(e) for e in events])
    out_file = tmp_path / "events.csv"
    assert main(["hub", "export-events", "--root", str(tmp_path / "hub"), "--since", "101",
                 "--out", str(out_file)]) == 0
    assert out_file.read_text() == ("user,item,type,timestamp,value,model_version,rec_id,position\n"
                                    "p,i1,click,101,,,,\np,i2,click,102,,,,\n")
    assert protocol.EVENTS_PATH == "/v1/events"


def test_publish_restamp_is_a_new_signed_version_with_the_same_files(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from edgerec_sdk.bundle import Manifest
    from edgerec_sdk.bundle.verify import check_signature

    app = new_hub(tmp_path / "hub")
    b1 = rewrite(bundle(tmp_path, "v1", key=None), lambda d: d.update(created_at="2020-01-01T00:00:00Z"), key=None)
    with serve_in_thread(app) as hub:
        base = ["--hub", hub.url, "--token", ADMIN, "--channel", "stable", "--signing-key", "sk"]
        assert main(["publish", str(b1), *base]) == 0
        assert main(["publish", str(bundle(tmp_path, "v2", seed=1)), *base]) == 0
        capsys.readouterr()
        assert main(["publish", str(b1), "--restamp", "--restamp-out", str(tmp_path / "kept"), *base]) == 0
        out = json.loads(capsys.readouterr().out)
        assert main(["publish", str(b1), "--restamp", "--hub", hub.url, "--token", ADMIN]) == 2  # needs a key
    version = out["version"]
    assert version.startswith("v1-restamp-") and out["channel"]["version"] == version
    rec = app.storage.get_bundle(version)
    assert rec is not None and rec.signature is not None
    check_signature(rec.manifest, rec.signature.encode(), b"sk", source="hub")
    new, old = Manifest.from_bytes(rec.manifest), Manifest.from_bytes((b1 / "manifest.json").read_bytes())
    assert new.files == old.files and new.extra["restamped_from"]["model_version"] == "v1"
    assert (tmp_path / "kept" / "manifest.json").read_bytes() == rec.manifest


def test_parse_since() -> None:
    assert parse_since("1700000000") == 1_700_000_000.0
    assert parse_since("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert parse_since("2023-11-14T22:13:20") == 1_700_000_000.0


def test_publish_refuses_remote_http(tmp_path: Path) -> None:
    assert main(["publish", str(bundle(tmp_path, "v1")), "--hub", "http://hub.example.com", "--token", "t"]) == 2


def test_cli_shows_the_hub_error_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = new_hub(tmp_path / "hub")
    with serve_in_thread(app) as hub:
        assert main(["channel", "set", "stable", "v999", "--hub", hub.url, "--token", ADMIN]) == 2
    err = capsys.readouterr().err
    assert "404" in err and "no such bundle version" in err  # before: only "404 error for .../channels/stable"


def test_cli_validates_rollout_locally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # no hub listens at this URL: each refusal happens before any request
    for bad in ("nan", "-5", "101", "inf", "half"):
        with pytest.raises(SystemExit) as exc:
            main(["channel", "set", "stable", "v1", "--rollout", bad, "--hub", "http://127.0.0.1:9", "--token", "t"])
        assert exc.value.code == 2
        assert "within [0, 100]" in capsys.readouterr().err
    b1 = bundle(tmp_path, "v1")
    assert main(["publish", str(b1), "--rollout", "50", "--hub", "http://127.0.0.1:9", "--token", "t"]) == 2
    assert "--rollout goes with --channel" in capsys.readouterr().err


def test_channel_moved_back_cli_prints_the_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = new_hub(tmp_path / "hub")
    b1 = rewrite(bundle(tmp_path, "v1", key=None), lambda d: d.update(created_at="2020-01-01T00:00:00Z"), key=None)
    with serve_in_thread(app) as hub:
        base = ["--hub", hub.url, "--token", ADMIN]
        assert main(["publish", str(b1), "--channel", "stable", *base]) == 0
        assert main(["publish", str(bundle(tmp_path, "v2", seed=1, key=None)), "--channel", "stable", *base]) == 0
        capsys.readouterr()
        assert main(["channel", "set", "stable", "v1", *base]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "rollback_refused" in err and "--restamp" in err


def test_version_flag_and_hub_serve_help(capsys: pytest.CaptureFixture[str]) -> None:
    import edgerec_sdk

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and edgerec_sdk.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["hub", "serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "address to listen on" in out and "(default: 127.0.0.1)" in out and "(default: 8080)" in out
    assert "--idle-timeout" in out and "(default: 30)" in out
