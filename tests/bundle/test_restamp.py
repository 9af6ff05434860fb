"""``restamp_bundle``: a deliberate rollback re-issues an old bundle with a fresh signed stamp (fault C04)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edgerec_sdk.bundle import Manifest, load_bundle
from edgerec_sdk.bundle.manifest import created_at_time
from edgerec_sdk.bundle.restamp import restamp_bundle, restamp_version
from edgerec_sdk.errors import ConfigError, ModelIntegrityError
from edgerec_sdk.testing import make_tiny_bundle

KEY = b"restamp-key"
LATER = datetime(2031, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def _manifest(path: Path) -> Manifest:
    return Manifest.from_bytes((path / "manifest.json").read_bytes())


def test_copy_is_newer_resigned_and_shares_the_files(tmp_path: Path) -> None:
    src = make_tiny_bundle(tmp_path / "v1", model_version="v1", signing_key=KEY)
    out = restamp_bundle(src, tmp_path / "again", signing_key=KEY, now=LATER)
    old, new = _manifest(src), _manifest(out)
    assert new.model_version == "v1-restamp-20310501T120000Z" and new.created_at == "2031-05-01T12:00:00Z"
    assert new.parent_version == old.parent_version and new.files == old.files
    assert new.extra["restamped_from"]["model_version"] == "v1"
    assert new.extra["restamped_from"]["created_at"] == old.created_at
    assert created_at_time(new.created_at) > created_at_time(old.created_at)  # type: ignore[operator]
    assert load_bundle(out, signing_key=KEY).model_version == new.model_version  # signature and sha256 hold
    assert os.stat(out / "popular.npy").st_ino == os.stat(src / "popular.npy").st_ino  # hard link, no copy
    again = restamp_bundle(out, tmp_path / "again2", signing_key=KEY, now=LATER.replace(year=2032))
    assert _manifest(again).model_version == "v1-restamp-20320501T120000Z"  # suffixes replaced, never stacked


def test_refuses_tampering_existing_output_and_a_clock_behind(tmp_path: Path) -> None:
    src = make_tiny_bundle(tmp_path / "v1", model_version="v1", signing_key=KEY)
    with pytest.raises(ModelIntegrityError):  # never bless a bundle signed by someone else
        restamp_bundle(src, tmp_path / "a", signing_key=b"other-key", now=LATER)
    with pytest.raises(ConfigError, match="not after"):
        restamp_bundle(src, tmp_path / "b", signing_key=KEY, now=datetime(2001, 1, 1, tzinfo=timezone.utc))
    (tmp_path / "c").mkdir()
    with pytest.raises(ConfigError, match="exists"):
        restamp_bundle(src, tmp_path / "c", signing_key=KEY, now=LATER)
    (src / "popular.npy").write_bytes((src / "popular.npy").read_bytes()[:-1] + b"\x07")
    with pytest.raises(ModelIntegrityError, match=r"popular\.npy"):
        restamp_bundle(src, tmp_path / "d", signing_key=KEY, now=LATER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "v1"]  # nothing half-written left behind


def test_version_name_and_explicit_version(tmp_path: Path) -> None:
    assert restamp_version("v7-restamp-20300101T000000Z", LATER) == "v7-restamp-20310501T120000Z"
    src = make_tiny_bundle(tmp_path / "v1", model_version="v1")
    out = restamp_bundle(src, tmp_path / "x", model_version="v1-rollback", now=LATER)
    assert _manifest(out).model_version == "v1-rollback" and not (out / "signature").exists()
