"""The README's test command collects every test file on disk.

pytest's default ``norecursedirs`` skips folders named ``build``, ``dist``, ``venv`` and others without a word;
a model-building test folder once went unrun in CI that way. This test fails when any ``tests/**/test_*.py``
is missing from the session, whatever the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import COLLECTED_FILES  # tests/ is on sys.path as the rootdir conftest's folder

TESTS = Path(__file__).resolve().parent


def _whole_suite(config: pytest.Config) -> bool:
    # Only a whole-suite run (the README's command: no file arguments) can be compared with the disk.
    return [Path(a).resolve() for a in config.args] in ([TESTS], [TESTS.parent])


def test_every_test_file_on_disk_is_collected(request: pytest.FixtureRequest) -> None:
    config = request.config
    if not _whole_suite(config):
        pytest.skip("run the whole suite (`python -m pytest`) to compare collection with the disk")
    assert _missing(TESTS, config.stash[COLLECTED_FILES]) == []


def _missing(root: Path, collected: set[str]) -> list[str]:
    on_disk = {str(p) for p in root.rglob("test_*.py") if ".pytest_cache" not in p.parts}
    return sorted(on_disk - collected)


def test_the_comparison_sees_a_hidden_build_folder(pytester: pytest.Pytester) -> None:
    """The comparison catches the old failure: pytest skips a ``build`` folder by default, and it is named."""
    pytester.makepyfile(**{"build/test_hidden": "def test_x():\n    pass\n", "test_seen": "def test_y():\n    pass\n"})
    result = pytester.runpytest("--collect-only", "-q")
    collected = {str(pytester.path / line.split("::")[0]) for line in result.outlines if "::" in line}
    assert collected == {str(pytester.path / "test_seen.py")}
    assert _missing(pytester.path, collected) == [str(pytester.path / "build" / "test_hidden.py")]
