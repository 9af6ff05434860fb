"""Every ```python block in README.md and docs/*.md runs, in order, one namespace per file.

A block may opt out only with an HTML comment ``<!-- no-test -->`` on the line before its fence (for code that
needs a server or a path that cannot exist here). Blocks that need an optional framework skip the file, with the
reason, when the framework is not installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgerec_sdk import Recommender

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)
OPTIONAL = {"flask", "django", "redis"}


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, code, skipped) of each python block."""
    out = []
    for m in FENCE.finditer("\n" + text):
        line = text[: m.start("code") - 1].count("\n") + 1
        out.append((line, m.group("code"), m.group("before").strip() == "<!-- no-test -->"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(doc.read_text())
    if not blocks:
        pytest.skip("no python blocks")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": f"doc_{doc.stem}"}
    try:
        for line, code, skipped in blocks:
            if skipped:
                continue
            try:
                exec(compile(code, f"{doc.name}:{line}", "exec"), namespace)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] in OPTIONAL:
                    pytest.skip(f"{doc.name}:{line} needs {exc.name}, which is not installed")
                raise
    finally:
        for value in namespace.values():
            if isinstance(value, Recommender):
                value.close()


def test_skips_are_rare() -> None:
    skipped = [(d.name, line) for d in DOCS for line, _, skip in python_blocks(d.read_text()) if skip]
    assert len(skipped) <= 3, skipped


def test_block_extraction() -> None:
    text = "intro\n```python\nx = 1\n```\n<!-- no-test -->\n```python\nserve()\n```\n```bash\nls\n```\n"
    assert [(c, s) for _, c, s in python_blocks(text)] == [("x = 1", False), ("serve()", True)]


def test_api_reference_is_current() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_api.py"), "--check"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr


def test_api_reference_lists_what_a_new_user_looks_for() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    for needle in ("Recommendations.item_ids", "Recommendations.scores", "| `item_id` |", "| `score` |",
                   "| `source` |", "| `reason` |", "rec.items", "Recommender.poll_once",
                   "Recommender.install_signal_handlers", "## Errors", "### `edgerec_sdk.EdgerecError`",
                   "### `edgerec_sdk.HubAuthError`", "├── ModelError"):
        assert needle in text, needle
    config_rows = [line for line in text.splitlines() if line.startswith("| `") and line.count("|") == 4]
    empty = [line.split("|")[1].strip() for line in config_rows if not line.split("|")[3].strip()]
    assert len(config_rows) > 40 and empty == []  # before: every config table's meaning column was empty
