"""edgerec_sdk._impl.files: the one place that hashes, syncs, replaces and reuses files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edgerec_sdk._impl import files
from edgerec_sdk._impl.configs import from_mapping
from edgerec_sdk.errors import ConfigError
from edgerec_sdk.sync import OutboxConfig, SyncConfig


def test_sha256_file_reads_past_one_chunk(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) + 17)
    (tmp_path / "f").write_bytes(data)
    assert files.sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_link_or_copy_verified_links_and_checks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"bundle bytes")
    sha = hashlib.sha256(b"bundle bytes").hexdigest()
    dst = tmp_path / "dst"
    dst.write_bytes(b"stale")
    assert files.link_or_copy_verified(src, dst, sha256=sha, size=12)
    assert dst.read_bytes() == b"bundle bytes" and os.path.samefile(src, dst)
    assert not files.link_or_copy_verified(src, dst, sha256="0" * 64)
    assert not dst.exists() and src.exists()
    assert not files.link_or_copy_verified(src, dst, sha256=sha, size=13)
    assert not dst.exists()


def test_link_or_copy_verified_copies_where_links_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_link(*args: object, **kwargs: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"x" * 100)
    assert files.link_or_copy_verified(src, dst, sha256=hashlib.sha256(b"x" * 100).hexdigest())
    assert not os.path.samefile(src, dst) and dst.read_bytes() == b"x" * 100


def test_replace_file_keeps_the_old_file_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "current"
    files.replace_file(target, b"v1\n")
    assert target.read_bytes() == b"v1\n" and [p.name for p in tmp_path.iterdir()] == ["current"]

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        files.replace_file(target, b"v2\n")
    assert target.read_bytes() == b"v1\n" and [p.name for p in tmp_path.iterdir()] == ["current"]


def test_from_mapping_builds_nested_configs_and_refuses_unknown_keys() -> None:
    cfg = from_mapping(SyncConfig, {"hub_url": "http://127.0.0.1:1", "allow_unsigned_bundles": True,
                                    "outbox": {"batch_size": 7}})
    assert cfg.outbox == OutboxConfig(batch_size=7)
    with pytest.raises(ConfigError, match="unknown OutboxConfig keys: nope"):
        SyncConfig.from_mapping({"hub_url": "http://127.0.0.1:1", "outbox": {"nope": 1}})
    with pytest.raises(ConfigError, match="unknown SyncConfig keys: hub"):
        SyncConfig.from_mapping({"hub": "x"})
