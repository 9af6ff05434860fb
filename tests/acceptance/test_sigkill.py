"""Acceptance 2: the hub is down, 10,000 feedback events go through ``rec.feedback``, the edge process
is SIGKILLed; edge and hub restart, and the hub ends with exactly 10,000 distinct events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .support import bundle, connect, publish_http, running_hub

N_EVENTS = 10_000

# The edge, in its own process. It serves v1 from the hub, then (told on stdin that the hub is gone) takes
# 10,000 events, waits until its uploader has failed against the dead hub (so rows are leased by it when it
# dies) and says so on stdout; then it waits to be killed.
_EDGE = """
import sys, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from acceptance.support import connect

rec = connect(sys.argv[1], Path(sys.argv[2]), poll_interval_s=0.2)
tick = threading.Event()

def until(pred, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        tick.wait(0.01)

until(lambda: rec.status().model_version == "v1", 20.0)
print("serving", flush=True)
sys.stdin.readline()
for i in range(N_EVENTS):
    rec.feedback({"user": "shopper-%d" % (i % 97), "item": "item-%06d" % (i % 20 + 1),
                  "type": ("view", "click", "purchase")[i % 3]})
until(lambda: rec.status().sync["upload_failures_in_a_row"] >= 1, 20.0)
print("stored", rec.status().sync["outbox"]["pending"], flush=True)
sys.stdin.readline()
""".replace("N_EVENTS", str(N_EVENTS))


def test_sigkill_with_hub_down_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "edge"
    tests_dir = str(Path(__file__).resolve().parents[1])
    with running_hub(tmp_path / "hub") as hub:
        publish_http(hub.url, bundle(tmp_path, "v1"))
        url, port = hub.url, hub.port
        proc = subprocess.Popen([sys.executable, "-c", _EDGE, url, str(state), tests_dir],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
        line = proc.stdout.readline()
        if line.strip() != "serving":
            proc.kill()
            raise AssertionError(proc.stderr.read()[-3000:])
    try:
        # the hub is stopped now
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line.split()[:2] == ["stored", str(N_EVENTS)], line
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10.0) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10.0)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()

    with running_hub(tmp_path / "hub", port=port) as hub:
        rec = connect(hub.url, state, start=False)
        status = rec.status()
        assert status.model_version == "v1" and status.bundle_origin == "disk"  # served at once, from disk
        assert status.sync["outbox"]["pending"] == N_EVENTS
        assert rec.flush(timeout_s=25.0), rec.status().sync
        storage = hub.app.storage
        assert storage.count_events() == N_EVENTS
        assert len(set(storage.event_ids())) == N_EVENTS
        assert storage.status()["per_model_version"]["v1"]["events"] == N_EVENTS
        o = rec.status().sync["outbox"]
        assert o["accepted"] == o["delivered"] == N_EVENTS and o["pending"] == 0
        rec.close(2.0)
