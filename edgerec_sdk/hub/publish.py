"""Taking in a published bundle: a flat tar of the bundle's files, checked before it is registered.

The tar is untrusted: only regular files with safe flat names (``./`` allowed) are read, each under the cap,
then the manifest is validated and every listed file's size and sha256 checked; unlisted files are refused.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from .._impl.files import sha256_file
from ..bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, check_file_name, created_at_time
from ..errors import ModelFormatError, PublishError

MAX_CREATED_AT_SKEW_S = 86400.0
"""A manifest stamped further ahead of the hub's clock is refused (edges allow the same by default)."""

__all__ = ["Intake", "PublishError", "ingest_tar", "make_tar"]


@dataclass(frozen=True, slots=True)
class Intake:
    manifest: Manifest
    raw_manifest: bytes
    signature: str | None
    directory: Path
    total_bytes: int


def make_tar(bundle_dir: Path, *, signature: str | None = None, manifest_only: bool = False) -> bytes:
    """A flat, uncompressed tar of a bundle directory (what ``edgerec publish`` uploads); with
    ``manifest_only``, only the manifest and signature (the files are on an external origin)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(bundle_dir.iterdir()):
            if not path.is_file() or (signature is not None and path.name == SIGNATURE_NAME):
                continue
            if manifest_only and path.name not in (MANIFEST_NAME, SIGNATURE_NAME):
                continue
            tar.add(str(path), arcname=path.name, recursive=False)
        if signature is not None:
            data = signature.encode() + b"\n"
            info = tarfile.TarInfo(SIGNATURE_NAME)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ingest_tar(tar_path: Path, staging: Path, *, max_bytes: int, files_elsewhere: bool = False) -> Intake:
    """Extract and verify ``tar_path`` into the fresh directory ``staging``; with ``files_elsewhere`` (an
    external origin serves them) listed files may be missing, and those present are still checked."""
    staging.mkdir(parents=True, mode=0o700)
    try:
        return _ingest(tar_path, staging, max_bytes, files_elsewhere)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _ingest(tar_path: Path, staging: Path, max_bytes: int, files_elsewhere: bool = False) -> Intake:
    total = 0
    seen: set[str] = set()
    try:
        tar = tarfile.open(tar_path, mode="r:")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as exc:
        raise PublishError("body is not an uncompressed tar") from exc
    with tar:
        try:
            for member in tar:
                if member.isdir() and member.name.strip("./") == "":
                    continue
                name = member.name[2:] if member.name.startswith("./") else member.name
                if not member.isreg():
                    raise PublishError(f"tar member {name[:60]!r} is not a regular file")
                try:
                    check_file_name(name, source="tar")
                except ModelFormatError as exc:
                    raise PublishError(str(exc)) from exc
                if name.lower() in seen:
                    raise PublishError(f"duplicated file {name!r}")
                seen.add(name.lower())
                total += member.size
                if total > max_bytes:
                    raise PublishError("bundle over the hub's size cap", status=413)
                src = tar.extractfile(member)
                if src is None:
                    raise PublishError(f"cannot read {name!r}")
                with src, open(staging / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
        except tarfile.TarError as exc:
            raise PublishError("corrupt tar") from exc
    if MANIFEST_NAME not in seen:
        raise PublishError("the tar holds no manifest.json")
    raw = (staging / MANIFEST_NAME).read_bytes()
    try:
        manifest = Manifest.from_bytes(raw)
    except ModelFormatError as exc:
        raise PublishError(f"invalid manifest: {exc}") from exc
    when = created_at_time(manifest.created_at)
    if when is None:  # edges order a channel's manifests by it (rollback check)
        raise PublishError(f"invalid manifest: created_at {manifest.created_at[:64]!r} is not an ISO 8601 time")
    if when.timestamp() > time.time() + MAX_CREATED_AT_SKEW_S:  # edges refuse it (from_the_future)
        raise PublishError(f"invalid manifest: created_at {manifest.created_at[:64]!r} is more than a day ahead "
                           "of the hub's clock; every edge refuses it")
    extra = seen - {n.lower() for n in manifest.files} - {MANIFEST_NAME, SIGNATURE_NAME}
    if extra:
        raise PublishError(f"files not listed in the manifest: {sorted(extra)[:5]}")
    for name, entry in manifest.files.items():
        path = staging / name
        if not path.is_file() and files_elsewhere:
            continue
        if not path.is_file():
            raise PublishError(f"missing file {name!r}")
        if path.stat().st_size != entry.size:
            raise PublishError(f"{name}: size differs from the manifest")
        if sha256_file(path) != entry.sha256:
            raise PublishError(f"{name}: sha256 differs from the manifest")
    signature = None
    if SIGNATURE_NAME in seen:
        signature = (staging / SIGNATURE_NAME).read_text("ascii", errors="replace").strip()[:512] or None
    for p in staging.iterdir():
        os.chmod(p, 0o644)
    if files_elsewhere:
        total = sum(e.size for e in manifest.files.values())
    return Intake(manifest, raw, signature, staging, total)

