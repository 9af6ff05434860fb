"""The runtime is type-checked (mypy strict) and linted (ruff) as part of the test run, so CI catches drift."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_mypy_strict_on_the_runtime() -> None:
    pytest.importorskip("mypy")
    result = _run("mypy", "--no-incremental")
    assert result.returncode == 0, result.stdout[-4000:]


def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None:
        pytest.importorskip("ruff")
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout[-4000:]
