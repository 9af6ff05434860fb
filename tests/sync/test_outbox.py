from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import orjson
import pytest

from edgerec_sdk.sync.config import OutboxConfig
from edgerec_sdk.sync.outbox import Outbox

from .fakes import FakeClock


def body(i: int, user: str = "p1") -> bytes:
    return orjson.dumps({"event_id": f"e{i}", "user": user, "item": f"i{i}", "type": "click"})


def balanced(c: dict[str, int]) -> bool:
    return c["accepted"] == (
        c["delivered"] + c["pending"] + c["dead_lettered"]
        + sum(v for k, v in c.items() if k.startswith("dropped_"))
    )


@pytest.fixture
def box(tmp_path: Path, clock: FakeClock) -> Outbox:
    b = Outbox(OutboxConfig(), path=tmp_path / "outbox.sqlite3", clock=clock)
    yield b
    b.close()


def test_put_lease_ack_balance(box: Outbox) -> None:
    for i in range(10):
        assert box.put(f"e{i}", "p1", body(i)) == "stored"
    leased = box.lease("w1", 4)
    assert [e.event_id for e in leased] == ["e0", "e1", "e2", "e3"]
    assert box.lease("w2", 100)[0].event_id == "e4"  # leased rows are invisible to others
    assert box.ack(["e0", "e1", "e2"], {"e3": "bad_type"})
    c = box.counters()
    assert (c["accepted"], c["delivered"], c["dead_lettered"], c["pending"]) == (10, 3, 1, 6)
    assert balanced(c)
    assert box.dead_letters() == [("e3", "bad_type")]


def test_e09_same_event_id_stored_once(box: Outbox) -> None:
    assert box.put("e1", "p1", body(1)) == "stored"
    assert box.put("e1", "p1", body(1)) == "duplicate"
    c = box.counters()
    assert c["accepted"] == 1 and c["pending"] == 1 and c["duplicates"] == 1


def test_lease_expires_for_other_workers(box: Outbox, clock: FakeClock) -> None:
    box.put("e1", "p1", body(1))
    assert box.lease("w1")
    assert box.lease("w2") == []
    clock.advance(61)
    assert [e.event_id for e in box.lease("w2")] == ["e1"]


def test_d14_outbox_full_drops_and_counts(tmp_path: Path, clock: FakeClock) -> None:
    cap = len(body(0)) * 3
    b = Outbox(OutboxConfig(max_outbox_bytes=cap), path=tmp_path / "o.sqlite3", clock=clock)
    results = [b.put(f"e{i}", "p1", body(i)) for i in range(5)]
    assert results == ["stored"] * 3 + ["dropped_outbox_full"] * 2
    c = b.counters()
    assert c["dropped_outbox_full"] == 2 and c["pending"] == 3 and balanced(c)
    b.ack([e.event_id for e in b.lease("w")])
    assert b.put("e9", "p1", body(9)) == "stored"  # room again once delivered; stored rows never evicted
    b.close()


def test_f07_forget_erases_pending_rows(box: Outbox) -> None:
    box.put("e1", "p1", body(1, "p1"))
    box.put("e2", "p2", body(2, "p2"))
    box.put("e3", "p1", body(3, "p1"))
    assert box.forget("p1") == 2
    c = box.counters()
    assert c["pending"] == 1 and c["dropped_forgotten"] == 2 and balanced(c)


def test_d17_two_workers_share_one_outbox(tmp_path: Path, clock: FakeClock) -> None:
    a = Outbox(OutboxConfig(), path=tmp_path / "o.sqlite3", clock=clock)
    b = Outbox(OutboxConfig(), path=tmp_path / "o.sqlite3", clock=clock)
    a.put("e1", "p", body(1))
    b.put("e2", "p", body(2))
    la, lb = a.lease("a", 1), b.lease("b", 10)
    assert {e.event_id for e in la} | {e.event_id for e in lb} == {"e1", "e2"}
    assert not {e.event_id for e in la} & {e.event_id for e in lb}
    a.ack([e.event_id for e in la])
    b.ack([e.event_id for e in lb])
    assert a.counters()["pending"] == 0 and balanced(b.counters())
    a.close()
    b.close()


def test_d10_rows_survive_reopen(tmp_path: Path, clock: FakeClock) -> None:
    a = Outbox(OutboxConfig(), path=tmp_path / "o.sqlite3", clock=clock)
    for i in range(3):
        a.put(f"e{i}", "p", body(i))
    a.lease("w")  # leased, then the process "dies"
    a.close()
    b = Outbox(OutboxConfig(), path=tmp_path / "o.sqlite3", clock=clock)
    clock.advance(61)
    assert [e.event_id for e in b.lease("w2")] == ["e0", "e1", "e2"]
    b.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_d13_unwritable_outbox_spills_to_memory_then_drains(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "o.sqlite3"
    b = Outbox(OutboxConfig(max_memory_events=2), path=path, clock=clock)
    b.close()
    os.chmod(path, stat.S_IRUSR)
    b = Outbox(OutboxConfig(max_memory_events=2), path=path, clock=clock)
    assert [b.put(f"e{i}", "p", body(i)) for i in range(3)] == ["spilled", "spilled", "dropped_memory_full"]
    assert not b.durable and balanced(b.counters())
    b.close()


def test_d13_locked_outbox_spills_then_drains(tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "o.sqlite3"
    b = Outbox(OutboxConfig(max_memory_events=2, busy_timeout_s=0), path=path, clock=clock)
    blocker = sqlite3.connect(str(path), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    assert b.put("e1", "p", body(1)) == "spilled"
    assert b.put("e2", "p", body(2)) == "spilled"
    assert b.put("e3", "p", body(3)) == "dropped_memory_full"
    assert not b.durable
    c = b.counters()  # reads still work under a writer's lock (WAL)
    assert c["pending"] == 2 and c["dropped_memory_full"] == 1 and balanced(c)
    blocker.execute("ROLLBACK")
    blocker.close()
    monkeypatch.setattr("edgerec_sdk.sync.outbox._RETRY_DB_S", 0.0)
    assert b.put("e4", "p", body(4)) == "stored"
    c = b.counters()
    assert b.durable and c["pending"] == 3 and c["memory_spill"] == 0 and balanced(c)
    b.close()


def test_memory_only_outbox_leases_and_acks(clock: FakeClock) -> None:
    b = Outbox(OutboxConfig(), path=None, clock=clock)
    b.put("e1", "p", body(1))
    b.put("e2", "p", body(2))
    leased = b.lease("w")
    assert [e.event_id for e in leased] == ["e1", "e2"]
    assert b.lease("w") == []
    b.ack(["e1"], {"e2": "bad"})
    c = b.counters()
    assert c["delivered"] == 1 and c["dead_lettered"] == 1 and c["pending"] == 0 and balanced(c)


def test_d15_corrupt_outbox_moved_aside(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "o.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    b = Outbox(OutboxConfig(), path=path, clock=clock)
    assert b.durable
    assert b.put("e1", "p", body(1)) == "stored"
    assert any(p.name.startswith("o.sqlite3.corrupt-") for p in tmp_path.iterdir())
    b.close()


def test_dead_letter_table_is_capped_but_counted(tmp_path: Path, clock: FakeClock) -> None:
    b = Outbox(OutboxConfig(max_dead_letter=2), path=tmp_path / "o.sqlite3", clock=clock)
    for i in range(5):
        b.put(f"e{i}", "p", body(i))
    b.ack([], {f"e{i}": "bad" for i in range(5)})
    c = b.counters()
    assert c["dead_lettered"] == 5 and c["dead_letter_rows"] == 2 and balanced(c)
    b.close()


def test_d10_leases_of_a_dead_process_are_taken_back(box: Outbox) -> None:
    """A SIGKILLed uploader's lease must not hold its batch back for ``lease_s``."""
    import subprocess
    import sys

    from edgerec_sdk.sync.leases import holder_is_dead, new_owner

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    for i in range(6):
        box.put(f"e{i}", "p1", body(i))
    mine = new_owner("edge")
    dead_owner = mine.replace(f":{os.getpid()}:", f":{dead}:")
    live_owner = mine.replace(f":{os.getpid()}:", f":{os.getppid()}:")
    assert holder_is_dead(dead_owner) and not holder_is_dead(live_owner) and not holder_is_dead(mine)
    assert not holder_is_dead("edge@another-host:1:abcd") and not holder_is_dead("w1")
    assert len(box.lease(dead_owner, 3)) == 3
    assert len(box.lease(live_owner, 3)) == 3
    assert [e.event_id for e in box.lease(mine, 10)] == ["e0", "e1", "e2"]  # the dead one's, at once
    assert box.lease(mine, 10) == []  # the live holder keeps its lease until it expires


def test_corrupt_outbox_loss_is_counted_and_counters_survive(tmp_path: Path, clock: FakeClock,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.sqlite3"
    b = Outbox(OutboxConfig(), path=path, clock=clock)
    for i in range(500):
        b.put(f"e{i}", "p", body(i))
    b.ack([f"e{i}" for i in range(40)])
    assert b.counters()["pending"] == 460
    b.close()
    raw = bytearray(path.read_bytes())
    page = 4096
    assert len(raw) > 12 * page
    raw[8 * page:len(raw) - page] = b"\xa5" * (len(raw) - 9 * page)  # the outbox rows' pages, not the counters'
    path.write_bytes(bytes(raw))
    with caplog.at_level("ERROR"):
        again = Outbox(OutboxConfig(), path=path, clock=clock)  # the next start finds it corrupt
    assert any(p.name.startswith("o.sqlite3.corrupt-") for p in tmp_path.iterdir())
    again.put("new", "p", body(999))
    c = again.counters()
    # before: accepted == 1, delivered == 0: 500 events and 40 deliveries vanished without a trace
    assert c["accepted"] == 501 and c["delivered"] == 40 and c["dropped_corrupt"] == 460 and c["pending"] == 1
    assert balanced(c)
    assert any("460 pending events lost" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    again.close()

def _logs(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if ".append-" in p.name)


def test_d22_append_is_durable_counted_and_stored_in_groups(box: Outbox, tmp_path: Path) -> None:
    for i in range(5):
        assert box.append(f"e{i}", "p1", body(i)) == "appended"
    assert len(_logs(tmp_path / "outbox.sqlite3")) == 1  # one file of this process, not yet in SQLite
    c = box.counters()
    assert (c["accepted"], c["pending"], c["appended"]) == (5, 5, 5) and balanced(c)
    assert box.append("e0", "p1", body(0)) == "appended"  # a duplicate id is found when stored
    assert [e.event_id for e in box.lease("w1", 3)] == ["e0", "e1", "e2"]  # lease stores the log first
    c = box.counters()
    assert (c["accepted"], c["pending"], c["appended"], c["duplicates"]) == (5, 5, 0, 1) and balanced(c)
    assert _logs(tmp_path / "outbox.sqlite3") == []
    assert box.append("e9", "p2", body(9, "p2")) == "appended"
    assert box.forget("p2") == 1  # the user's appended events are erased with the rest
    assert box.counters()["pending"] == 5 and balanced(box.counters())


def test_d22_log_of_a_killed_process_replayed_once_torn_tail_ignored(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    first = Outbox(OutboxConfig(), path=path)
    first.close()
    pid = os.fork()
    if pid == 0:  # a worker that appends, is killed before it stores anything, and leaves half a record
        try:
            child = Outbox(OutboxConfig(), path=path)
            for i in range(20):
                child.append(f"e{i}", "p1", body(i))
            if child._log is not None and child._log._fd >= 0:
                os.write(child._log._fd, b"\x05\x00\x02")
        finally:
            os.kill(os.getpid(), 9)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and len(_logs(path)) == 1
    again = Outbox(OutboxConfig(), path=path)  # opening the outbox replays the dead process's log
    c = again.counters()
    assert (c["accepted"], c["pending"], c["appended"]) == (20, 20, 0) and balanced(c)
    assert _logs(path) == []
    third = Outbox(OutboxConfig(), path=path)
    assert third.counters()["accepted"] == 20  # nothing replayed twice
    third.close()
    again.close()


def test_d22_append_log_off_or_memory_only_commits_in_the_call(tmp_path: Path) -> None:
    off = Outbox(OutboxConfig(append_log=False), path=tmp_path / "off.sqlite3")
    assert off.append("e1", "p1", body(1)) == "stored" and _logs(tmp_path / "off.sqlite3") == []
    off.close()
    assert Outbox(OutboxConfig(), path=None).append("e1", "p1", body(1)) == "spilled"


def test_f07_forget_in_one_worker_erases_what_another_appended_before(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    a, b = Outbox(OutboxConfig(), path=path), Outbox(OutboxConfig(), path=path)  # two workers of one host
    a.append("e1", "p2", body(1, "p2"))
    a.append("e2", "p1", body(2))
    assert b.forget("p2") == 0  # not in SQLite yet: still in worker a's append log
    a.append("e3", "p2", body(3, "p2"))  # after the forget: kept
    assert sorted(e.event_id for e in a.lease("w", 10)) == ["e2", "e3"]
    c = a.counters()
    assert (c["dropped_forgotten"], c["pending"]) == (1, 2) and balanced(c)
    a.close()
    b.close()
