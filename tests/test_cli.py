from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgerec_sdk.cli import main
from edgerec_sdk.testing import make_bundle

ROOT = Path(__file__).resolve().parents[1]


def test_demo_prints_personalised_results_that_change_after_feedback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--users", "2", "-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "recommended for you (personalized)" in out
    changed = re.search(r"(\d+) of 5 items changed after one click", out)
    assert changed and int(changed.group(1)) >= 1
    assert "degraded=0" in out
    # the demo bundle has a text tower: a search for two words of a purchased title, with and without history
    searches = re.findall(r"== (\S+) searches '([^']+)' \((\w+)\)", out)
    assert [(who, source) for who, _, source in searches] == [("shopper-1", "personalized"), ("a-new-visitor", "query")]


def test_inspect_ok_and_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path / "b", n_items=50, dim=8)
    assert main(["inspect", str(bundle), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    data = (bundle / "items.int8.npy").read_bytes()
    (bundle / "items.int8.npy").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert main(["inspect", str(bundle)]) == 1
    assert "sha256 mismatch" in capsys.readouterr().out


def test_missing_bundle_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--bundle", str(tmp_path / "nope")]) == 2
    assert "bundle directory not found" in capsys.readouterr().err


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    assert len(blocks) == 2, "the README gives exactly two commands for a fresh machine"
    test_command = blocks[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
