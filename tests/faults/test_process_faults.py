"""Faults C and D: swaps under load, fork, signals, SIGKILL, full and read-only disks, close()."""

from __future__ import annotations

import errno
import gc
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

from edgerec_sdk import ClosedError, Recommender, RecommenderConfig
from edgerec_sdk.bundle import Bundle, load_bundle
from edgerec_sdk.sync import appendlog
from edgerec_sdk.sync import client as client_mod
from edgerec_sdk.testing import FakeClock, FakeHub, Fault, fork_probe

from .conftest import RAW_USERS, SIGNING, TOKEN, USER_KEY, balanced, click, connect, edge, leaked, outbox

HISTORY = ["item-000002", "item-000007", "item-000011"]


@pytest.fixture(scope="module")
def loaded(bundles: dict[str, Path]) -> dict[str, Bundle]:
    return {v: load_bundle(p, signing_key=SIGNING) for v, p in bundles.items() if v in ("v1", "v2")}


@pytest.fixture(scope="module")
def expected(loaded: dict[str, Bundle]) -> dict[str, list[str]]:
    out = {}
    for v, b in loaded.items():
        with Recommender(b) as rec:
            out[v] = [i.item_id for i in rec.recommend("u", k=5, history=HISTORY)]
    assert out["v1"] != out["v2"]
    return out


def edgerec_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("edgerec-")]


# --- C: swaps ------------------------------------------------------------------------------------------


def test_c01_64_threads_during_swaps(loaded: dict[str, Bundle], expected: dict[str, list[str]]) -> None:
    rec = Recommender(loaded["v1"])
    done, start = threading.Event(), threading.Barrier(65)
    errors: list[BaseException] = []
    bad: list[Any] = []
    calls = [0] * 64

    def worker(n: int) -> None:
        start.wait()
        try:
            while not done.is_set() or calls[n] < 5:
                r = rec.recommend(f"user-{n}", k=5, history=HISTORY)
                calls[n] += 1
                if r.degraded or [i.item_id for i in r] != expected.get(r.model_version or "", []):
                    bad.append((r.model_version, r.degraded_reason))
                done.wait(0.002)  # leave the swapping thread a share of the GIL on a 2-core runner
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    start.wait()
    for i in range(50):
        rec.swap(loaded["v2" if i % 2 == 0 else "v1"])
    done.set()
    for t in threads:
        t.join(60.0)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and bad == [] and sum(calls) >= 64 * 5
    assert rec.status().counters.get("degraded", 0) == 0
    rec.close()


def test_c02_request_in_flight_finishes_on_its_version_and_old_is_freed(
        loaded: dict[str, Bundle], expected: dict[str, list[str]], bundles: dict[str, Path]) -> None:
    rec = Recommender(load_bundle(bundles["v1"], signing_key=SIGNING), RecommenderConfig(cache_size=0))
    old = rec._state
    assert old is not None
    real = [old.rank]

    def rank_then_swap(*args: Any, **kw: Any) -> Any:
        rec.swap(loaded["v2"])  # the swap lands while this request is between its steps
        return real[0](*args, **kw)

    old.rank = rank_then_swap  # type: ignore[method-assign]
    r = rec.recommend("u", k=5, history=HISTORY)
    assert r.model_version == "v1" and [i.item_id for i in r] == expected["v1"]
    assert rec.recommend("u", k=5, history=HISTORY).model_version == "v2"
    ref = weakref.ref(old)
    real.clear()
    del old, rank_then_swap, r
    gc.collect()
    assert ref() is None  # released when its last reference dropped
    rec.close()


def test_c06_100_swaps_release_every_old_state(loaded: dict[str, Bundle]) -> None:
    rec = Recommender(loaded["v1"])
    refs = []
    for i in range(100):
        rec.swap(loaded["v2" if i % 2 == 0 else "v1"])
        rec.recommend("u", k=3, history=HISTORY)
        refs.append(weakref.ref(rec._state))
    gc.collect()
    alive = [r for r in refs if r() is not None]
    assert len(alive) == 1 and alive[0]() is rec._state
    rec.close()


# --- D: threads -----------------------------------------------------------------------------------------


def test_d04_64_threads_identical_answers(loaded: dict[str, Bundle], expected: dict[str, list[str]]) -> None:
    rec = Recommender(loaded["v1"], RecommenderConfig(cache_size=0))  # every call runs the model and kernel
    before = threading.active_count()
    sdk_before = edgerec_threads()
    answers: set[tuple[str, ...]] = set()
    errors: list[BaseException] = []
    peak = [0]

    def worker() -> None:
        try:
            for _ in range(60):
                answers.add(tuple(i.item_id for i in rec.recommend("same-user", k=5, history=HISTORY)))
            peak[0] = max(peak[0], threading.active_count())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120.0)
    assert errors == [] and answers == {tuple(expected["v1"])}
    assert peak[0] <= before + 64 and edgerec_threads() == sdk_before  # the SDK added no thread of its own
    rec.close()


def test_d05_feedback_flood_never_waits_on_a_slow_hub(hub: FakeHub, tmp_path: Path) -> None:
    with hub.serve() as url:
        rec = connect(None, tmp_path / "state", url=url, upload_interval_s=0.01, read_timeout_s=30.0)
        hub.inject("events", Fault.stall())
        rec.feedback(click(RAW_USERS[0], 0))  # starts the uploader, whose first request hangs
        assert hub.reached.wait(10.0)
        t0 = time.monotonic()
        for i in range(1, 1000):
            rec.feedback(click(RAW_USERS[0], i))
        assert time.monotonic() - t0 < 20.0
        o = outbox(rec)
        assert o["accepted"] == 1000 and balanced(o)
        hub.release()
        assert rec.flush(20.0)
        o = outbox(rec)
        assert len(hub.events) == 1000 and o["delivered"] == 1000 and o["pending"] == 0 and balanced(o)
        rec.close(1.0)


def test_d09_close_twice_connected(hub: FakeHub, tmp_path: Path) -> None:
    rec = connect(hub, tmp_path / "state")
    rec.poll_once()
    rec.feedback(click(RAW_USERS[0], 1))
    tasks = (rec._sync.uploader.task, rec._sync.updater.task)
    assert [t.started for t in tasks] == [True, False]
    rec.close(2.0)
    t0 = time.monotonic()
    rec.close(2.0)  # a no-op
    assert time.monotonic() - t0 < 0.5 and not any(t.started for t in tasks)
    r = rec.recommend(RAW_USERS[0], k=3)
    assert r.degraded and r.degraded_reason == "closed"
    assert rec.feedback(click(RAW_USERS[0], 2)) is False and rec.status().counters["feedback_refused_closed"] == 1
    rec._sync.start()
    assert not any(t.started for t in tasks)  # nothing starts after close
    assert hub.event_ids == ["ev-ali-1"] and balanced(outbox(rec))
    strict = Recommender(None, RecommenderConfig(strict=True))
    strict.close()
    strict.close()
    with pytest.raises(ClosedError):
        strict.feedback(click(RAW_USERS[0], 3))


def test_d18_wall_clock_jump_moves_no_deadline(hub: FakeHub, tmp_path: Path, clock: FakeClock) -> None:
    sync = edge(hub, tmp_path / "state", clock)
    sync.put(click(RAW_USERS[0], 1))
    hub.down = True
    delay = sync.upload_once()
    clock.wall += 86_400.0  # a day forward on the wall clock only
    assert sync.upload_once() == pytest.approx(delay)  # backoff runs on the monotonic clock
    assert hub.count("events") == 0
    sync.close(0)


# --- D: fork ----------------------------------------------------------------------------------------------


def test_d01_fork_after_connect_child_recommends_ships_and_updates(hub: FakeHub, tmp_path: Path,
                                                                  bundles: dict[str, Path]) -> None:
    with hub.serve() as url:
        rec = connect(None, tmp_path / "state", url=url)
        rec.poll_once()
        rec.feedback(click(RAW_USERS[0], 1))
        assert rec.flush(10.0)
        hub.publish(bundles["v2"])

        def child() -> list[object]:
            return [
                rec.recommend(RAW_USERS[1], k=3).model_version == "v1",
                rec.feedback(click(RAW_USERS[1], 2)),
                rec.flush(10.0),
                edgerec_threads() == ["edgerec-uploader"],
                rec.poll_once() > 0 and rec.recommend(RAW_USERS[1], k=3).model_version == "v2",
            ]

        threads_before = edgerec_threads()
        assert fork_probe(child) == "11111"
        assert sorted(hub.events) == ["ev-ali-1", "ev-bob-2"] and edgerec_threads() == threads_before
        rec.feedback(click(RAW_USERS[0], 3))
        assert rec.flush(10.0) and len(hub.events) == 3 and balanced(outbox(rec))
        rec.close(1.0)


def test_d02_fork_while_updater_holds_its_lock(hub: FakeHub, tmp_path: Path, bundles: dict[str, Path]) -> None:
    with hub.serve() as url:
        state = tmp_path / "state"
        rec = connect(None, state, url=url)
        rec.poll_once()
        hub.publish(bundles["v2"])
        parent_staging = state / "staging" / f"v2-partial.{os.getpid()}"
        parent_staging.mkdir()
        (parent_staging / "items.int8.npy").write_bytes(b"parent's half")
        updater = rec._sync.updater
        assert updater._lock.acquire(timeout=1.0)  # the parent is "mid-poll" when it forks
        try:
            def child() -> list[object]:
                return [rec.poll_once() > 0 and rec.status().model_version == "v2"]

            assert fork_probe(child) == "1"
        finally:
            updater._lock.release()
        assert (parent_staging / "items.int8.npy").read_bytes() == b"parent's half"  # never adopted
        rec.close(0.5)


# --- D: processes killed and terminated ------------------------------------------------------------------

_CHILD = r"""
import os, select, sys, threading, time
from edgerec_sdk import IndexConfig, Recommender, RecommenderConfig
from edgerec_sdk.sync import SyncConfig
url, state, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
env = os.environ
cfg = SyncConfig(hub_url=url, token=env["T_"], user_id_key=env["U_"], signing_key=env["S_"], state_dir=state,
                 smoke_in_subprocess=False, upload_interval_s=3600.0, poll_interval_s=3600.0, read_timeout_s=30.0)
# "fork": onnxruntime sessions with thread pools built before the fork (fault D21).
config = RecommenderConfig(index=IndexConfig(backend="onnx", intra_op_threads=2)) if mode == "fork" else None
rec = Recommender.connect(url, token=cfg.token, user_id_key=cfg.user_id_key, state_dir=state, sync_config=cfg,
                          start=False, config=config)
if mode == "fork":
    rec.poll_once()
    assert rec.recommend("alice@example.com", k=3, history=["item-000002"]).model_version == "v1"
    pid = os.fork()
    if pid == 0:  # a uWSGI-style worker: serve, take feedback, leave with sys.exit; atexit ships it
        mode = "exit"
    else:
        t0, fd = time.monotonic(), os.pidfd_open(pid)
        exited = bool(select.select([fd], [], [], 20.0)[0])
        if not exited:
            os.kill(pid, 9)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        print("child", code if exited else "hang", round(time.monotonic() - t0, 1), flush=True)
        sys.exit(0)
if mode == "term":
    rec.install_signal_handlers(timeout_s=5.0)
if mode == "download":
    rec.poll_once()  # the hub holds the connection mid-file; the parent kills us there
for i in range(n):
    rec.feedback({"user": "bob.raw.user-id", "item": "item-%06d" % (i % 20 + 1), "type": "view",
                  "event_id": "%s-%d" % (mode, i)})
if mode == "upload":
    rec.flush(30.0)  # the hub commits, then holds the answer; the parent kills us there
if mode == "exit" and config is not None:
    assert not rec.recommend("bob.raw.user-id", k=3).degraded
    sys.exit(0)
print("ready", flush=True)
if mode != "exit":
    threading.Event().wait(60.0)
"""


def _spawn(url: str, state: Path, mode: str, n: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "T_": TOKEN, "U_": USER_KEY, "S_": SIGNING.decode()}
    return subprocess.Popen([sys.executable, "-c", _CHILD, url, str(state), mode, str(n)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout_s)
    text = out.decode() + err.decode()
    assert not leaked(text), "F03: a secret reached the child's output"
    return proc.returncode, text


def test_d06_sigterm_with_pending_feedback_flushed_within_deadline(hub: FakeHub, tmp_path: Path) -> None:
    with hub.serve() as url:
        proc = _spawn(url, tmp_path / "state", "term", 200)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        assert hub.count("events") == 0  # pending, not yet sent
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code, text = _finish(proc)
        assert code == -signal.SIGTERM, text[-2000:]  # still dies "by SIGTERM" for its supervisor
        assert time.monotonic() - t0 < 5.0 + 3.0
        assert len(hub.events) == 200
    left = edge(None, tmp_path / "state")
    o = left.status()["outbox"]
    assert o["pending"] == 0 and o["delivered"] == 200 and balanced(o)
    left.close(0)


def test_d21_forked_child_with_onnx_thread_pools_exits_by_sys_exit_and_ships_feedback(
    hub: FakeHub, tmp_path: Path
) -> None:
    with hub.serve() as url:
        proc = _spawn(url, tmp_path / "state", "fork", 30)
        code, text = _finish(proc)
        assert code == 0, text[-2000:]
        verdict = text.split()[:3]
        assert verdict[:2] == ["child", "0"] and float(verdict[2]) < 10.0, text[-2000:]  # hung forever before
        assert len(hub.events) == 30  # the child's atexit flush shipped every event before it ended
    left = edge(None, tmp_path / "state")
    o = left.status()["outbox"]
    assert o["pending"] == 0 and o["delivered"] == 30 and balanced(o)
    left.close(0)


def test_d08_exit_without_close_is_bounded_and_keeps_rows(hub: FakeHub, tmp_path: Path) -> None:
    with hub.serve() as url:
        hub.inject("events", *[Fault.hole()] * 10)
        t0 = time.monotonic()
        proc = _spawn(url, tmp_path / "state", "exit", 50)
        code, text = _finish(proc)
        assert code == 0, text[-2000:]
        assert time.monotonic() - t0 < 30.0 and hub.count("events") >= 1  # atexit tried, within its 2 s
    left = edge(None, tmp_path / "state", clock=FakeClock(wall=time.time() + 120))
    o = left.status()["outbox"]
    assert o["pending"] == 50 and balanced(o)
    left.close(0)


def test_d10_sigkill_mid_upload_restart_counts_each_once(hub: FakeHub, tmp_path: Path) -> None:
    with hub.serve() as url:
        hub.inject("events", Fault.stall(commit=True))  # stored at the hub, the answer never comes
        proc = _spawn(url, tmp_path / "state", "upload", 300)
        assert hub.reached.wait(60.0)
        proc.kill()
        assert _finish(proc)[0] == -signal.SIGKILL
        assert len(hub.events) == 300
        hub.release()
        again = edge(None, tmp_path / "state", url=url, clock=FakeClock(wall=time.time() + 120))  # lease expired
        assert again.flush(20.0)
        o = again.status()["outbox"]
        assert len(hub.events) == 300 and o["delivered"] == 300 and o["pending"] == 0 and balanced(o)
        dups = sum(1 for r in hub.requests if r.route == "events") - 1
        assert dups >= 1  # resent with the same event ids, answered as duplicates
        again.close(0.5)


def test_d11_sigkill_mid_download_restart_recovers(hub: FakeHub, tmp_path: Path, bundles: dict[str, Path]) -> None:
    state = tmp_path / "state"
    first = edge(hub, state)
    first.poll_once()  # v1 is the last good bundle
    first.close(0)
    hub.publish(bundles["v2"])
    with hub.serve() as url:
        hub.inject("file", Fault.stall(after_bytes=64))
        proc = _spawn(url, state, "download", 0)
        assert hub.reached.wait(60.0)
        proc.kill()
        assert _finish(proc)[0] == -signal.SIGKILL
        assert [p.name.rsplit(".", 1)[1] for p in (state / "staging").iterdir()] == [str(proc.pid)]
        again = edge(None, state, url=url)
        b = again.load_last_good()
        assert b is not None and b.model_version == "v1"  # the pointer was never half-written
        assert list((state / "staging").iterdir()) == []  # the dead pid's leftovers removed
        again.poll_once()
        assert again.status()["model_version"] == "v2" and (state / "current").read_text().startswith("v2-")
        again.close(0.5)


# --- D: disks ---------------------------------------------------------------------------------------------


class _FullDisk:
    """``open()`` for the download path whose writes fail with ENOSPC after ``room`` bytes."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, path: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        f = open(path, mode, *args, **kw)  # noqa: SIM115
        if "w" not in mode and "a" not in mode:
            return f
        outer = self
        real_write = f.write

        class Full:
            def __enter__(self) -> Full:
                return self

            def __exit__(self, *exc: object) -> None:
                f.close()

            def write(self, data: bytes) -> int:
                if len(data) > outer.room:
                    raise OSError(errno.ENOSPC, "No space left on device")
                outer.room -= len(data)
                return real_write(data)

            def __getattr__(self, name: str) -> Any:
                return getattr(f, name)

        return Full()


def test_d12_disk_full_during_download(hub: FakeHub, tmp_path: Path, clock: FakeClock, bundles: dict[str, Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    sync = edge(hub, state, clock)
    sync.poll_once()
    hub.publish(bundles["v2"])
    monkeypatch.setattr(client_mod, "open", _FullDisk(room=100), raising=False)
    sync.poll_once()  # no exception escapes
    s = sync.status()
    assert s["model_version"] == "v1" and s["last_update_error"]["reason"] == "OSError"
    assert [p for p in (state / "staging").rglob("*") if p.is_file()] == []
    monkeypatch.delattr(client_mod, "open")
    sync.poll_once()  # RETRY: not marked bad
    assert sync.status()["model_version"] == "v2"
    sync.close(0)


class _DiskFullConn:
    """A sqlite3 connection whose writes fail as on a full disk, until ``full`` is cleared."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.full = conn, True

    def execute(self, sql: str, *args: Any) -> Any:
        if self.full and sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_d13_disk_full_outbox_spills_and_request_path_unaffected(hub: FakeHub, tmp_path: Path,
                                                                 expected: dict[str, list[str]],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rec = connect(hub, tmp_path / "state")
    rec.poll_once()
    box = rec._sync.outbox
    box._conn = full = _DiskFullConn(box._conn)

    def write(fd: int, data: bytes) -> int:  # the same full disk under the write-ahead append log
        if full.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    real_write = os.write
    monkeypatch.setattr(appendlog.os, "write", write)
    for i in range(5):
        assert rec.feedback(click(RAW_USERS[0], i)) is True
    r = rec.recommend(RAW_USERS[1], k=5, history=HISTORY)
    assert not r.degraded and [i.item_id for i in r] == expected["v1"]
    s = rec.status().sync
    assert s["outbox_durable"] is False and s["outbox"]["memory_spill"] == 5 and balanced(s["outbox"])
    full.full = False
    box._db_failed_at = None  # skip the 1 s re-try pause of the real outbox
    assert rec.feedback(click(RAW_USERS[0], 5)) is True  # drains the spill into SQLite
    s = rec.status().sync
    assert s["outbox_durable"] is True and s["outbox"]["memory_spill"] == 0
    assert rec.flush(5.0) and len(hub.events) == 6 and balanced(outbox(rec))
    rec.close(1.0)


def test_d16_read_only_state_dir_memory_only(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             expected: dict[str, list[str]]) -> None:
    state = tmp_path / "ro"
    state.mkdir(mode=0o700)
    real_access = os.access
    # root ignores chmod and bind mounts need privileges: the SDK's own writability probe answers "read-only"
    monkeypatch.setattr(os, "access", lambda p, m, **kw: False if Path(p) == state else real_access(p, m, **kw))
    rec = connect(hub, state)
    assert rec.status().sync["state_dir_safe"] is False
    rec.poll_once()
    r = rec.recommend(RAW_USERS[1], k=5, history=HISTORY)
    assert not r.degraded and [i.item_id for i in r] == expected["v1"]
    assert rec.feedback(click(RAW_USERS[0], 1)) is True
    s = rec.status().sync
    assert s["outbox_durable"] is False and balanced(s["outbox"])
    assert rec.flush(5.0) and hub.event_ids == ["ev-ali-1"]
    assert list(state.iterdir()) == []  # nothing written there
    rec.close(1.0)
