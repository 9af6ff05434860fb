"""A scriptable fake hub that speaks protocol v1 and injects faults per request (re-exported by ``testing``).

Why a fake next to the real ``edgerec_sdk.hub``: the real hub is correct by design; fault tests need a hub that
misbehaves on cue (a 503 on the third manifest poll, a reset 100 bytes into one file, a lost ack after a
commit) and records everything the edge sent. One routing core answers both ways of reaching it: in process as
an ``httpx`` transport (``EdgeSync(..., transport=hub)``), and on a real loopback socket (``with hub.serve() as
url``) for forked children and subprocesses. Never imported by runtime code.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

from ..bundle.verify import sign_bytes
from ..sync import protocol

__all__ = ["FakeClock", "FakeHub", "Fault", "Recorded"]

_ROUTES = ("manifest", "file", "events", "other")


class FakeClock:
    """Monotonic and wall time that move only when told; ``wait`` advances instead of sleeping."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall = wall
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall

    def advance(self, dt_s: float) -> None:
        self.now += dt_s
        self.wall += dt_s

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        if event.is_set():
            return True
        self.waits.append(timeout_s)
        self.advance(max(0.0, timeout_s))
        return event.is_set()


@dataclass(frozen=True)
class Fault:
    """One misbehaviour, applied to one matching request. Build them with the class methods.

    ``status``/``headers``/``body`` replace the answer; ``reset_after`` sends that many body bytes and then
    breaks the connection; ``drip`` sends ``(chunk_bytes, seconds_per_chunk)`` (advancing the hub's fake clock
    in process, really waiting on a socket); ``stall_after`` sends that many bytes and then holds the
    connection until :meth:`FakeHub.release`; ``black_hole`` never answers (a read timeout in process);
    ``commit`` lets the hub store an event batch before the fault hits (a lost ack); ``manifest`` rewrites
    the served manifest document (and re-signs it when the hub has the key).
    """

    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    reset_after: int | None = None
    drip: tuple[int, float] | None = None
    stall_after: int | None = None
    black_hole: bool = False
    refuse: bool = False
    commit: bool = False
    manifest: Callable[[dict[str, Any]], None] | None = None
    replay: str | None = None

    @classmethod
    def http(cls, status: int, *, retry_after: str | None = None, body: bytes = b"", commit: bool = False) -> Fault:
        """An HTTP error status (with ``Retry-After`` when given)."""
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        return cls(status=status, headers=headers, body=body, commit=commit)

    @classmethod
    def html(cls) -> Fault:
        """200 with a captive-portal HTML page instead of JSON."""
        return cls(status=200, headers=(("Content-Type", "text/html"),),
                   body=b"<!doctype html><html><body>Please log in to the Wi-Fi</body></html>")

    @classmethod
    def truncated_json(cls) -> Fault:
        return cls(status=200, headers=(("Content-Type", "application/json"),), body=b'{"format": "edgerec-bu')

    @classmethod
    def reset(cls, after_bytes: int = 0, *, commit: bool = False) -> Fault:
        """Connection reset after ``after_bytes`` of the body (0: before any answer)."""
        return cls(reset_after=after_bytes, commit=commit)

    @classmethod
    def refused(cls) -> Fault:
        """Connection refused (the hub is down)."""
        return cls(refuse=True)

    @classmethod
    def drip_feed(cls, chunk_bytes: int, seconds_per_chunk: float) -> Fault:
        return cls(drip=(chunk_bytes, seconds_per_chunk))

    @classmethod
    def stall(cls, after_bytes: int = 0, *, commit: bool = False) -> Fault:
        return cls(stall_after=after_bytes, commit=commit)

    @classmethod
    def hole(cls) -> Fault:
        """TCP accepted, nothing ever answered."""
        return cls(black_hole=True)

    @classmethod
    def gzip_bomb(cls, decoded_bytes: int = 64 * 1024 * 1024) -> Fault:
        """A small gzip body that inflates to ``decoded_bytes``."""
        return cls(status=200, headers=(("Content-Encoding", "gzip"),),
                   body=gzip.compress(b"\0" * decoded_bytes, compresslevel=9))

    @classmethod
    def oversized(cls, n_bytes: int) -> Fault:
        """200 with ``n_bytes`` of body (no ``Content-Length``: the cap must hold while streaming)."""
        return cls(status=200, body=b"{" + b" " * (n_bytes - 2) + b"}")

    @classmethod
    def rewrite_manifest(cls, mutate: Callable[[dict[str, Any]], None]) -> Fault:
        return cls(manifest=mutate)

    @classmethod
    def replay_manifest(cls, version: str) -> Fault:
        """Serve ``version``'s stored (validly signed) manifest, as a replay of an older answer would."""
        return cls(replay=version)


@dataclass(frozen=True)
class Recorded:
    """One request as the hub saw it (the body decompressed)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    route: str


@dataclass
class _Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    fault: Fault | None = None


@dataclass
class _Bundle:
    files: dict[str, bytes]
    signature: str | None


@dataclass(repr=False, eq=False)
class FakeHub(httpx.BaseTransport):
    """An in-memory hub: bundles, channels, deduplicated events, and a queue of faults.

    Args:
        token: the edge token it accepts (change it to simulate a revocation, back to rotate).
        signing_key: re-signs rewritten manifests (``Fault.rewrite_manifest``).
        clock: a fake clock with ``advance(dt_s)``, advanced by drip faults in process.

    Example:
        >>> hub = FakeHub(token="t")  # doctest: +SKIP
        >>> hub.publish(make_tiny_bundle(tmp / "v1", model_version="v1", signing_key=b"k"))  # doctest: +SKIP
        >>> hub.inject("manifest", Fault.http(503), Fault.http(429, retry_after="7"))  # doctest: +SKIP
        >>> sync = EdgeSync(config, transport=hub)  # doctest: +SKIP
    """

    token: str = "edge-token"
    signing_key: str | bytes | None = None
    clock: Any = None
    flap_etag: bool = False
    down: bool = False
    bundles: dict[str, _Bundle] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches: list[str] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    reached: threading.Event = field(default_factory=threading.Event)
    """Set when a stall or black-hole fault starts holding a connection."""

    def __repr__(self) -> str:  # never the token or the key, even in an assertion message
        return f"<FakeHub channels={self.channels!r} events={len(self.events)} requests={len(self.requests)}>"

    def __post_init__(self) -> None:
        self._faults: dict[str, deque[Fault]] = {r: deque() for r in _ROUTES}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._etags = itertools.count()

    # --- scripting --------------------------------------------------------------------------------------

    def publish(self, bundle_dir: str | Path, *, channel: str | None = "stable") -> str:
        """Serve a bundle directory; point ``channel`` at it. Returns its model version."""
        root = Path(bundle_dir)
        files = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
        version = str(orjson.loads(files["manifest.json"])["model_version"])
        sig = files.get("signature")
        self.bundles[version] = _Bundle(files, sig.decode().strip() if sig else None)
        if channel:
            self.channels[channel] = version
        return version

    def inject(self, route: str, *faults: Fault) -> None:
        """Queue faults for the next requests of ``route`` (``manifest``, ``file``, ``events``, ``other``)."""
        if route not in _ROUTES:
            raise ValueError(f"route must be one of {_ROUTES}")
        with self._lock:
            self._faults[route].extend(faults)

    def release(self) -> None:
        """Let stalled and black-holed connections end."""
        self._release.set()

    def count(self, route: str) -> int:
        return sum(r.route == route for r in self.requests)

    @property
    def event_ids(self) -> list[str]:
        return sorted(self.events)

    # --- the routing core -------------------------------------------------------------------------------

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Answer:
        route = _route_of(method, path)
        with self._lock:
            fault = self._faults[route].popleft() if self._faults[route] else None
        if route == "events" and headers.get("content-encoding") == "gzip":
            with contextlib.suppress(Exception):
                body = gzip.decompress(body)
        self.requests.append(Recorded(method, path, dict(headers), body, route))
        if headers.get("authorization") != f"Bearer {self.token}":
            return _Answer(401, [], b'{"error": "unauthorized"}', fault)
        if fault is not None and fault.replay is not None:
            b = self.bundles[fault.replay]
            return self._manifest_answer(b.files["manifest.json"], b.signature, headers, fault)
        if fault is not None and (fault.commit or (fault.status is None and fault.manifest is None)):
            answer = self._normal(route, method, path, headers, body, fault)
            answer.fault = fault
            return answer
        if fault is not None and fault.status is not None:
            hdrs = [*fault.headers]
            if not any(k.lower() == "content-encoding" for k, _ in hdrs):
                hdrs.append(("Content-Length", str(len(fault.body or b""))))
            return _Answer(fault.status, hdrs, fault.body or b"", None)
        return self._normal(route, method, path, headers, body, fault)

    def _normal(self, route: str, method: str, path: str, headers: dict[str, str], body: bytes,
                fault: Fault | None) -> _Answer:
        parts = path.split("?")[0].strip("/").split("/")
        if route == "manifest":
            version = self.channels.get(parts[2])
            if version is None:
                return _Answer(404, [], b'{"error": "not found"}')
            b = self.bundles[version]
            raw, sig = b.files["manifest.json"], b.signature
            if fault is not None and fault.manifest is not None:
                doc = orjson.loads(raw)
                fault.manifest(doc)
                raw = orjson.dumps(doc)
                sig = sign_bytes(raw, self.signing_key) if self.signing_key else None
            return self._manifest_answer(raw, sig, headers, fault)
        if route == "file":
            found = self.bundles.get(parts[2])
            data = None if found is None else found.files.get(parts[3])
            if data is None:
                return _Answer(404, [], b'{"error": "not found"}')
            rng = headers.get("range", "")
            if rng.startswith("bytes=") and rng[6:-1].isdigit() and rng.endswith("-"):
                start = int(rng[6:-1])
                return _Answer(206, [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"),
                                     ("Content-Length", str(len(data) - start))], data[start:], fault)
            return _Answer(200, [("Content-Length", str(len(data)))], data, fault)
        if route == "events":
            return self._events(body, fault)
        return _Answer(404, [], b'{"error": "not found"}', fault)

    def _manifest_answer(self, raw: bytes, sig: str | None, headers: dict[str, str], fault: Fault | None) -> _Answer:
        if self.flap_etag:
            etag = f'"flap-{next(self._etags)}"'
        else:
            etag = '"' + hashlib.sha256(raw + (sig or "").encode()).hexdigest()[:32] + '"'
            if headers.get("if-none-match") == etag:
                return _Answer(304, [("ETag", etag)], b"", fault)
        hdrs = [("Content-Type", "application/json"), ("ETag", etag), ("Content-Length", str(len(raw)))]
        if sig:
            hdrs.append((protocol.SIGNATURE_HEADER, sig))
        return _Answer(200, hdrs, raw, fault)

    def _events(self, body: bytes, fault: Fault | None) -> _Answer:
        try:
            _edge_id, batch_id, events = protocol.decode_batch(body)
        except Exception:
            return _Answer(400, [], b'{"error": "bad batch"}', fault)
        accepted, dups, rejected = [], [], {}
        for ev in events:
            reason = protocol.validate_wire_event(ev)
            if reason is not None:
                if isinstance(ev, dict) and isinstance(ev.get("event_id"), str):
                    rejected[ev["event_id"]] = reason
                continue
            with self._lock:
                if ev["event_id"] in self.events:
                    dups.append(ev["event_id"])
                else:
                    self.events[ev["event_id"]] = ev
                    accepted.append(ev["event_id"])
        self.batches.append(batch_id)
        out = protocol.encode_batch_result(protocol.BatchResult(tuple(accepted), tuple(dups), rejected))
        return _Answer(200, [("Content-Type", "application/json"), ("Content-Length", str(len(out)))], out, fault)

    # --- in process: an httpx transport -----------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused (FakeHub is down)", request=request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        answer = self._answer(request.method, request.url.raw_path.decode(), headers, request.read())
        f = answer.fault
        if f is not None and f.refuse:
            raise httpx.ConnectError("connection refused (FakeHub fault)", request=request)
        if f is not None and (f.black_hole or (f.stall_after == 0)):
            self.reached.set()
            raise httpx.ReadTimeout("no answer (FakeHub black hole)", request=request)
        if f is not None and f.reset_after == 0:
            raise httpx.RemoteProtocolError("connection reset before the answer (FakeHub)", request=request)
        return httpx.Response(answer.status, headers=answer.headers,
                              stream=_FaultStream(answer.body, f, self, request), request=request)

    # --- on a real loopback socket ----------------------------------------------------------------------

    @contextlib.contextmanager
    def serve(self, host: str = "127.0.0.1", *, tls: tuple[str, str] | None = None) -> Iterator[str]:
        """Serve on ``host`` (loopback), a free port, in a daemon thread; yields the base URL.

        ``tls=(certfile, keyfile)`` serves HTTPS with that certificate.
        """
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                if hub.down:
                    self.close_connection = True
                    _rst(self.connection)
                    return
                answer = hub._answer(self.command, self.path, headers, body)
                hub._write(self, answer)

            do_GET = do_POST = do_PUT = do_HEAD = _handle

        server = _QuietServer((host, 0), Handler)
        scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
            scheme = "https"
        thread = threading.Thread(target=server.serve_forever, name="fakehub", daemon=True)
        thread.start()
        try:
            yield f"{scheme}://{host}:{server.server_address[1]}"
        finally:
            self.release()
            server.shutdown()
            server.server_close()

    def _write(self, h: BaseHTTPRequestHandler, answer: _Answer) -> None:
        f = answer.fault
        if f is not None:
            h.close_connection = True
        if f is not None and (f.refuse or f.reset_after == 0):
            _rst(h.connection)
            return
        if f is not None and f.black_hole:
            self.reached.set()
            self._release.wait(60.0)
            _rst(h.connection)
            return
        h.send_response(answer.status)
        for k, v in answer.headers:
            h.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in answer.headers):
            h.send_header("Connection", "close")
        h.end_headers()
        data = answer.body
        if f is not None and f.reset_after is not None:
            h.wfile.write(data[: f.reset_after])
            h.wfile.flush()
            _rst(h.connection)
            return
        if f is not None and f.stall_after is not None:
            h.wfile.write(data[: f.stall_after])
            h.wfile.flush()
            self.reached.set()
            self._release.wait(60.0)
            _rst(h.connection)
            return
        if f is not None and f.drip is not None:
            size, pause = f.drip
            for i in range(0, len(data), size):
                h.wfile.write(data[i : i + size])
                h.wfile.flush()
                time.sleep(pause)
            return
        h.wfile.write(data)
        h.wfile.flush()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # resets and aborted clients are the point of this server


class _FaultStream(httpx.SyncByteStream):
    def __init__(self, data: bytes, fault: Fault | None, hub: FakeHub, request: httpx.Request) -> None:
        self._data, self._fault, self._hub, self._request = data, fault, hub, request

    def __iter__(self) -> Iterator[bytes]:
        f = self._fault
        if f is not None and f.reset_after is not None:
            yield self._data[: f.reset_after]
            raise httpx.ReadError("connection reset mid-body (FakeHub)", request=self._request)
        if f is not None and f.stall_after is not None:
            yield self._data[: f.stall_after]
            self._hub.reached.set()
            raise httpx.ReadTimeout("stalled mid-body (FakeHub)", request=self._request)
        if f is not None and f.drip is not None:
            size, pause = f.drip
            for i in range(0, len(self._data), size):
                if self._hub.clock is not None:
                    self._hub.clock.advance(pause)
                yield self._data[i : i + size]
            return
        if self._data:
            yield self._data


def _route_of(method: str, path: str) -> str:
    p = path.split("?")[0]
    if method == "GET" and p.startswith("/v1/channels/") and p.endswith("/manifest"):
        return "manifest"
    if method == "GET" and p.startswith("/v1/bundles/") and p.count("/") == 4:
        return "file"
    if method == "POST" and p == protocol.EVENTS_PATH:
        return "events"
    return "other"


def _rst(conn: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0) rather than a polite FIN."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        conn.close()
