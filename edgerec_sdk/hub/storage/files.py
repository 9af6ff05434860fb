"""Where the hub keeps the content it serves: immutable files grouped in scopes.

A scope is ``bundle/<version>`` today. Catalogue deltas and rule sets are small signed documents kept whole in
the ``artifacts`` table (in the same database, so replicas share them too); content too large for one row
takes a scope of its own (``delta/<id>``) and is stored, streamed and replicated like a bundle. Two stores,
one interface:

- :class:`DatabaseFileStore`: the files live in the hub's database (``files`` + ``file_chunks``, 1 MiB a row),
  so every hub replica on one PostgreSQL serves every file with no shared directory. A read fetches one chunk
  per query (a pooled connection is held for one chunk, never for a slow client's whole download) and a
  write streams from disk, so neither ever holds a whole file in memory.
- :class:`LocalFileStore`: ``<root>/bundles/<version>/<name>`` on the hub's own disk, the zero-setup default
  with SQLite (one process, or several sharing one root).

A scope may also name an external **origin** (``origins`` table): a base URL under which the same files can be
fetched (an S3 bucket, a CDN). Edges then download from there and verify every file's sha256 and the
manifest's signature exactly as they do for the hub: an origin is never trusted.

Example::

    files = DatabaseFileStore(storage)
    files.put("bundle/v2", Path("/tmp/staged-v2"))       # every regular file of the directory
    size = files.size("bundle/v2", "items.int8.npy")
    for chunk in files.read("bundle/v2", "items.int8.npy", 0, size): ...
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from ._base import SQLStorage

__all__ = ["CHUNK_BYTES", "DatabaseFileStore", "FileStore", "LocalFileStore", "bundle_scope"]

#: Bytes per ``file_chunks`` row: large enough for throughput, small enough to bound memory per request.
CHUNK_BYTES = 1024 * 1024


def bundle_scope(version: str) -> str:
    return f"bundle/{version}"


class FileStore(ABC):
    """Immutable files by ``(scope, name)``; ``put`` replaces a scope's files as a whole."""

    #: ``"database"`` or ``"local"`` (``/v1/status`` and the docs name it).
    kind: str = ""

    @abstractmethod
    def put(self, scope: str, directory: Path) -> None:
        """Store every regular file of ``directory`` under ``scope`` (the directory may be consumed)."""

    @abstractmethod
    def size(self, scope: str, name: str) -> int | None:
        """The file's size, or ``None`` when the store does not hold it."""

    @abstractmethod
    def read(self, scope: str, name: str, start: int, length: int) -> Iterator[bytes]:
        """``length`` bytes from ``start``, in pieces of at most :data:`CHUNK_BYTES`."""


class LocalFileStore(FileStore):
    """Files under ``<root>/<kind>s/<key>/`` (bundles: ``<root>/bundles/<version>/``)."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, scope: str) -> Path:
        kind, _, key = scope.partition("/")
        return self.root / f"{kind}s" / key

    def put(self, scope: str, directory: Path) -> None:
        dest = self._dir(scope)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(directory, dest)
        os.chmod(dest, 0o755)

    def size(self, scope: str, name: str) -> int | None:
        path = self._dir(scope) / name
        return path.stat().st_size if path.is_file() else None

    def read(self, scope: str, name: str, start: int, length: int) -> Iterator[bytes]:
        with open(self._dir(scope) / name, "rb") as f:
            f.seek(start)
            while length > 0:
                chunk = f.read(min(CHUNK_BYTES, length))
                if not chunk:
                    return
                length -= len(chunk)
                yield chunk


class DatabaseFileStore(FileStore):
    """Files chunked in the hub database (any :class:`SQLStorage`; PostgreSQL for replicas)."""

    kind = "database"

    def __init__(self, storage: SQLStorage, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.storage = storage
        self.chunk_bytes = chunk_bytes

    def put(self, scope: str, directory: Path) -> None:
        """One transaction: readers see the scope's old files or its new ones, never a mix."""
        now = time.time()
        with self.storage._tx() as conn:
            conn.execute("DELETE FROM file_chunks WHERE scope = ?", (scope,))
            conn.execute("DELETE FROM files WHERE scope = ?", (scope,))
            for path in sorted(directory.iterdir()):
                if not path.is_file():
                    continue
                h, size, seq = hashlib.sha256(), 0, 0
                with open(path, "rb") as f:
                    while chunk := f.read(self.chunk_bytes):
                        conn.execute("INSERT INTO file_chunks(scope, name, seq, data) VALUES(?,?,?,?)",
                                     (scope, path.name, seq, chunk))
                        h.update(chunk)
                        size += len(chunk)
                        seq += 1
                conn.execute("INSERT INTO files(scope, name, size, chunk_bytes, sha256, created_at)"
                             " VALUES(?,?,?,?,?,?)", (scope, path.name, size, self.chunk_bytes, h.hexdigest(), now))

    def _meta(self, scope: str, name: str) -> tuple[int, int] | None:
        with self.storage._read() as conn:
            row = conn.execute("SELECT size, chunk_bytes FROM files WHERE scope = ? AND name = ?",
                               (scope, name)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def size(self, scope: str, name: str) -> int | None:
        meta = self._meta(scope, name)
        return None if meta is None else meta[0]

    def read(self, scope: str, name: str, start: int, length: int) -> Iterator[bytes]:
        meta = self._meta(scope, name)
        if meta is None or length <= 0:
            return
        step = meta[1]
        seq, skip = divmod(start, step)
        while length > 0:
            data = self.storage.read_chunk(scope, name, seq)
            if data is None:  # the scope was replaced mid-download: stop short, the edge resumes or retries
                return
            piece = data[skip:skip + length] if skip or len(data) - skip > length else data
            skip = 0
            seq += 1
            length -= len(piece)
            yield piece

    def names(self, scope: str) -> list[str]:
        with self.storage._read() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM files WHERE scope = ? ORDER BY name", (scope,))]
