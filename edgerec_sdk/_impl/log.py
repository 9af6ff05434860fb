"""Logging helpers: warn once per key, and redaction of URLs and headers.

Never adds a handler: the application decides where logs go.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

_lock = threading.Lock()
_warned: set[str] = set()
_SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "x-api-key", "proxy-authorization"})


def warn_once(logger: logging.Logger, key: str, msg: str, *args: object) -> bool:
    """Log ``msg`` at WARNING the first time ``key`` is seen in this process; return whether it logged."""
    with _lock:
        if key in _warned:
            return False
        _warned.add(key)
    logger.warning(msg, *args)
    return True


def reset_warnings() -> None:
    """Forget which keys were warned about (a new episode, or a test)."""
    with _lock:
        _warned.clear()


def redact_url(url: str) -> str:
    """Drop credentials and the query string from a URL before it is logged."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Copy headers with secret values replaced."""
    return {k: ("<redacted>" if k.lower() in _SECRET_HEADERS else v) for k, v in headers.items()}
