"""System checks (``manage.py check``): bad ``EDGEREC`` settings and unsafe worker settings.

| id | level | finds |
|---|---|---|
| ``edgerec.E001`` | Error | ``EDGEREC`` missing or invalid |
| ``edgerec.E002`` | Error | ``BUNDLE`` names a directory without ``manifest.json`` |
| ``edgerec.E003`` | Error | ``HUB`` lacks a setting the edge needs, has an unknown key, or a URL the edge refuses (``http://`` to a non-loopback host) |
| ``edgerec.W001`` | Warning | ``PROFILE_STORE`` ``"memory"`` with several worker processes: a click taken by one worker does not personalise the next page another serves |
| ``edgerec.W002`` | Warning | gevent/eventlet workers: ``recommend`` is CPU work and blocks the event loop |
| ``edgerec.W003`` | Warning | more native threads per worker than cores for all workers (``INDEX.intra_op_threads`` x workers) |
| ``edgerec.W004`` | Warning | uWSGI without ``enable-threads``: the hub sync threads cannot run |
| ``edgerec.W005`` | Warning | the SQLite profile store's directory is missing or not writable |

Worker counts come from the environment gunicorn reads too (``WEB_CONCURRENCY``, ``GUNICORN_CMD_ARGS``), since a
check runs outside the server. Each message says what to change.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from ...errors import ConfigError
from ...profile import parse_profile_spec
from .._common import check_hub, parse_settings

__all__ = ["check_edgerec", "collect_messages"]


@register("edgerec")
def check_edgerec(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """The registered check: reads ``settings.EDGEREC`` and the process environment."""
    return collect_messages(getattr(settings, "EDGEREC", None), os.environ)


def collect_messages(raw: object, environ: Mapping[str, str]) -> list[CheckMessage]:
    """All messages for one settings mapping and environment (pure: tests pass both in)."""
    try:
        parsed = parse_settings(raw)
    except ConfigError as exc:
        return [Error(str(exc), hint='e.g. EDGEREC = {"BUNDLE": "demo"}', id="edgerec.E001")]
    out: list[CheckMessage] = []
    if parsed.bundle not in (None, "demo") and not (Path(str(parsed.bundle)) / "manifest.json").is_file():
        out.append(Error("EDGEREC['BUNDLE'] is not a bundle directory (no manifest.json there)",
                         hint="point it at a directory written by `edgerec build`, or use 'demo'", id="edgerec.E002"))
    if parsed.hub is not None:
        try:
            check_hub(parsed.hub)
        except ConfigError as exc:
            out.append(Error(str(exc), hint='e.g. "HUB": {"HUB_URL": "https://hub.example.com", "TOKEN": ..., '
                             '"USER_ID_KEY": ..., "STATE_DIR": "/var/lib/shop/edgerec", "SIGNING_KEY": ...}',
                             id="edgerec.E003"))
    workers, worker_class = _gunicorn_workers(environ)
    spec = parse_profile_spec(parsed.config.profile_store)
    if spec.kind == "memory" and workers > 1:
        out.append(Warning(
            f"PROFILE_STORE is 'memory' with {workers} worker processes: feedback taken by one worker does not "
            "personalise the pages the others serve",
            hint="use 'sqlite:////var/lib/<app>/profiles.sqlite3' (one host) or 'redis://host:6379/0' (many hosts)",
            id="edgerec.W001"))
    if worker_class in ("gevent", "eventlet", "tornado"):
        out.append(Warning(
            f"gunicorn worker class {worker_class!r}: recommend() is CPU work that blocks the event loop",
            hint="use sync or gthread workers (-k gthread --threads 4)", id="edgerec.W002"))
    threads = parsed.config.index.intra_op_threads
    cores = os.cpu_count() or 1
    if threads > 1 and threads * max(workers, 1) > cores:
        out.append(Warning(
            f"INDEX.intra_op_threads={threads} x {max(workers, 1)} workers exceeds {cores} cores: native thread "
            "pools will fight over the CPU", hint="keep intra_op_threads at 1 in web workers", id="edgerec.W003"))
    if _uwsgi_without_threads():
        out.append(Warning("uWSGI runs without threads: the hub sync threads cannot start",
                           hint="start uWSGI with --enable-threads", id="edgerec.W004"))
    if spec.kind == "sqlite":
        folder = Path(spec.target).expanduser().parent
        if not _can_create_in(folder):
            out.append(Warning(f"the SQLite profile store's directory {str(folder)!r} is not writable",
                               hint="create it for the user the workers run as", id="edgerec.W005"))
    return out


def _gunicorn_workers(environ: Mapping[str, str]) -> tuple[int, str]:
    workers, worker_class = 1, "sync"
    raw = environ.get("WEB_CONCURRENCY", "")
    if raw.strip().isdigit():
        workers = int(raw)
    try:
        args = shlex.split(environ.get("GUNICORN_CMD_ARGS", ""))
    except ValueError:
        args = []
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if not eq and i + 1 < len(args):
            value = args[i + 1]
        if name in ("-w", "--workers") and value.isdigit():
            workers = int(value)
        elif name in ("-k", "--worker-class") and value:
            worker_class = value.rsplit(".", 1)[-1].lower().replace("worker", "") or value
    return workers, worker_class


def _uwsgi_without_threads() -> bool:
    uwsgi = sys.modules.get("uwsgi")  # only present inside a uWSGI process
    if uwsgi is None:
        return False
    opt = getattr(uwsgi, "opt", {})
    return not (opt.get("enable-threads") or int(opt.get("threads", 0) or 0) > 0)


def _can_create_in(folder: Path) -> bool:
    """Whether ``folder`` is, or can be created as, a directory this process can write in."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)
