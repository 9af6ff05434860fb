"""What one ``Recommender.feedback()`` call costs with a hub: the durable SQLite outbox beside the memory-only one.

Both recommenders are connected to an in-process fake hub that acknowledges every batch, so the uploader thread
leases and acknowledges rows while the requests go on, as in production. Per variant: ``--events`` calls of
``feedback()`` from one thread (after a warm-up of 500), each timed with ``perf_counter``; the line gives the
median, p99, p99.9 and the worst call in microseconds, and the outbox counters at the end (every accepted event
is delivered or pending: none lost). ``memory`` keeps the outbox in memory (``OutboxConfig(path=":memory:")``,
nothing survives the process); ``durable`` is the default SQLite outbox in the state directory, each event
appended to the process's write-ahead log (one ``write(2)``) and stored in SQLite in groups by the uploader;
``durable_commit_each`` is the same outbox with ``append_log=False``: one SQLite transaction inside every call.

Run (about a minute)::

    python benchmarks/bench_feedback.py --events 20000

The load of the machine matters: the machine line gives the 1-minute load at the start, and each variant line
the load when it ran.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import add_out_argument, emit, start

from edgerec_sdk import Recommender
from edgerec_sdk.sync import OutboxConfig, SyncConfig
from edgerec_sdk.testing import FakeHub, make_tiny_bundle

TOKEN, USER_KEY, SIGNING = "bench-token", "bench-user-key", "bench-signing-key"


def run_variant(name: str, hub: FakeHub, state: Path, n: int) -> dict[str, Any]:
    outbox = {"memory": OutboxConfig(path=":memory:", max_memory_events=n + 1000), "durable": OutboxConfig(),
              "durable_commit_each": OutboxConfig(append_log=False)}[name]
    cfg = SyncConfig(hub_url="http://127.0.0.1:9", token=TOKEN, user_id_key=USER_KEY, state_dir=str(state),
                     signing_key=SIGNING, smoke_in_subprocess=False, outbox=outbox)
    rec = Recommender.connect(cfg.hub_url, token=TOKEN, user_id_key=USER_KEY, state_dir=state, sync_config=cfg,
                              transport=hub, start=False)
    rec.poll_once()
    items = [f"item-{i:06d}" for i in range(1, 21)]
    events = [{"user": f"user-{i % 997}", "item": items[i % 20], "type": "click"} for i in range(n + 500)]
    for event in events[:500]:
        rec.feedback(event)
    times = np.empty(n, dtype=np.float64)
    clock = time.perf_counter
    for i, event in enumerate(events[500:]):
        t0 = clock()
        rec.feedback(event)
        times[i] = clock() - t0
    delivered_all = rec.flush(30.0)
    outbox_counts = dict(rec.status().sync["outbox"])
    rec.close(1.0)
    us = times * 1e6
    return {
        "variant": name, "events": n, "load1": round(os.getloadavg()[0], 2),
        "p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
        "p999_us": round(float(np.percentile(us, 99.9)), 1), "max_us": round(float(us.max()), 1),
        "mean_us": round(float(us.mean()), 1), "over_2ms": int((us > 2000).sum()),
        "flushed": delivered_all, "accepted": outbox_counts.get("accepted"),
        "delivered": outbox_counts.get("delivered"), "pending": outbox_counts.get("pending"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="timed feedback() calls per variant")
    parser.add_argument("--rounds", type=int, default=3, help="each variant runs this many times, interleaved")
    add_out_argument(parser, "feedback")
    args = parser.parse_args(argv)
    start(args.out)
    with tempfile.TemporaryDirectory(prefix="edgerec-bench-feedback-") as tmp:
        root = Path(tmp)
        hub = FakeHub(token=TOKEN, signing_key=SIGNING.encode())
        hub.publish(make_tiny_bundle(root / "v1", model_version="v1", signing_key=SIGNING.encode()))
        for r in range(args.rounds):
            for name in ("memory", "durable", "durable_commit_each"):
                emit(bench="feedback", round=r, **run_variant(name, hub, root / f"state-{name}-{r}", args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
