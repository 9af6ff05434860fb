"""Serving the hub with the standard library: a threaded ``wsgiref`` server, in the foreground or a thread.

For production, run the same app under gunicorn (``gunicorn 'edgerec_sdk.hub.app:app_from_env()'``).
"""

from __future__ import annotations

import logging
import socketserver
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .app import HubApp

__all__ = ["RunningHub", "serve_forever", "serve_in_thread"]

logger = logging.getLogger(__name__)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("hub: %s " + format, self.address_string(), *args)


class RunningHub:
    """A hub served on a background thread; ``url`` is its base URL. Use as a context manager."""

    def __init__(self, app: HubApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.url = f"http://{host}:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="edgerec-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> RunningHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(app: HubApp, *, host: str = "127.0.0.1", port: int = 0) -> RunningHub:
    """Start serving ``app`` on a daemon thread (port 0 picks a free port)."""
    return RunningHub(app, host, port)


def serve_forever(app: HubApp, *, host: str, port: int) -> None:
    """Serve in the foreground until interrupted."""
    server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    logger.info("hub listening on http://%s:%d", host, server.server_port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
