# Over 500 lines: the only place httpx is called and translated; every route shares its caps, redirects and retries.
"""``HubClient``: the SDK's one ``httpx.Client`` and the only place httpx errors are translated.

Everything above this module sees :mod:`edgerec_sdk.errors` types only. Requests never follow redirects
(fault A17), carry ``Authorization`` only to the hub's own origin, and always have connect and read timeouts
(fault A03). Bundle files are streamed raw with ``Accept-Encoding: identity`` under a size cap, a deadline and
a minimum throughput, and resumed with ``Range`` after a reset (fault A04, A05, B01, B03, B04).

Example:
    >>> client = HubClient("https://hub.example.com", token="...")  # doctest: +SKIP
    >>> client.get_manifest("stable", etag=None)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import math
import os
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import quote

# httpx.Client() imports these on first use, which is in the updater thread; a gunicorn worker told to exit
# while that import ran deadlocked (the updater on the module lock, the exit hook on the client's lock) and
# was SIGKILLed (fault D21). Imported here, with the SDK, they never are in a background thread.
import certifi  # noqa: F401
import httpcore  # noqa: F401
import httpx
import orjson

from .._impl.files import sha256_file, sync_file
from .._impl.log import redact_url
from .._impl.threads import Clock, SystemClock
from ..errors import (
    DownloadError,
    HubAuthError,
    HubError,
    HubProtocolError,
    HubStatusError,
    HubTransportError,
)
from . import protocol

__all__ = ["DownloadError", "HubClient", "ManifestResponse"]

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
# answers of a load balancer or proxy whose hub behind it is gone: worth one try at another replica
_REPLICA_DOWN = frozenset({502, 503, 504})
_P = ParamSpec("_P")
_T = TypeVar("_T")
_SLOW_GRACE_S = 30.0
# Clients inherited across fork: never closed in the child (their sockets are the parent's), never collected.
_abandoned: list[object] = []


@dataclass(frozen=True, slots=True)
class ManifestResponse:
    """A channel's manifest as served: the exact bytes (the signature covers them) and the headers."""

    raw: bytes
    etag: str | None
    signature: str | None
    candidate_version: str | None
    """A version in partial rollout on this channel (its files are under ``/v1/bundles/{version}/``)."""
    rollout_percent: float
    """Share of users (0-100) the candidate serves; the manifest body is the base version's."""
    origin: str | None = None
    """Base URL of an external origin serving this version's files (never trusted: every file is verified)."""


@contextmanager
def _map_httpx_errors(url: str) -> Iterator[None]:
    """Translate httpx exceptions into the :class:`~edgerec_sdk.errors.HubError` tree, once."""
    safe = redact_url(url)
    try:
        yield
    except httpx.TimeoutException as exc:
        raise HubTransportError(f"timeout ({type(exc).__name__}) talking to {safe}", url=safe) from exc
    except httpx.TransportError as exc:
        raise HubTransportError(f"{type(exc).__name__} talking to {safe}", url=safe) from exc
    except httpx.DecodingError as exc:
        raise HubProtocolError(f"undecodable answer from {safe}", url=safe) from exc
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        raise HubError(f"{type(exc).__name__} talking to {safe}", url=safe) from exc


def _failover(method: Callable[Concatenate[HubClient, _P], _T]) -> Callable[Concatenate[HubClient, _P], _T]:
    """Run an idempotent hub call; when the replica is down, run it once more on the next replica.

    Safe for every call it wraps: reads, resumable downloads (the partial file resumes with ``Range``) and event
    batches (the hub deduplicates on ``event_id``, so a batch a dead replica committed counts once).
    """

    @functools.wraps(method)
    def call(self: HubClient, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        active = self._active
        try:
            return method(self, *args, **kwargs)
        except (HubTransportError, HubStatusError) as exc:
            absolute = bool(args) and isinstance(args[0], str) and args[0].startswith(("http://", "https://"))
            down = isinstance(exc, HubTransportError) or exc.status in _REPLICA_DOWN
            if len(self.base_urls) < 2 or absolute or not down:
                raise
            self._next_replica(active, exc)
            return method(self, *args, **kwargs)

    return call


class HubClient:
    """Talks protocol v1 to a hub: one URL, or several replicas of the same hub.

    With several URLs the client uses one at a time; a call that finds it down (connection refused or reset,
    timeout, ``502``/``503``/``504``) is repeated once on the next replica, which then stays in use. A dead
    replica therefore costs one retry, never a lost event or a failed update.

    Args:
        base_url: the hub, e.g. ``https://hub.example.com``, or a sequence of replica URLs (same tokens).
        token: bearer token (edge or admin); never logged, never sent to another origin.
        transport: an ``httpx.BaseTransport`` (``MockTransport``, ``WSGITransport``) for tests.
        connect_timeout_s: connect timeout of every request.
        read_timeout_s: inactivity timeout of every read.
        ca_bundle: CA file for TLS verification; verification is never off.
        max_retry_after_s: largest ``Retry-After`` reported on errors.
        clock: wall clock for HTTP-dates and monotonic clock for download deadlines.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        token: str,
        transport: httpx.BaseTransport | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
        ca_bundle: str | None = None,
        max_retry_after_s: float = 300.0,
        clock: Clock | None = None,
        user_agent: str = "edgerec-sdk/1",
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("give at least one hub URL")
        self.base_urls = tuple(u.rstrip("/") for u in urls)
        self._hub_origins = {_origin_of(httpx.URL(u)) for u in self.base_urls}
        self._active = 0
        self.base_url = self.base_urls[0]
        self._origin = httpx.URL(self.base_url)
        self.failovers = 0
        self._token = token
        self._transport = transport
        self._timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        # never off; a custom CA goes in as a context (httpx deprecates verify=<path>)
        self._verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        self._max_retry_after_s = max_retry_after_s
        self._clock = clock or SystemClock()
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._pid = os.getpid()
        self._closed = False

    def __repr__(self) -> str:
        return f"HubClient({redact_url(self.base_url)!r})"

    def _next_replica(self, failed: int, exc: BaseException) -> None:
        with self._lock:
            if self._active != failed:  # another thread moved on already
                return
            self._active = (failed + 1) % len(self.base_urls)
            self.base_url = self.base_urls[self._active]
            self._origin = httpx.URL(self.base_url)
            self.failovers += 1
        logger.warning("hub replica %s unavailable (%s); using %s", redact_url(self.base_urls[failed]),
                       type(exc).__name__, redact_url(self.base_url))

    # --- lifecycle ---------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._pid != os.getpid():
            self.postfork()
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._closed:
                raise HubError("hub client is closed")
            if self._client is None:
                self._client = httpx.Client(
                    base_url=self.base_url,
                    transport=self._transport,
                    timeout=self._timeout,
                    follow_redirects=False,
                    verify=self._verify,
                    # identity everywhere: a compressed answer could inflate past every cap (fault B04, F08)
                    headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"},
                )
            return self._client

    def postfork(self) -> None:
        """In a forked child: drop the inherited client without closing it (its sockets are the parent's)."""
        if self._client is not None:
            _abandoned.append(self._client)
        self._client = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def close(self) -> None:
        """Close the HTTP client; idempotent."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            client.close()

    # --- helpers -----------------------------------------------------------------------------------------

    def _url(self, path_or_url: str) -> httpx.URL:
        if path_or_url.startswith(("http://", "https://")):
            return httpx.URL(path_or_url)
        return self._origin.join(self._origin.path.rstrip("/") + path_or_url)

    def _headers(self, url: httpx.URL, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._token and _origin_of(url) in self._hub_origins:  # never to an external origin or a redirect
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _timeout_for(self, timeout_s: float | None) -> httpx.Timeout:
        if timeout_s is None:
            return self._timeout
        t = max(0.001, timeout_s)
        read = self._timeout.read if self._timeout.read is not None else t
        connect = self._timeout.connect if self._timeout.connect is not None else t
        return httpx.Timeout(min(read, t), connect=min(connect, t))

    def _check_status(self, resp: httpx.Response, url: httpx.URL, *, said: str = "") -> None:
        status = resp.status_code
        if 200 <= status < 300:
            return
        safe = redact_url(str(url))
        retry_after = protocol.parse_retry_after(
            resp.headers.get("Retry-After"), now_s=self._clock.time(), max_s=self._max_retry_after_s
        )
        cls = HubAuthError if status in (401, 403) else HubStatusError
        what = "redirect (not followed)" if 300 <= status < 400 else "error"
        raise cls(
            f"hub answered {status} {what} for {safe}" + (f": {said}" if said else ""),
            status=status,
            url=safe,
            retry_after_s=retry_after,
            retryable=protocol.is_retryable(status),
        )

    def _read_capped(self, resp: httpx.Response, max_bytes: int, url: httpx.URL) -> bytes:
        enc = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if enc not in ("", "identity"):  # asked for identity: never inflate what the hub compressed anyway
            raise HubProtocolError(f"answer from {redact_url(str(url))} has content encoding {enc[:20]!r}")
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise HubProtocolError(f"answer over {max_bytes} bytes from {redact_url(str(url))}")
        chunks: list[bytes] = []
        total = 0
        for chunk in resp.iter_bytes(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise HubProtocolError(f"answer over {max_bytes} bytes from {redact_url(str(url))}")
            chunks.append(chunk)
        return b"".join(chunks)

    def request_json(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        max_bytes: int = 1024 * 1024,
    ) -> Any:
        """One API call answering JSON; errors become ``HubError``s."""
        url = self._url(path)
        with _map_httpx_errors(str(url)), self._http().stream(
            method, url, content=body, headers=self._headers(url, headers), timeout=self._timeout_for(timeout_s)
        ) as resp:
            if not 200 <= resp.status_code < 300:
                self._check_status(resp, url, said=_error_text(resp))
            raw = self._read_capped(resp, max_bytes, url)
        try:
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            raise HubProtocolError(f"answer from {redact_url(str(url))} is not JSON") from exc

    @_failover
    def get_bytes(self, path: str, *, max_bytes: int, missing_ok: bool = False) -> bytes | None:
        """A small file (a candidate's manifest or signature) under a cap; ``None`` on 404 when ``missing_ok``."""
        url = self._url(path)
        with _map_httpx_errors(str(url)), self._http().stream(
            "GET", url, headers=self._headers(url, {"Accept-Encoding": "identity"})
        ) as resp:
            if resp.status_code == 404 and missing_ok:
                return None
            self._check_status(resp, url)
            return self._read_capped(resp, max_bytes, url)

    @_failover
    def get_version_manifest(self, version: str, *, max_bytes: int) -> tuple[bytes, str | None]:
        """A version's ``manifest.json`` (a rollout candidate's) and the external origin of its files, if any."""
        url = self._url(protocol.bundle_file_path(version, "manifest.json"))
        with _map_httpx_errors(str(url)), self._http().stream(
            "GET", url, headers=self._headers(url, {"Accept-Encoding": "identity"})
        ) as resp:
            self._check_status(resp, url)
            return (self._read_capped(resp, max_bytes, url),
                    _header_token(resp.headers.get(protocol.ORIGIN_HEADER), 1024))

    # --- protocol v1 calls -------------------------------------------------------------------------------

    @_failover
    def get_manifest(
        self, channel: str, *, etag: str | None = None, max_bytes: int = 1024 * 1024
    ) -> ManifestResponse | None:
        """The channel's manifest, or ``None`` on ``304 Not Modified``."""
        url = self._url(protocol.manifest_path(channel))
        extra = {"Accept": "application/json"}
        if etag:
            extra["If-None-Match"] = etag
        with _map_httpx_errors(str(url)), self._http().stream("GET", url, headers=self._headers(url, extra)) as resp:
            if resp.status_code == 304:
                return None
            self._check_status(resp, url)
            raw = self._read_capped(resp, max_bytes, url)
            headers = resp.headers
        if not raw.lstrip().startswith(b"{"):
            raise HubProtocolError(f"manifest from {redact_url(str(url))} is not a JSON object")
        candidate, rollout = _rollout_headers(headers, redact_url(str(url)))
        return ManifestResponse(
            raw=raw,
            etag=_header_token(headers.get("ETag"), 256),
            signature=_header_token(headers.get(protocol.SIGNATURE_HEADER), 512),
            candidate_version=candidate,
            rollout_percent=rollout,
            origin=_header_token(headers.get(protocol.ORIGIN_HEADER), 1024),
        )

    @_failover
    def download_file(
        self,
        path_or_url: str,
        dest: Path,
        *,
        expected_size: int,
        deadline_s: float = 600.0,
        min_bytes_per_s: float = 1024.0,
    ) -> str:
        """Stream one bundle file into ``dest`` and return the sha256 of the whole file.

        A partial ``dest`` left by a reset is resumed with ``Range``; the hash always covers the whole file.
        Rule breaks delete ``dest`` and raise :class:`DownloadError`; a reset keeps it and raises
        ``HubTransportError`` so the next attempt resumes.
        """
        url = self._url(path_or_url)
        safe = redact_url(str(url))
        have = dest.stat().st_size if dest.exists() else 0
        if have > expected_size:
            dest.unlink()
            have = 0
        if have == expected_size:
            return sha256_file(dest)
        extra = {"Accept-Encoding": "identity"}
        if have:
            extra["Range"] = f"bytes={have}-"
        start = self._clock.monotonic()
        try:
            with _map_httpx_errors(str(url)), self._http().stream("GET", url, headers=self._headers(url, extra)) as resp:
                if resp.status_code == 200:
                    have = 0
                elif resp.status_code == 206:
                    _check_content_range(resp.headers.get("Content-Range"), have, expected_size, safe)
                elif resp.status_code == 416:
                    dest.unlink(missing_ok=True)
                    raise DownloadError(f"range refused by {safe}", reason="bad_range", url=safe)
                else:
                    self._check_status(resp, url)
                enc = resp.headers.get("Content-Encoding", "identity").strip().lower()
                if enc not in ("", "identity"):
                    raise DownloadError(f"content encoding {enc[:20]!r} refused", reason="content_encoding", url=safe)
                length = resp.headers.get("Content-Length")
                if length is not None and (not length.isdigit() or int(length) != expected_size - have):
                    raise DownloadError(f"Content-Length differs from the declared size for {safe}",
                                        reason="size_mismatch", url=safe)
                self._stream_to(resp.iter_bytes(), dest, have=have, expected_size=expected_size,
                                start=start, deadline_s=deadline_s, min_bytes_per_s=min_bytes_per_s, safe=safe)
        except DownloadError:
            dest.unlink(missing_ok=True)
            raise
        except OSError:
            dest.unlink(missing_ok=True)  # disk full (fault D12): never keep a half-written staging file
            raise
        return sha256_file(dest)

    def _stream_to(
        self,
        chunks: Iterable[bytes],
        dest: Path,
        *,
        have: int,
        expected_size: int,
        start: float,
        deadline_s: float,
        min_bytes_per_s: float,
        safe: str,
    ) -> None:
        got = have
        fresh = 0
        with open(dest, "ab" if have else "wb") as f:
            for chunk in chunks:
                got += len(chunk)
                fresh += len(chunk)
                if got > expected_size:
                    raise DownloadError(f"body longer than declared from {safe}", reason="too_large", url=safe)
                f.write(chunk)
                elapsed = self._clock.monotonic() - start
                if elapsed > deadline_s:
                    raise DownloadError(f"download deadline passed for {safe}", reason="deadline", url=safe)
                if elapsed > _SLOW_GRACE_S and fresh / elapsed < min_bytes_per_s:
                    raise DownloadError(f"download too slow from {safe}", reason="too_slow", url=safe)
            sync_file(f)
        if got != expected_size:
            raise DownloadError(f"body shorter than declared from {safe}", reason="size_mismatch", url=safe)

    @_failover
    def post_events(
        self, body: bytes, headers: Mapping[str, str], sent_ids: Iterable[str], *, timeout_s: float | None = None
    ) -> protocol.BatchResult:
        """``POST /v1/events``: one encoded batch; returns what the hub stored, deduplicated and refused."""
        url = self._url(protocol.EVENTS_PATH)
        with _map_httpx_errors(str(url)), self._http().stream(
            "POST", url, content=body, headers=self._headers(url, headers), timeout=self._timeout_for(timeout_s)
        ) as resp:
            self._check_status(resp, url)
            raw = self._read_capped(resp, 16 * 1024 * 1024, url)
        return protocol.decode_batch_result(raw, sent_ids)

    def publish_bundle(self, tar_body: bytes, *, channel: str | None = None, rollout_percent: float | None = None,
                       origin: str | None = None) -> Any:
        """``POST /v1/bundles`` (admin token): upload a bundle as an uncompressed tar; with ``origin``, the
        tar holds the manifest only and edges fetch the files from ``<origin>/<name>``."""
        query = ""
        if channel:
            query = f"?channel={protocol._segment(channel)}"
            if rollout_percent is not None:
                query += f"&rollout={float(rollout_percent)}"
        if origin:
            query += ("&" if query else "?") + "origin=" + quote(origin, safe="")
        return self.request_json(
            "POST", protocol.BUNDLES_PATH + query, body=tar_body,
            headers={"Content-Type": "application/x-tar"}, timeout_s=600.0,
        )

    def set_channel(self, channel: str, version: str, *, rollout_percent: float = 100.0) -> Any:
        """``PUT /v1/channels/{channel}`` (admin token)."""
        body = orjson.dumps({"version": version, "rollout_percent": rollout_percent})
        return self.request_json(
            "PUT", protocol.channel_path(channel), body=body, headers={"Content-Type": "application/json"}
        )

    def publish_artifact(self, channel: str, kind: str, body: bytes, *, signature: str | None) -> Any:
        """``POST /v1/channels/{channel}/artifacts/{kind}`` (admin token): append one signed artifact."""
        headers = {"Content-Type": "application/octet-stream"}
        if signature:
            headers[protocol.SIGNATURE_HEADER] = signature
        return self.request_json("POST", protocol.artifacts_path(channel, kind), body=body, headers=headers,
                                 timeout_s=600.0)

    @_failover
    def list_artifacts(self, channel: str, kind: str, *, after: int = 0) -> list[dict[str, Any]]:
        """The artifacts after ``after``, oldest first: ``{"seq", "sha256", "size", "signature"}`` each."""
        doc = self.request_json("GET", f"{protocol.artifacts_path(channel, kind)}?after={int(after)}")
        items = doc.get("artifacts") if isinstance(doc, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise HubProtocolError(f"artifact listing of {kind!r} is malformed")
        return items

    def get_artifact(self, channel: str, kind: str, seq: int, *, max_bytes: int) -> bytes:
        """One artifact's exact bytes, under a cap."""
        got = self.get_bytes(protocol.artifact_path(channel, kind, seq), max_bytes=max_bytes)
        return got or b""

    @_failover
    def get_status(self) -> Any:
        """``GET /v1/status``."""
        return self.request_json("GET", protocol.STATUS_PATH)


def _rollout_headers(headers: httpx.Headers, safe: str) -> tuple[str | None, float]:
    """The candidate version and its share, checked: a hub that sends a malformed one breaks protocol v1."""
    candidate = headers.get(protocol.CANDIDATE_HEADER)
    if not candidate:
        return None, 0.0
    if not protocol.is_valid_name(candidate, max_chars=128):
        raise HubProtocolError(f"invalid {protocol.CANDIDATE_HEADER} header {candidate[:40]!r} from {safe}")
    raw = headers.get(protocol.ROLLOUT_HEADER, "")
    try:
        rollout = float(raw) if len(raw) <= 32 else math.nan
    except ValueError:
        rollout = math.nan
    if not math.isfinite(rollout) or not 0.0 <= rollout <= 100.0:
        raise HubProtocolError(f"invalid {protocol.ROLLOUT_HEADER} header {raw[:40]!r} from {safe}")
    return candidate, rollout


def _header_token(value: str | None, max_chars: int) -> str | None:
    """A header value kept only when short and printable ASCII (an ETag, a signature); else dropped."""
    if value is None or len(value) > max_chars or not value.isascii() or not value.isprintable():
        return None
    return value


def _error_text(resp: httpx.Response) -> str:
    """The hub's ``{"error": "..."}`` text of a failed call, capped and reduced to printable characters."""
    try:
        raw = next(resp.iter_bytes(4096), b"")
        doc = orjson.loads(raw)
    except (httpx.HTTPError, httpx.StreamError, orjson.JSONDecodeError):
        return ""
    text = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(text, str):
        return ""
    return "".join(c if c.isprintable() else "?" for c in text[:300])


def _origin_of(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _check_content_range(value: str | None, have: int, expected_size: int, safe: str) -> None:
    want = f"bytes {have}-{expected_size - 1}/{expected_size}"
    if value is None or value.strip() != want:
        raise DownloadError(f"unexpected Content-Range from {safe}", reason="bad_range", url=safe)

