from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgerec_sdk._impl import log as _log

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDGEREC_* or proxy variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if (name.startswith("EDGEREC_") and name != "EDGEREC_DATA_DIR") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name, raising=False)
    _log.reset_warnings()


def data_dir() -> Path:
    return Path(os.environ.get("EDGEREC_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def beauty_dir() -> Path:
    path = data_dir() / "amazon_beauty"
    if not (path / "Beauty.txt").exists():
        pytest.skip(f"Beauty data not found under {path}; set EDGEREC_DATA_DIR to the shared data folder")
    return path


# Every test module pytest collected in this session, recorded before ``-m`` deselects anything, so
# tests/test_collection.py can compare it with the test files on disk.
COLLECTED_FILES = pytest.StashKey[set[str]]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[COLLECTED_FILES] = {str(item.path) for item in items}
