"""Serving the hub under waitress: in the foreground (``edgerec hub serve``) or on a background thread.

Why waitress and not hand-written socket handling: it reads each request completely (headers and body,
spooled to a temporary file past 512 KiB) on its event loop before a worker thread runs the app, so a
client that stops half-way through an upload holds no worker thread and no event-batch slot; it closes
connections idle for ``idle_timeout_s`` (a half-sent request included) and caps open connections. It is
pure Python, with no dependencies. For several processes, gunicorn runs the same app
(``gunicorn 'edgerec_sdk.hub.app:app_from_env()'``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from .._impl.optional import require
from .app import HubApp

__all__ = ["RunningHub", "ServerLimits", "serve_forever", "serve_in_thread"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """Connection limits of the hub's HTTP server.

    Attributes:
        threads: worker threads running the app (requests served at once).
        idle_timeout_s: a connection with no bytes received for this long is closed, including one that
            stopped in the middle of its headers or body (whole seconds, at least 1).
        connection_limit: open connections at most; past it the server stops accepting until some close.
        max_request_body_bytes: bodies over this are refused before the app sees them.
    """

    threads: int = 8
    idle_timeout_s: int = 30
    connection_limit: int = 1000
    max_request_body_bytes: int = 4 * 1024**3 + 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("threads", "idle_timeout_s", "connection_limit", "max_request_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServerLimits.{name} must be a positive int, got {value!r}")


def _create(app: HubApp, host: str, port: int, limits: ServerLimits) -> Any:
    waitress = require("waitress", extra="hub")
    return waitress.create_server(
        app,
        host=host,
        port=port,
        threads=limits.threads,
        channel_timeout=limits.idle_timeout_s,
        # idle connections are looked for at this interval: keep it under the timeout itself
        cleanup_interval=max(1, limits.idle_timeout_s // 2),
        connection_limit=limits.connection_limit,
        max_request_body_size=limits.max_request_body_bytes,
        ident="edgerec-hub",
        expose_tracebacks=False,
        clear_untrusted_proxy_headers=True,
    )


class RunningHub:
    """A hub served on a background thread; ``url`` is its base URL, ``port`` its port. A context manager."""

    def __init__(self, app: HubApp, host: str = "127.0.0.1", port: int = 0,
                 limits: ServerLimits | None = None) -> None:
        self.app = app
        self.server = _create(app, host, port, limits or ServerLimits())
        self.port: int = int(self.server.effective_port)
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.run, name="edgerec-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket and every connection, then end the worker threads."""
        server = self.server
        if self._thread.is_alive():
            # the event loop is not thread-safe: close everything from inside it; it ends once its map is empty
            server.trigger.pull_trigger(lambda: _close_all(server))
            self._thread.join(5.0)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)

    def __enter__(self) -> RunningHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _close_all(server: Any) -> None:
    for dispatcher in list(server._map.values()):
        with contextlib.suppress(OSError):
            dispatcher.close()
    server._map.clear()


def serve_in_thread(app: HubApp, *, host: str = "127.0.0.1", port: int = 0,
                    limits: ServerLimits | None = None) -> RunningHub:
    """Start serving ``app`` on a daemon thread (port 0 picks a free port)."""
    return RunningHub(app, host, port, limits)


def serve_forever(app: HubApp, *, host: str, port: int, limits: ServerLimits | None = None) -> None:
    """Serve in the foreground until interrupted."""
    server = _create(app, host, port, limits or ServerLimits())
    logger.info("hub listening on http://%s:%d", host, server.effective_port)
    try:
        server.run()
    finally:
        _close_all(server)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
