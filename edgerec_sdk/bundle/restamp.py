"""Restamping: re-issue an existing bundle as the newest one, the deliberate form of a rollback.

Edges refuse a channel manifest whose ``created_at`` is older than the newest they have accepted (rollback
and replay protection, ``docs/reliability.md`` C04). An operator who wants an older model back therefore
publishes it again with a fresh signed stamp: :func:`restamp_bundle` writes a copy whose manifest has a new
``created_at``, a new ``model_version`` (``<original>-restamp-<UTC time>``; the hub's versions are immutable,
and every answer is labelled with the version that produced it) and ``extra.restamped_from`` naming the
original; the files are the original's, byte for byte (hard links where possible), so their sha256 are equal
and edges that still hold them copy them from disk instead of downloading. ``parent_version`` is kept: the
model's lineage did not change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Final

from .._impl.files import fsync_dir, link_or_copy_verified, write_synced
from ..errors import ConfigError, ModelFormatError, ModelIntegrityError
from . import manifest as mf
from .manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, created_at_time
from .verify import check_signature, check_signing_key, sign_bytes

__all__ = ["RESTAMP_MARK", "restamp_bundle", "restamp_version", "write_derived"]

logger = logging.getLogger(__name__)

RESTAMP_MARK: Final = "-restamp-"
"""What :func:`restamp_version` puts between the original version and the stamp."""
_SUFFIX_RE: Final = re.compile(re.escape(RESTAMP_MARK) + r"\d{8}T\d{6}Z$")
_STAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


def restamp_version(original: str, when: datetime) -> str:
    """``<original>-restamp-YYYYMMDDTHHMMSSZ``; a previous restamp suffix is replaced, not stacked."""
    base = _SUFFIX_RE.sub("", original)
    return mf.check_model_version(f"{base}{RESTAMP_MARK}{when.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}")


def restamp_bundle(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    signing_key: str | bytes | None = None,
    model_version: str | None = None,
    now: datetime | None = None,
) -> Path:
    """Write a copy of the bundle ``src`` at ``out_dir`` with a fresh ``created_at``, re-signed.

    Every file's size and sha256 are checked against the source manifest while copying, and when
    ``signing_key`` is given and ``src`` has a ``signature``, that signature must verify: a restamp must not
    bless a bundle that was tampered with. ``out_dir`` must not exist; it appears complete or not at all.

    Args:
        src: the bundle directory to re-issue (e.g. the old version, as published).
        out_dir: where to write the copy.
        signing_key: HMAC key to sign the new manifest with; without one the copy is unsigned (only
            edges started with ``allow_unsigned_bundles=True`` accept it).
        model_version: the copy's version; default :func:`restamp_version` of the original.
        now: the new ``created_at`` (default: the current UTC time, to the second).

    Returns:
        ``out_dir``.

    Raises:
        ModelFormatError: ``src`` is not a valid bundle directory.
        ModelIntegrityError: a file or the source signature does not match.
        ConfigError: ``out_dir`` exists, or the new stamp would not be newer than the original's.
    """
    root, out = Path(src), Path(out_dir)
    key = check_signing_key(signing_key) if signing_key is not None else None
    try:
        raw = (root / MANIFEST_NAME).read_bytes()
    except OSError as exc:
        raise ModelFormatError(f"{root}: not a bundle directory ({type(exc).__name__})", path=str(root)) from exc
    if key is not None and (root / SIGNATURE_NAME).is_file():
        check_signature(raw, (root / SIGNATURE_NAME).read_bytes(), key, source=str(root / SIGNATURE_NAME))
    old = Manifest.from_bytes(raw, source=str(root / MANIFEST_NAME))
    when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    before = created_at_time(old.created_at)
    if before is not None and when <= before:
        raise ConfigError(f"restamp time {when:{_STAMP_FORMAT}} is not after the bundle's created_at "
                          f"{old.created_at!r} (is this machine's clock behind?)")
    version = mf.check_model_version(model_version) if model_version else restamp_version(old.model_version, when)
    if out.exists():
        raise ConfigError(f"{out} exists; restamp writes a new directory")
    extra = dict(old.extra)
    extra["restamped_from"] = {
        "model_version": old.model_version,
        "created_at": old.created_at,
        "manifest_sha256": hashlib.sha256(raw).hexdigest(),
    }
    new = dataclasses.replace(old, model_version=version, created_at=when.strftime(_STAMP_FORMAT), extra=extra)
    new_raw = new.to_bytes()
    Manifest.from_bytes(new_raw, source="restamped manifest")  # only write what the loader accepts

    write_derived(root, old, new_raw, out, key=key)
    logger.info("bundle %r restamped as %r (created_at %s, was %s)", old.model_version, version,
                new.created_at, old.created_at)
    return out


def write_derived(
    root: Path, old: Manifest, new_raw: bytes, out: Path, *, key: bytes | None, add: Mapping[str, bytes] | None = None
) -> None:
    """Write bundle ``out``: ``old``'s files copied (checked against ``old``), ``add``'s written, the manifest
    ``new_raw`` (signed with ``key`` when given). ``out`` appears complete or not at all."""
    tmp = out.with_name(f".{out.name}.derive-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o755)
    try:
        for name, entry in old.files.items():
            if name not in (add or {}):
                _copy_checked(root / name, tmp / name, entry.sha256, entry.size)
        for name, data in (add or {}).items():
            write_synced(tmp / name, data)
        write_synced(tmp / MANIFEST_NAME, new_raw)
        if key is not None:
            write_synced(tmp / SIGNATURE_NAME, sign_bytes(new_raw, key).encode("ascii") + b"\n")
        os.rename(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _copy_checked(src: Path, dst: Path, sha256: str, size: int) -> None:
    if src.is_symlink() or not src.is_file():
        raise ModelIntegrityError(f"{src.name}: missing or not a regular file", path=str(src))
    if not link_or_copy_verified(src, dst, sha256=sha256, size=size):
        raise ModelIntegrityError(f"{src.name}: size or sha256 differs from the manifest", path=str(src))
