from __future__ import annotations

import gzip
import random

import orjson
import pytest

from edgerec_sdk.errors import HubAuthError, HubProtocolError, HubStatusError, HubTransportError
from edgerec_sdk.sync import protocol
from edgerec_sdk.sync.protocol import Backoff, is_retryable, parse_retry_after


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_g1_retryable_statuses(status: int) -> None:
    assert is_retryable(status)


@pytest.mark.parametrize("status", [200, 301, 400, 401, 403, 404, 405, 409, 410, 413, 422])
def test_g1_not_retryable_statuses(status: int) -> None:
    assert not is_retryable(status)


def test_g1_retryable_errors() -> None:
    assert is_retryable(HubTransportError("reset"))
    assert is_retryable(HubStatusError("x", status=503))
    assert not is_retryable(HubAuthError("x", status=401))
    assert is_retryable(HubProtocolError("portal page"))
    with pytest.raises(TypeError):
        is_retryable(True)


def test_g1_backoff_doubles_to_cap_with_jitter_and_resets() -> None:
    b = Backoff(base_s=1.0, max_s=30.0, jitter_ratio=0.5, rng=random.Random(7))
    nominal = [1, 2, 4, 8, 16, 30, 30, 30]
    for n in nominal:
        d = b.next_delay()
        assert n * 0.5 <= d <= n
    b.reset()
    assert 0.5 <= b.next_delay() <= 1.0


def test_g1_backoff_is_seeded() -> None:
    a = [Backoff(rng=random.Random(3)).next_delay() for _ in range(3)]
    b = [Backoff(rng=random.Random(3)).next_delay() for _ in range(3)]
    assert a == b


def test_a07_retry_after_is_a_floor() -> None:
    b = Backoff(rng=random.Random(1))
    assert b.next_delay(retry_after_s=20.0) == 20.0
    assert b.next_delay(retry_after_s=0.0) <= 2.0


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("1e9", None),
        ("-5", None),
        ("garbage", None),
        ("", None),
        (None, None),
        ("301", None),
        ("Tue, 14 Nov 2023 22:14:20 GMT", 60.0),
        ("Tue, 14 Nov 2023 22:00:00 GMT", None),
        ("Tue, 14 Nov 2025 22:00:00 GMT", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_a07_retry_after_parsing(value: str | None, expected: float | None) -> None:
    got = parse_retry_after(value, now_s=NOW, max_s=300.0)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_batch_roundtrip_with_gzip() -> None:
    events = [orjson.dumps({"event_id": f"e{i}", "user": "u", "item": "i", "type": "click"}) for i in range(3)]
    body, headers = protocol.encode_batch(edge_id="edge", batch_id="b1", events=events)
    assert headers["Content-Encoding"] == "gzip"
    raw = protocol.decompress_body(body, headers["Content-Encoding"], max_bytes=10_000)
    edge, batch, evs = protocol.decode_batch(raw)
    assert (edge, batch, [e["event_id"] for e in evs]) == ("edge", "b1", ["e0", "e1", "e2"])


def test_gzip_bomb_is_capped() -> None:
    bomb = gzip.compress(b"\0" * 10_000_000)
    with pytest.raises(OverflowError):
        protocol.decompress_body(bomb, "gzip", max_bytes=1_000_000)
    with pytest.raises(HubProtocolError):
        protocol.decompress_body(b"not gzip", "gzip", max_bytes=100)
    with pytest.raises(HubProtocolError):
        protocol.decompress_body(b"x", "br", max_bytes=100)


def test_f06_wire_event_allow_list() -> None:
    ev = protocol.wire_event({"event_id": "e", "user": "p", "item": "i", "type": "view", "query": "secret", "x": 1})
    assert set(ev) == {"event_id", "user", "item", "type"}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"event_id": "e", "user": "u", "item": "i", "type": "click"}, None),
        ({"event_id": "e", "user": "u", "type": "forget"}, None),
        ({"event_id": "e", "user": "u", "item": "i", "type": "nope"}, "bad_type"),
        ({"event_id": "e", "user": "u", "type": "click"}, "bad_item"),
        ({"event_id": "e", "user": "u", "item": "i", "type": "click", "query": "q"}, "unknown_field"),
        ({"event_id": "e", "user": "u", "item": "i", "type": "click", "value": float("nan")}, "bad_value"),
        ({"user": "u", "item": "i", "type": "click"}, "bad_event_id"),
        ("x", "not_an_object"),
    ],
)
def test_a13_validate_wire_event(event: object, reason: str | None) -> None:
    assert protocol.validate_wire_event(event) == reason


def test_decode_batch_result_marks_duplicates_and_rejections() -> None:
    raw = orjson.dumps({"accepted": 1, "duplicates": 1, "duplicate_ids": ["b"], "rejected": [{"event_id": "c", "reason": "bad_type"}]})
    res = protocol.decode_batch_result(raw, ["a", "b", "c"])
    assert res.accepted == ("a",) and res.duplicates == ("b",) and dict(res.rejected) == {"c": "bad_type"}
    with pytest.raises(HubProtocolError):
        protocol.decode_batch_result(b"<html>", ["a"])


def test_paths_refuse_traversal() -> None:
    assert protocol.manifest_path("stable") == "/v1/channels/stable/manifest"
    with pytest.raises(ValueError):
        protocol.bundle_file_path("v1", "../x")
