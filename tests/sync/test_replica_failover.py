"""``HubClient`` with several replica URLs: one retry on the next replica when the one in use is down."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from edgerec_sdk import Recommender
from edgerec_sdk.errors import ConfigError, HubStatusError, HubTransportError
from edgerec_sdk.sync import SyncConfig, protocol
from edgerec_sdk.sync.client import HubClient

A, B = "https://a.hub.example", "https://b.hub.example"


def replicas(answers: dict[str, int | None], seen: list[tuple[str, str | None]]) -> httpx.MockTransport:
    """Each host answers its status (``None``: the connection is refused); every request is recorded."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("Authorization")))
        status = answers[f"{request.url.scheme}://{request.url.host}"]
        if status is None:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(status, json={"ok": True}, headers={"Retry-After": "1"})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("down", [None, 502, 503, 504])
def test_a_dead_replica_costs_one_retry_and_the_next_one_stays(down: int | None) -> None:
    seen: list[tuple[str, str | None]] = []
    client = HubClient([A, B], token="T", transport=replicas({A: down, B: 200}, seen))
    assert client.get_status() == {"ok": True} and client.base_url == B and client.failovers == 1
    assert client.get_status() == {"ok": True}
    assert seen == [("a.hub.example", "Bearer T"), ("b.hub.example", "Bearer T"), ("b.hub.example", "Bearer T")]


def test_no_failover_for_answers_of_a_live_replica_or_when_all_are_down() -> None:
    seen: list[tuple[str, str | None]] = []
    client = HubClient([A, B], token="T", transport=replicas({A: 429, B: 200}, seen))
    with pytest.raises(HubStatusError) as info:
        client.get_status()
    assert info.value.status == 429 and client.base_url == A and len(seen) == 1
    client = HubClient([A, B], token="T", transport=replicas({A: None, B: None}, seen))
    with pytest.raises(HubTransportError):
        client.get_manifest("stable")
    assert client.failovers == 1  # one retry, then the error goes to the caller's backoff


def test_event_batches_fail_over_and_the_token_never_leaves_the_replicas() -> None:
    seen: list[tuple[str, str | None]] = []
    body, headers = protocol.encode_batch(edge_id="e", batch_id="b", events=[orjson.dumps(
        {"event_id": "x", "user": "u", "item": "i", "type": "click"})])

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("Authorization")))
        if request.url.host == "a.hub.example":
            raise httpx.ReadTimeout("hung", request=request)
        if request.url.host == "cdn.example":
            return httpx.Response(200, content=b"abc")
        return httpx.Response(200, json={"accepted": 1, "duplicates": 0, "rejected": {}, "accepted_ids": ["x"]})

    client = HubClient([A, B], token="T", transport=httpx.MockTransport(handle))
    client.post_events(body, headers, ["x"])
    assert client.base_url == B
    assert client.get_bytes("https://cdn.example/v1/manifest.json", max_bytes=10) == b"abc"
    assert seen[-1] == ("cdn.example", None)


def test_sync_config_takes_replica_urls() -> None:
    cfg = SyncConfig.from_mapping({"hub_url": A, "hub_urls": [B], "allow_unsigned_bundles": True})
    assert cfg.hub_urls == (B,)
    with pytest.raises(ConfigError, match="hub_urls"):
        SyncConfig(hub_url=A, hub_urls=B, allow_unsigned_bundles=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="non-loopback"):
        SyncConfig(hub_url=A, hub_urls=("http://b.hub.example",), allow_unsigned_bundles=True)


def test_connect_takes_a_list_of_replicas(tmp_path: Path) -> None:
    rec = Recommender.connect([A, B], token="T", user_id_key="k", state_dir=tmp_path, allow_unsigned_bundles=True,
                              start=False)
    try:
        assert rec._sync.config.hub_urls == (B,) and rec._sync.client.base_urls == (A, B)  # type: ignore[attr-defined]
    finally:
        rec.close(0.1)
