from __future__ import annotations

import gzip
import random
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from edgerec_sdk.sync.client import HubClient
from edgerec_sdk.sync.config import OutboxConfig, SyncConfig
from edgerec_sdk.sync.outbox import Outbox
from edgerec_sdk.sync.protocol import Backoff
from edgerec_sdk.sync.uploader import Uploader

from .fakes import FakeClock

Handler = Callable[[httpx.Request], httpx.Response]


class Hub:
    """A scripted hub: answers from a list, then acknowledges everything; records every batch."""

    def __init__(self, script: list[int | tuple[int, dict[str, str]]] | None = None) -> None:
        self.script = list(script or [])
        self.batches: list[dict] = []
        self.stored: set[str] = set()

    def __call__(self, req: httpx.Request) -> httpx.Response:
        doc = orjson.loads(gzip.decompress(req.content))
        self.batches.append(doc)
        if self.script:
            step = self.script.pop(0)
            status, headers = step if isinstance(step, tuple) else (step, {})
            if status != 200:
                return httpx.Response(status, headers=headers)
        ids = [e["event_id"] for e in doc["events"]]
        dups = [i for i in ids if i in self.stored]
        self.stored.update(ids)
        return httpx.Response(200, json={"accepted": len(ids) - len(dups), "duplicates": len(dups),
                                         "duplicate_ids": dups, "rejected": []})


def make(tmp_path: Path, clock: FakeClock, handler: Handler, *, batch_size: int = 500) -> Uploader:
    box = Outbox(OutboxConfig(), path=tmp_path / "o.sqlite3", clock=clock)
    client = HubClient("https://hub.test", token="t", transport=httpx.MockTransport(handler), clock=clock)
    config = SyncConfig(hub_url="https://hub.test", allow_unsigned_bundles=True, edge_id="edge-1",
                        outbox=OutboxConfig(batch_size=batch_size))
    return Uploader(box, client, config, clock=clock, backoff=Backoff(rng=random.Random(0)), rng=random.Random(0))


def fill(up: Uploader, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        ev = {"event_id": f"e{i}", "user": "p1", "item": f"i{i}", "type": "click"}
        assert up.outbox.put(f"e{i}", "p1", orjson.dumps(ev)) == "stored"


def balanced(c: dict[str, int]) -> bool:
    return c["accepted"] == (c["delivered"] + c["pending"] + c["dead_lettered"] + c["dropped_outbox_full"]
                             + c["dropped_memory_full"] + c["dropped_forgotten"])


def test_a06_5xx_then_ok(tmp_path: Path, clock: FakeClock) -> None:
    hub = Hub([500, 502, 503, 504])
    up = make(tmp_path, clock, hub)
    fill(up, 3)
    delays = []
    for _ in range(4):
        delays.append(up.upload_once())
        assert up.upload_once() == pytest.approx(delays[-1])  # not due yet: no request
        clock.advance(delays[-1])
    # doubling backoff, each within [50 %, 100 %] of 1, 2, 4, 8 s
    for d, nominal in zip(delays, [1, 2, 4, 8], strict=True):
        assert nominal / 2 <= d <= nominal
    assert len(hub.batches) == 4
    assert up.upload_once() == up.config.upload_interval_s  # the 200
    assert len(hub.batches) == 5
    assert len({b["batch_id"] for b in hub.batches}) == 1  # same batch id on every retry
    assert up.backoff.failures == 0
    c = up.outbox.counters()
    assert c["delivered"] == 3 and c["pending"] == 0 and balanced(c)


def test_a07_retry_after_honoured_and_capped(tmp_path: Path, clock: FakeClock) -> None:
    hub = Hub([(429, {"Retry-After": "20"}), (503, {"Retry-After": "1e9"}), (503, {"Retry-After": "-3"})])
    up = make(tmp_path, clock, hub)
    fill(up, 1)
    assert up.upload_once() == 20.0
    clock.advance(20)
    assert up.upload_once() <= 2.0  # absurd value ignored: plain backoff
    clock.advance(2)
    assert up.upload_once() <= 4.0
    clock.advance(4)
    up.upload_once()
    assert up.outbox.pending() == 0


def test_a08_auth_failure_backs_off_long_and_recovers(tmp_path: Path, clock: FakeClock) -> None:
    hub = Hub([401, 403])
    up = make(tmp_path, clock, hub)
    fill(up, 2)
    d = up.upload_once()
    assert 150 <= d <= 300 and up.auth_failed
    assert up.outbox.pending() == 2  # events stay
    clock.advance(d)
    d = up.upload_once()
    assert 150 <= d <= 300 and up.auth_failed
    clock.advance(d)
    up.upload_once()  # token rotated on the hub: recovers without restart
    assert not up.auth_failed and up.outbox.pending() == 0


def test_a13_rejected_events_dead_lettered(tmp_path: Path, clock: FakeClock) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"accepted": 1, "duplicates": 0, "duplicate_ids": [],
                                         "rejected": [{"event_id": "e1", "reason": "bad_type"}]})

    up = make(tmp_path, clock, handler)
    fill(up, 2)
    up.upload_once()
    c = up.outbox.counters()
    assert c["delivered"] == 1 and c["dead_lettered"] == 1 and c["pending"] == 0 and balanced(c)
    assert up.outbox.dead_letters() == [("e1", "bad_type")]


def test_a13_whole_batch_400_dead_lettered_once(tmp_path: Path, clock: FakeClock) -> None:
    hub = Hub([400])
    up = make(tmp_path, clock, hub)
    fill(up, 3)
    up.upload_once()
    c = up.outbox.counters()
    assert c["dead_lettered"] == 3 and c["pending"] == 0 and balanced(c)
    assert up.upload_once() == up.config.upload_interval_s and len(hub.batches) == 1  # never repeated


def test_a10_404_never_repeats_the_request(tmp_path: Path, clock: FakeClock) -> None:
    hub = Hub([404])
    up = make(tmp_path, clock, hub)
    fill(up, 2)
    d = up.upload_once()
    assert d >= 150 and up.outbox.pending() == 2
    assert up.upload_once() > 0 and len(hub.batches) == 1
    clock.advance(d)
    up.upload_once()
    assert len(hub.batches) == 2 and hub.batches[0]["batch_id"] != hub.batches[1]["batch_id"]
    assert up.outbox.pending() == 0


def test_a14_413_splits_batch(tmp_path: Path, clock: FakeClock) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        doc = orjson.loads(gzip.decompress(req.content))
        bodies.append(req.content)
        if len(doc["events"]) > 2:
            return httpx.Response(413)
        ids = [e["event_id"] for e in doc["events"]]
        return httpx.Response(200, json={"accepted": len(ids), "duplicates": 0, "rejected": []})

    bodies: list[bytes] = []
    up = make(tmp_path, clock, handler)
    fill(up, 5)
    for _ in range(10):
        up.upload_once()
    c = up.outbox.counters()
    assert c["delivered"] == 5 and c["pending"] == 0
    assert len(bodies) == len(set(bodies))  # never the same body twice


def test_a14_single_event_over_cap_dead_lettered(tmp_path: Path, clock: FakeClock) -> None:
    up = make(tmp_path, clock, lambda req: httpx.Response(413))
    fill(up, 1)
    up.upload_once()
    assert up.outbox.dead_letters() == [("e0", "too_large")]


def test_a15_lost_ack_resent_with_same_batch_and_ids(tmp_path: Path, clock: FakeClock) -> None:
    stored: set[str] = set()
    batches: list[dict] = []

    def handler(req: httpx.Request) -> httpx.Response:
        doc = orjson.loads(gzip.decompress(req.content))
        batches.append(doc)
        ids = [e["event_id"] for e in doc["events"]]
        dups = [i for i in ids if i in stored]
        stored.update(ids)
        if len(batches) == 1:
            raise httpx.ReadTimeout("committed, but the answer was lost")
        return httpx.Response(200, json={"accepted": len(ids) - len(dups), "duplicates": len(dups),
                                         "duplicate_ids": dups, "rejected": []})

    up = make(tmp_path, clock, handler)
    fill(up, 3)
    clock.advance(up.upload_once())
    up.upload_once()
    assert batches[0] == batches[1]
    assert len(stored) == 3 and up.outbox.pending() == 0
    assert up.outbox.counters()["delivered"] == 3


def test_d07_flush_with_hub_down_returns_false_by_deadline(tmp_path: Path, clock: FakeClock) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    up = make(tmp_path, clock, handler)
    fill(up, 2)
    start = clock.monotonic()
    assert up.flush(timeout_s=10.0) is False
    assert clock.monotonic() - start <= 10.0 + 1e-9
    assert up.outbox.pending() == 2  # rows stay for the next process


def test_d06_flush_with_hub_up_delivers_everything(tmp_path: Path, clock: FakeClock) -> None:
    hub = Hub([503])
    up = make(tmp_path, clock, hub, batch_size=4)
    fill(up, 10)
    assert up.flush(timeout_s=30.0) is True
    assert len(hub.stored) == 10


def test_uploader_thread_delivers_and_stops(tmp_path: Path) -> None:
    delivered = threading.Event()
    hub = Hub()

    def handler(req: httpx.Request) -> httpx.Response:
        resp = hub(req)
        if len(hub.stored) >= 5:
            delivered.set()
        return resp

    box = Outbox(OutboxConfig(), path=tmp_path / "o.sqlite3")
    config = SyncConfig(hub_url="https://hub.test", allow_unsigned_bundles=True, upload_interval_s=0.01)
    up = Uploader(box, HubClient("https://hub.test", token="t", transport=httpx.MockTransport(handler)), config,
                  edge_id="e")
    for i in range(5):
        box.put(f"e{i}", "p", orjson.dumps({"event_id": f"e{i}", "user": "p", "item": "i", "type": "view"}))
    assert up.start()
    assert up.task.started and up.task.name == "edgerec-uploader"
    assert delivered.wait(5.0)
    assert up.stop(timeout_s=5.0)
    assert not up.start()  # stopped for good
    box.close()
