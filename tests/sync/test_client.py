from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import httpx
import pytest

from edgerec_sdk.errors import HubAuthError, HubError, HubProtocolError, HubStatusError, HubTransportError
from edgerec_sdk.sync.client import DownloadError, HubClient

from .fakes import FakeClock

BASE = "https://hub.test"


def make(handler, **kw) -> HubClient:  # type: ignore[no-untyped-def]
    return HubClient(BASE, token="tok-secret", transport=httpx.MockTransport(handler), **kw)


def test_a16_manifest_etag_and_304() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.headers.get("If-None-Match") == '"t1"':
            return httpx.Response(304)
        return httpx.Response(200, content=b'{"a": 1}', headers={"ETag": '"t1"', "X-Edgerec-Signature": "ab"})

    c = make(handler)
    m = c.get_manifest("stable")
    assert m is not None and m.raw == b'{"a": 1}' and m.etag == '"t1"' and m.signature == "ab"
    assert m.candidate_version is None
    assert c.get_manifest("stable", etag='"t1"') is None
    assert seen[0].url.path == "/v1/channels/stable/manifest"
    assert seen[0].headers["Authorization"] == "Bearer tok-secret"
    c.close()


def test_a11_html_portal_is_a_protocol_error() -> None:
    c = make(lambda req: httpx.Response(200, content=b"<html>login</html>"))
    with pytest.raises(HubProtocolError):
        c.get_manifest("stable")


def test_f08_manifest_cap_while_streaming() -> None:
    c = make(lambda req: httpx.Response(200, content=b"{" + b" " * 5000))
    with pytest.raises(HubProtocolError):
        c.get_manifest("stable", max_bytes=1000)


def test_a17_redirect_not_followed() -> None:
    calls: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(str(req.url))
        return httpx.Response(302, headers={"Location": "https://evil.test/steal"})

    c = make(handler)
    with pytest.raises(HubStatusError) as info:
        c.get_manifest("stable")
    assert info.value.status == 302 and not info.value.retryable
    assert len(calls) == 1


def test_a17_no_authorization_to_another_origin(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, content=b"abc")

    c = make(handler)
    c.download_file("https://cdn.test/v1/x", tmp_path / "x", expected_size=3)
    assert "Authorization" not in seen[0].headers


def test_a08_auth_errors_and_f03_no_token_in_messages() -> None:
    c = make(lambda req: httpx.Response(401))
    with pytest.raises(HubAuthError) as info:
        c.get_manifest("stable")
    assert info.value.status == 401
    assert "tok-secret" not in str(info.value) and "tok-secret" not in repr(c)


def test_a07_retry_after_on_status_error(clock: FakeClock) -> None:
    c = make(lambda req: httpx.Response(429, headers={"Retry-After": "7"}), clock=clock)
    with pytest.raises(HubStatusError) as info:
        c.get_manifest("stable")
    assert info.value.retryable and info.value.retry_after_s == 7.0


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), HubTransportError),
        (httpx.ReadTimeout("slow"), HubTransportError),
        (httpx.RemoteProtocolError("reset"), HubTransportError),
        (httpx.DecodingError("bad gzip"), HubProtocolError),
    ],
)
def test_a03_transport_errors_translated(exc: Exception, expected: type[HubError]) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise exc

    c = make(handler)
    with pytest.raises(expected) as info:
        c.get_manifest("stable")
    assert info.value.__cause__ is exc


def _file(data: bytes):  # type: ignore[no-untyped-def]
    def handler(req: httpx.Request) -> httpx.Response:
        assert req.headers["Accept-Encoding"] == "identity"
        rng = req.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].rstrip("-"))
            return httpx.Response(206, content=data[start:],
                                  headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        return httpx.Response(200, content=data)

    return handler


def test_download_ok_and_sha(tmp_path: Path) -> None:
    data = b"x" * 200_000
    c = make(_file(data))
    sha = c.download_file("/v1/bundles/v1/items.npy", tmp_path / "f", expected_size=len(data))
    assert sha == hashlib.sha256(data).hexdigest()


def test_a05_resume_with_range(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    dest = tmp_path / "f"
    dest.write_bytes(data[:1000])  # what a reset left behind
    seen: list[str | None] = []
    inner = _file(data)

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers.get("Range"))
        return inner(req)

    sha = make(handler).download_file("/v1/bundles/v1/f", dest, expected_size=len(data))
    assert seen == ["bytes=1000-"]
    assert sha == hashlib.sha256(data).hexdigest()


def test_b01_content_length_that_lies(tmp_path: Path) -> None:
    c = make(lambda req: httpx.Response(200, content=b"abc"))
    with pytest.raises(DownloadError) as info:
        c.download_file("/v1/bundles/v1/f", tmp_path / "f", expected_size=10)
    assert info.value.reason == "size_mismatch"
    assert not (tmp_path / "f").exists()


def test_b03_body_longer_than_declared(tmp_path: Path) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b"a" * 10, b"b" * 10]))  # streamed, no Content-Length

    with pytest.raises(DownloadError) as info:
        make(handler).download_file("/v1/bundles/v1/f", tmp_path / "f", expected_size=15)
    assert info.value.reason == "too_large"
    assert not (tmp_path / "f").exists()


def test_b04_content_encoding_refused(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\0" * 100_000)
    c = make(lambda req: httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"}))
    with pytest.raises(DownloadError) as info:
        c.download_file("/v1/bundles/v1/f", tmp_path / "f", expected_size=100_000)
    assert info.value.reason == "content_encoding"


def test_a04_slow_drip_aborted(tmp_path: Path, clock: FakeClock) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            clock.advance(10.0)
            yield b"x"

    c = make(lambda req: httpx.Response(200, content=chunks()), clock=clock)
    with pytest.raises(DownloadError) as info:
        c.download_file("/v1/bundles/v1/f", tmp_path / "f", expected_size=100, min_bytes_per_s=1.0)
    assert info.value.reason == "too_slow"
    assert not (tmp_path / "f").exists()


def test_a05_reset_keeps_partial_file(tmp_path: Path) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b"x" * 50
        raise httpx.ReadError("connection reset")

    c = make(lambda req: httpx.Response(200, content=chunks()))
    with pytest.raises(HubTransportError):
        c.download_file("/v1/bundles/v1/f", tmp_path / "f", expected_size=100)
    assert (tmp_path / "f").stat().st_size == 50


def test_post_events_parses_answer() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"accepted": 1, "duplicates": 1, "duplicate_ids": ["b"], "rejected": []})

    res = make(handler).post_events(b"{}", {}, ["a", "b"])
    assert res.accepted == ("a",) and res.duplicates == ("b",)
