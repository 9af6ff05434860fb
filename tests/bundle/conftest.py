"""Helpers for bundle tests: tamper with a written bundle while keeping (or breaking) its manifest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgerec_sdk.testing import make_bundle


def edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``edit`` to the manifest document and write it back (signature not updated)."""
    path = bundle / "manifest.json"
    doc = json.loads(path.read_bytes())
    edit(doc)
    path.write_bytes(json.dumps(doc, indent=2).encode())


def replace_file(bundle: Path, name: str, data: bytes) -> None:
    """Replace a bundle file and update its manifest entry, so only the content check can catch it."""
    (bundle / name).write_bytes(data)

    def fix(doc: dict[str, Any]) -> None:
        doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    edit_manifest(bundle, fix)


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    """A small valid float32 bundle (float32 so vector files can be tampered with directly)."""
    return make_bundle(tmp_path / "b", n_items=30, dim=8, dtype="float32", max_seq_len=10)
