"""Docs cannot point at nothing: links, anchors, cited docs and fault/decision ids all resolve inside the repo."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = [p for d in ("edgerec_sdk", "tests", "benchmarks", "examples", "docs") for p in (ROOT / d).rglob("*.py")]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CITE = re.compile(r"\b(?:faults?|design|decisions?)\s+((?:[A-GI]\d{1,2}(?:\s*(?:,|/|and)\s*)?)+)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_docs_cited_by_code_exist() -> None:
    cited = {(p, m) for p in SOURCES for m in re.findall(r"docs/([\w-]+\.md)", p.read_text())}
    assert len(cited) > 10
    assert sorted(f"{p.relative_to(ROOT)}: {m}" for p, m in cited if not (ROOT / "docs" / m).is_file()) == []


def test_fault_and_decision_ids_cited_by_code_exist() -> None:
    catalogue = (ROOT / "docs" / "reliability.md").read_text()
    known = set(re.findall(r"^\| ([A-F]\d\d) \|", catalogue, re.M)) | set(re.findall(r"\b(I\d) ", catalogue))
    known |= set(re.findall(r"^\*\*(G\d) ", (ROOT / "docs" / "design.md").read_text(), re.M))
    cited = [(p, i) for p in SOURCES for m in CITE.finditer(p.read_text()) for i in re.findall(r"[A-GI]\d\d?", m[1])]
    assert len(cited) > 30
    assert sorted(f"{p.relative_to(ROOT)}: {i}" for p, i in cited if i not in known) == []


def test_nothing_cites_a_file_outside_the_repo_or_an_issue() -> None:
    outside = re.compile(r"ARCHITECTURE\.md|FAULTS\.md|CONVENTIONS\.md|\bissue [0-9]|\.\./shared")
    files = [*PAGES, *(p for p in SOURCES if p != Path(__file__).resolve())]
    assert sorted(str(p.relative_to(ROOT)) for p in files if outside.search(p.read_text())) == []


def test_design_layout_table_maps_every_package_and_root_module() -> None:
    text = (ROOT / "docs" / "design.md").read_text()
    rows = set(re.findall(r"^\| `(?:edgerec_sdk/)?([\w/.]+)` \|", text, re.M))
    package = ROOT / "edgerec_sdk"
    expected = {f"{p.parent.relative_to(package)}/" for p in package.glob("*/__init__.py")}
    expected |= {"hub/storage/", "_demo/", "__init__.py"}
    expected |= {p.name for p in package.glob("*.py")}
    assert sorted(expected - rows) == []
