from __future__ import annotations

import os
import sqlite3
import stat
import warnings
from pathlib import Path

import pytest

from edgerec_sdk.profile import ProfileEvent, ProfileStore, ProfileUnavailableError, SqliteProfileStore

from .contract import ProfileStoreContract, ev


class TestSqliteProfileStore(ProfileStoreContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = tmp_path / "state" / "profiles.sqlite3"

    def make_store(self, max_events_per_user: int = 200) -> ProfileStore:
        return SqliteProfileStore(self.path, max_events_per_user=max_events_per_user)


def test_wal_mode_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "p.sqlite3"
    store = SqliteProfileStore(path)
    store.append("u", ev(1))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    store.close()


def test_two_workers_share_one_file(tmp_path: Path) -> None:
    """Two stores on one file stand for two gunicorn workers: a write by one is read by the other at once."""
    path = tmp_path / "p.sqlite3"
    a, b = SqliteProfileStore(path), SqliteProfileStore(path)
    a.append("u", ev(1))
    assert b.get("u") == [ev(1)]
    b.append("u", ev(2))
    assert a.get("u") == [ev(1), ev(2)]
    b.forget("u")
    assert a.get("u") == []
    a.close()
    b.close()


def test_reader_is_not_blocked_by_a_held_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite3"
    store = SqliteProfileStore(path, busy_timeout_s=0.01)
    store.append("u", ev(1))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another worker mid-write
    try:
        assert store.get("u") == [ev(1)]  # WAL: readers go on
        with pytest.raises(ProfileUnavailableError):
            store.append("u", ev(2))  # writers wait busy_timeout_s, then give up
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.append("u", ev(3))
    assert store.get("u") == [ev(1), ev(3)]
    store.close()


def test_d20_corrupt_file_raises_profile_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite3"
    store = SqliteProfileStore(path)
    store.append("u", ev(1))
    store.postfork()  # drop this process's connections, as a fresh worker would have none
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ProfileUnavailableError):
        store.get("u")
    with pytest.raises(ProfileUnavailableError):
        store.append("u", ev(2))
    store.close()


def test_unusable_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteProfileStore(":memory:")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProfileUnavailableError):
        SqliteProfileStore(tmp_path / "file" / "below-a-file.sqlite3")


def test_prune_and_len(tmp_path: Path) -> None:
    store = SqliteProfileStore(tmp_path / "p.sqlite3")
    store.append("old", ProfileEvent("i", "click", 100.0))
    store.append("new", ProfileEvent("i", "click", 200.0))
    assert len(store) == 2
    assert store.prune(before_ts=150.0) == 1
    assert store.get("old") == [] and len(store) == 1
    store.close()


def test_closed_store_raises_profile_unavailable(tmp_path: Path) -> None:
    store = SqliteProfileStore(tmp_path / "p.sqlite3")
    store.close()
    with pytest.raises(ProfileUnavailableError):
        store.get("u")


def test_d01_fork_child_opens_its_own_connection(tmp_path: Path) -> None:
    """A forked child never uses the parent's connection; its writes are visible to the parent."""
    store = SqliteProfileStore(tmp_path / "p.sqlite3")
    store.append("u", ev(1))
    parent_conn = store._local.conn
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12 warns on fork in a threaded process
        pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            seen = store.get("u")
            store.append("u", ev(2))
            code = 0 if seen == [ev(1)] and store._local.conn is not parent_conn else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    result = os.read(read, 1)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert result == b"\x00" and os.waitstatus_to_exitcode(status) == 0
    assert store.get("u") == [ev(1), ev(2)]
    assert store._local.conn is parent_conn
    store.close()
