from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgerec_sdk import _log


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
