"""The outbox's write-ahead append log: ``feedback()`` durable with one ``write(2)``, no SQLite commit.

Why: a SQLite transaction per event costs tens of microseconds at the median, but its commit (WAL writes,
locks shared with the uploader and the host's other workers, checkpoints) stalls for milliseconds a few times
in a hundred on a busy host (docs/benchmarks.md, "feedback()"). An append is one ``write(2)`` of one record to
a file only this process writes. Once it returns, the record survives the process (a crash, SIGKILL, the OOM
killer) exactly as a SQLite commit with ``synchronous=NORMAL`` does; with ``synchronous=FULL`` each append is
also ``fsync``-ed, and survives a power loss as that commit does.

The outbox moves the records into SQLite in one transaction (group commit) whenever it leases a batch, counts,
flushes, forgets or closes, and then deletes the file. A process that died first leaves its file behind: the
next outbox opened on the directory replays it (event ids make a replay idempotent). Files are named
``<outbox file>.append-<host>-<pid>-<nonce>``; only files of dead processes of this host are ever replayed.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .leases import _HOST, holder_is_dead

__all__ = ["AppendLog", "dead_logs", "read_records"]

_HEAD = struct.Struct("<dHHI")  # appended at (unix seconds), event id, user key and body lengths

Row = tuple[float, str, str, bytes]
"""Appended at (unix seconds: ``forget`` erases what was appended before it), event id, user key, body."""


def _record(event_id: str, user_key: str, body: bytes) -> bytes:
    eid, key = event_id.encode(), user_key.encode()
    return _HEAD.pack(time.time(), len(eid), len(key), len(body)) + eid + key + body


def read_records(path: Path) -> list[Row]:
    """The complete records of one log file, in order (a torn record at the end is ignored)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    rows: list[Row] = []
    at = 0
    while at + _HEAD.size <= len(data):
        when, n_id, n_key, n_body = _HEAD.unpack_from(data, at)
        start = at + _HEAD.size
        end = start + n_id + n_key + n_body
        if end > len(data):
            break
        rows.append((when, data[start:start + n_id].decode(), data[start + n_id:start + n_id + n_key].decode(),
                     data[start + n_id + n_key:end]))
        at = end
    return rows


def dead_logs(outbox: Path) -> Iterator[Path]:
    """Log files next to ``outbox`` left by processes of this host that no longer run."""
    prefix = outbox.name + ".append-"
    with contextlib.suppress(OSError):
        for path in outbox.parent.iterdir():
            if not path.name.startswith(prefix):
                continue
            host, _, rest = path.name[len(prefix):].rpartition("-")[0].rpartition("-")
            pid = rest if rest.isdigit() else ""
            if pid and holder_is_dead(f"log@{host}:{pid}:x"):
                yield path


class AppendLog:
    """This process's append-only log file for one outbox (opened on the first append).

    Args:
        outbox: the outbox's SQLite file; the log lives next to it.
        fsync: ``fsync`` after every append (``synchronous=FULL``).
    """

    def __init__(self, outbox: Path, *, fsync: bool) -> None:
        self._outbox = outbox
        self._fsync = fsync
        self._lock = threading.Lock()
        self._fd = -1
        self._path: Path | None = None
        self._pid = os.getpid()
        self.count = 0
        """Records in the current file."""
        self.bytes = 0

    def append(self, event_id: str, user_key: str, body: bytes) -> bool:
        """Write one record; ``False`` when the file cannot be written (the caller stores it another way)."""
        rec = _record(event_id, user_key, body)
        with self._lock:
            if self._pid != os.getpid():
                return False  # the parent's log: the outbox gives this process its own after a fork
            try:
                if self._fd < 0:
                    self._path = self._outbox.with_name(
                        f"{self._outbox.name}.append-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
                    self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                if os.write(self._fd, rec) != len(rec):
                    raise OSError("short write")
                if self._fsync:
                    os.fsync(self._fd)
            except OSError:
                if self._fd >= 0:  # never leave half a record for the next one to follow
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, self.bytes)
                return False
            self.count += 1
            self.bytes += len(rec)
            return True

    def take(self) -> tuple[Path, int] | None:
        """Close the current file and hand it over (its path and record count); the next append starts a new one.

        The caller stores the records, then deletes the file.
        """
        with self._lock:
            if self._fd < 0 or self._path is None or self._pid != os.getpid():
                return None
            with contextlib.suppress(OSError):
                os.close(self._fd)
            taken = (self._path, self.count)
            self._fd, self._path, self.count, self.bytes = -1, None, 0, 0
            return taken

    def abandon(self) -> None:
        """In a forked child: drop the parent's file without touching it (the parent stores its records)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # the child's copy of the descriptor only
        self._fd, self._path, self.count, self.bytes = -1, None, 0, 0
