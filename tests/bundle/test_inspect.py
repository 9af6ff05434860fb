from __future__ import annotations

from pathlib import Path

import orjson

from edgerec_sdk.bundle import inspect_bundle
from edgerec_sdk.testing import make_bundle

KEY = b"inspect-key"


def test_inspect_ok(tmp_path: Path) -> None:
    path = make_bundle(tmp_path / "b", n_items=10, dim=4, signing_key=KEY)
    report = inspect_bundle(path, signing_key=KEY)
    assert report["ok"] is True and report["error"] is None and report["signature"] == "ok"
    assert report["manifest"]["n_items"] == 10 and report["manifest"]["vector_dtype"] == "int8"
    assert {v["status"] for v in report["files"].values()} == {"ok"}
    assert report["unlisted"] == []
    assert inspect_bundle(path)["signature"] == "present"
    assert inspect_bundle(path, signing_key=b"other")["signature"] == "bad"
    orjson.dumps(report)  # the CLI prints it as JSON


def test_inspect_verdicts_on_corrupt_bundle(tmp_path: Path) -> None:
    path = make_bundle(tmp_path / "b", n_items=10, dim=4, dtype="float32")
    (path / "popular.npy").unlink()
    with open(path / "catalog.json", "ab") as fp:
        fp.write(b"x")
    data = bytearray((path / "interest.onnx").read_bytes())
    data[-1] ^= 0xFF
    (path / "interest.onnx").write_bytes(bytes(data))
    (path / "stray.bin").write_bytes(b"?")
    report = inspect_bundle(path, signing_key=KEY)
    files = report["files"]
    assert report["ok"] is False and report["signature"] == "missing"
    assert files["popular.npy"]["status"] == "missing"
    assert files["catalog.json"]["status"] == "size mismatch"
    assert files["catalog.json"]["actual_size"] == files["catalog.json"]["size"] + 1
    assert files["interest.onnx"]["status"] == "sha256 mismatch"
    assert files["items.float32.npy"]["status"] == "ok"
    assert report["unlisted"] == ["stray.bin"]


def test_inspect_never_raises(tmp_path: Path) -> None:
    missing = inspect_bundle(tmp_path / "nope")
    assert missing["ok"] is False and "manifest missing" in missing["error"]
    path = make_bundle(tmp_path / "b", n_items=5, dim=4)
    (path / "manifest.json").write_bytes(b'{"format": "edgerec-bundle", "format_version": 7}')
    report = inspect_bundle(path)
    assert (
        report["ok"] is False and report["manifest"] is None and "unknown format_version" in report["error"]
    )
