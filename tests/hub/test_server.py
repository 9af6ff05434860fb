"""The hub's HTTP server under slow and idle clients: a real server on 127.0.0.1, real sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from edgerec_sdk.hub import HubApp, serve_in_thread
from edgerec_sdk.hub.server import RunningHub, ServerLimits
from edgerec_sdk.sync import protocol
from edgerec_sdk.sync.client import HubClient

ADMIN, EDGE = "admin-tok", "edge-tok"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    app = HubApp(tmp_path / "hub", admin_tokens=[ADMIN], edge_tokens=[EDGE], max_concurrent_batches=8)
    with serve_in_thread(app, limits=ServerLimits(idle_timeout_s=1, threads=4)) as running:
        yield running
    app.close()


def _connect(hub: RunningHub) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", hub.port), timeout=10.0)
    return sock


def _stalled_upload(hub: RunningHub) -> socket.socket:
    """A POST /v1/events that declares 1000 body bytes, sends 6 and stops."""
    sock = _connect(hub)
    sock.sendall((f"POST {protocol.EVENTS_PATH} HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {EDGE}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode() + b'{"v":1')
    return sock


def _real_batch(hub: RunningHub) -> protocol.BatchResult:
    client = HubClient(hub.url, token=EDGE)
    try:
        events = [orjson.dumps({"event_id": f"e{i}", "user": "p" * 32, "item": "it", "type": "click"})
                  for i in range(3)]
        body, headers = protocol.encode_batch(edge_id="edge-1", batch_id="b1", events=events)
        return client.post_events(body, headers, [f"e{i}" for i in range(3)])
    finally:
        client.close()


def test_stalled_uploads_do_not_block_collection(hub: RunningHub) -> None:
    # one more stalled upload than there are batch slots and worker threads together
    stalled = [_stalled_upload(hub) for _ in range(13)]
    try:
        result = _real_batch(hub)  # before: 429 "busy" for as long as the stalled uploads stayed open
        assert len(result.accepted) == 3
        assert hub.app.storage.count_events() == 3
    finally:
        for s in stalled:
            s.close()


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` (recv sees EOF or a reset) within the socket's timeout."""
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_idle_half_sent_sockets_are_closed(hub: RunningHub) -> None:
    half_headers = []
    for _ in range(20):
        sock = _connect(hub)
        sock.sendall(b"GET /v1/channels/stable/manifest HTTP/1.1\r\nHost: hu")
        half_headers.append(sock)
    stalled_body = _stalled_upload(hub)
    silent = _connect(hub)  # connected, never sends a byte
    try:
        # idle_timeout_s=1: each is closed within about two seconds; the socket timeout (10 s) bounds the test
        assert all(_closed_by_server(s) for s in [*half_headers, stalled_body, silent])
        assert len(_real_batch(hub).accepted) == 3  # and the hub still serves
    finally:
        for s in [*half_headers, stalled_body, silent]:
            s.close()


def test_server_limits_validated() -> None:
    with pytest.raises(ValueError, match="idle_timeout_s"):
        ServerLimits(idle_timeout_s=0)
    with pytest.raises(ValueError, match="threads"):
        ServerLimits(threads=True)
