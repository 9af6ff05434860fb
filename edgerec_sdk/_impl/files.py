"""File safety in one place: a file's sha256, durable writes, atomic replacement, link-or-copy-then-verify.

Everything that must survive a crash (bundles, the updater's ``current`` pointer and high-water marks) is
written through here: data fsynced before it is renamed into place, the directory fsynced after, so a
power loss leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO

__all__ = ["fsync_dir", "link_or_copy_verified", "replace_file", "sha256_file", "sync_file", "write_synced"]

_CHUNK = 1 << 20

StrPath = str | os.PathLike[str]


def sha256_file(path: StrPath) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sync_file(fp: BinaryIO) -> None:
    """Flush ``fp`` and fsync it: its bytes are on disk when this returns."""
    fp.flush()
    os.fsync(fp.fileno())


def write_synced(path: StrPath, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` and fsync it (``exclusive``: refuse an existing file)."""
    with open(path, "xb" if exclusive else "wb") as fp:
        fp.write(data)
        sync_file(fp)


def fsync_dir(path: StrPath) -> None:
    """Make a directory's new entries durable; best effort (not every platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: StrPath, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``: a synced sibling renamed over it, then the directory synced.

    A failure leaves the old file untouched and no temporary file behind.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        write_synced(tmp, data, exclusive=True)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def link_or_copy_verified(src: StrPath, dst: StrPath, *, sha256: str, size: int | None = None) -> bool:
    """Hard-link ``src`` at ``dst`` (a copy where linking fails), then check ``dst``'s sha256 and size.

    A link costs no space and the check re-reads the bytes, so a file that changed since it was verified is
    never reused. Returns False, with ``dst`` removed, on a mismatch; ``OSError`` propagates.
    """
    target = Path(dst)
    target.unlink(missing_ok=True)
    try:
        os.link(src, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(src, target)
    if (size is not None and target.stat().st_size != size) or sha256_file(target) != sha256:
        target.unlink(missing_ok=True)
        return False
    return True
