"""docs/reliability.md cannot go stale: every test it names exists, every fault test is named there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
REF = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)")


def test_every_test_named_in_the_doc_exists() -> None:
    refs = REF.findall(DOC.read_text())
    assert len(refs) > 80
    missing = [f"{f}::{n}" for f, n in refs
               if not (ROOT / f).is_file() or not re.search(rf"def {n}\(", (ROOT / f).read_text())]
    assert missing == []


def test_every_fault_test_is_in_the_doc() -> None:
    named = {n for _, n in REF.findall(DOC.read_text())}
    defined = {m for p in (ROOT / "tests" / "faults").glob("test_*.py")
               for m in re.findall(r"^def (test_[a-f]\d\d_\w+)\(", p.read_text(), re.M)}
    assert sorted(defined - named) == []


def test_every_faults_id_has_a_row() -> None:
    text = DOC.read_text()
    ids = {f"{s}{i:02d}" for s, n in (("A", 18), ("B", 14), ("C", 9), ("D", 20), ("E", 14), ("F", 9))
           for i in range(1, n + 1)}
    rows = set(re.findall(r"^\| ([A-F]\d\d) \|", text, re.M))
    assert sorted(ids - rows) == []
