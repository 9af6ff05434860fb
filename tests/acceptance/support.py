"""Shared pieces of the acceptance tests: a hub on a loopback port, edges made with ``Recommender.connect``."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sync.helpers import ADMIN, EDGE, KEY, bundle, new_hub  # noqa: F401 - re-exported

from edgerec_sdk import Recommender
from edgerec_sdk.bundle import load_bundle
from edgerec_sdk.hub import HubApp, serve_in_thread
from edgerec_sdk.hub.publish import make_tar
from edgerec_sdk.hub.server import RunningHub
from edgerec_sdk.sync import SyncConfig

UID_KEY = "storefront-uid-key"
HISTORIES: tuple[tuple[str, ...], ...] = tuple(
    (f"item-{i % 20 + 1:06d}", f"item-{(3 * i + 5) % 20 + 1:06d}") for i in range(12)
)


def sync_config(url: str, state: Path, **kw: Any) -> SyncConfig:
    kw.setdefault("poll_interval_s", 30.0)
    kw.setdefault("upload_interval_s", 0.02)
    kw.setdefault("smoke_in_subprocess", False)
    kw.setdefault("connect_timeout_s", 1.0)
    kw.setdefault("read_timeout_s", 5.0)
    kw.setdefault("backoff_base_s", 0.05)
    kw.setdefault("backoff_max_s", 0.5)
    return SyncConfig(hub_url=url, token=EDGE, user_id_key=UID_KEY, signing_key=KEY.decode(),
                      state_dir=str(state), **kw)


def connect(url: str, state: Path, *, transport: httpx.BaseTransport | None = None, start: bool = True,
            **kw: Any) -> Recommender:
    return Recommender.connect(url, token=EDGE, user_id_key=UID_KEY, state_dir=state,
                               sync_config=sync_config(url, state, **kw), transport=transport, start=start)


def publish_http(url: str, bundle_dir: Path, *, channel: str | None = "stable", rollout: float | None = None) -> None:
    """Publish over the wire, as ``edgerec publish`` does."""
    params: dict[str, Any] = {}
    if channel:
        params["channel"] = channel
    if rollout is not None:
        params["rollout"] = rollout
    r = httpx.post(f"{url}/v1/bundles", params=params, content=make_tar(bundle_dir),
                   headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30.0)
    if r.status_code not in (200, 201):
        raise AssertionError(r.text)


def expected_answers(bundle_dir: Path, k: int = 5) -> dict[tuple[str, ...], list[str]]:
    """What the version in ``bundle_dir`` answers for each of ``HISTORIES`` (a plain local Recommender)."""
    with Recommender(load_bundle(bundle_dir, signing_key=KEY)) as rec:
        return {h: rec.recommend("someone", k=k, history=list(h)).item_ids for h in HISTORIES}


def wait_for(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.01) -> bool:
    """Wait on a condition with a deadline (an ``Event.wait`` loop, never ``time.sleep``)."""
    deadline = time.monotonic() + timeout_s
    tick = threading.Event()
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        tick.wait(step_s)


@contextmanager
def running_hub(root: Path, port: int = 0) -> Iterator[RunningHub]:
    hub = serve_in_thread(new_hub(root), port=port)
    try:
        yield hub
    finally:
        hub.stop()


class Recording(httpx.BaseTransport):
    """Passes requests to an inner transport and keeps every outbound URL, header and (gunzipped) body."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.sent: list[bytes] = []
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.bodies.append(body)
        self.sent.append(body + str(request.url).encode() + repr(list(request.headers.raw)).encode())
        return self.inner.handle_request(request)


def wsgi(app: HubApp) -> httpx.WSGITransport:
    return httpx.WSGITransport(app=app)
