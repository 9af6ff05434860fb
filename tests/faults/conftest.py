"""Fixtures of the fault suite, and the F03 check every fault test runs under.

Every test in ``tests/faults`` runs with the root logger at DEBUG (httpx and httpcore included) and fails at
teardown if the edge token, the pseudonymisation key, the signing key or a raw user id reached a log line
(fault F03: "a test runs the whole fault suite at DEBUG and greps").
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from edgerec_sdk import Recommender, RecommenderConfig
from edgerec_sdk.bundle import Manifest, sign_manifest
from edgerec_sdk.sync import EdgeSync, SyncConfig
from edgerec_sdk.testing import FakeClock, FakeHub, make_tiny_bundle

TOKEN = "tok-SECRET-edge-4f2a9c"
USER_KEY = "uidkey-SECRET-91be"
SIGNING = b"sign-SECRET-77d0"
RAW_USERS = ("alice@example.com", "bob.raw.user-id")
SECRETS = (TOKEN, USER_KEY, SIGNING.decode(), *RAW_USERS)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken format string is itself a finding, but never hide the test's result
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + repr(record.exc_info[1]) + " " + str(record.exc_info[1])
        self.lines.append(f"{record.name}:{record.levelname}:{text}")


def leaked(text: str) -> list[str]:
    """The secrets (by index, never their value) found in ``text``."""
    return [f"secret#{i}" for i, s in enumerate(SECRETS) if s in text]


@pytest.fixture(autouse=True)
def _debug_logs_hold_no_secrets() -> Iterator[_Capture]:
    cap = _Capture()
    root = logging.getLogger()
    old = root.level
    root.addHandler(cap)
    root.setLevel(logging.DEBUG)
    try:
        yield cap
    finally:
        root.removeHandler(cap)
        root.setLevel(old)
    found = leaked("\n".join(cap.lines))
    assert not found, f"F03: secrets in DEBUG logs: {found}"


@pytest.fixture
def debug_log(_debug_logs_hold_no_secrets: _Capture) -> _Capture:
    return _debug_logs_hold_no_secrets


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """v1, v2, v3, stamped a day apart (``created_at`` orders a channel: fault C04), signed with SIGNING."""
    root = tmp_path_factory.mktemp("bundles")
    return {v: stamp(make_tiny_bundle(root / v, model_version=v, seed=i, signing_key=SIGNING),
                     f"2020-01-0{i + 1}T00:00:00Z")
            for i, v in enumerate(("v1", "v2", "v3"))}


def stamp(bundle_dir: Path, created_at: str, key: bytes | None = SIGNING) -> Path:
    """Set the manifest's ``created_at`` (files untouched) and re-sign it."""
    raw = (bundle_dir / "manifest.json").read_bytes()
    m = dataclasses.replace(Manifest.from_bytes(raw), created_at=created_at)
    (bundle_dir / "manifest.json").write_bytes(m.to_bytes())
    if key is not None:
        sign_manifest(bundle_dir, key)
    return bundle_dir


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub(bundles: dict[str, Path], clock: FakeClock) -> FakeHub:
    h = FakeHub(token=TOKEN, signing_key=SIGNING, clock=clock)
    h.publish(bundles["v1"])
    return h


def sync_config(state: Path, url: str = "http://127.0.0.1:9", **kw: Any) -> SyncConfig:
    kw.setdefault("smoke_in_subprocess", False)
    kw.setdefault("poll_interval_s", 30.0)
    kw.setdefault("upload_interval_s", 3600.0)
    kw.setdefault("signing_key", SIGNING.decode())
    return SyncConfig(hub_url=url, token=TOKEN, user_id_key=USER_KEY, state_dir=str(state), **kw)


def edge(hub: FakeHub | None, state: Path, clock: FakeClock | None = None, **kw: Any) -> EdgeSync:
    return EdgeSync(sync_config(state, **kw), transport=hub, clock=clock, rng=random.Random(0))


def connect(hub: FakeHub | None, state: Path, *, config: RecommenderConfig | None = None, url: str | None = None,
            **kw: Any) -> Recommender:
    """``Recommender.connect`` as a storefront calls it, against the fake hub (no threads unless started)."""
    return Recommender.connect(url or "http://127.0.0.1:9", token=TOKEN, user_id_key=USER_KEY, state_dir=state,
                               signing_key=SIGNING.decode(), transport=None if url else hub, start=False,
                               config=config, sync_config=sync_config(state, url or "http://127.0.0.1:9", **kw))


def balanced(o: Mapping[str, int]) -> bool:
    """Faults I5: accepted == delivered + pending + dead_lettered + dropped_*."""
    dropped = sum(v for k, v in o.items() if k.startswith("dropped_"))
    return o["accepted"] == o["delivered"] + o["pending"] + o["dead_lettered"] + dropped


def outbox(x: Recommender | EdgeSync) -> Mapping[str, int]:
    s = x.status()
    sync = s.sync if isinstance(x, Recommender) else s
    return sync["outbox"]


def click(user: str, i: int, **kw: Any) -> dict[str, Any]:
    return {"user": user, "item": f"item-{(i % 20) + 1:06d}", "type": "click", "event_id": f"ev-{user[:3]}-{i}", **kw}
