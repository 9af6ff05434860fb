"""A real redis-server on a free loopback port, started once per session when the binary and package exist."""

from __future__ import annotations

import selectors
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


class RedisServer:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    pytest.importorskip("redis", reason="the redis package is not installed (extra [redis])")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    workdir: Path = tmp_path_factory.mktemp("redis")
    log: list[str] = []
    for _attempt in range(5):  # a free port can be taken between probing and redis binding it: retry
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--protected-mode", "yes", "--loglevel", "notice"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        log = _wait_ready(proc, deadline_s=20.0)
        if not log:
            break
        if proc.stdout is not None:
            proc.stdout.close()
    else:
        pytest.fail("redis-server did not start:\n" + "".join(log[-20:]))
    try:
        yield RedisServer(proc, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_ready(proc: subprocess.Popen[str], *, deadline_s: float) -> list[str]:
    """Read the server's log until it says it accepts connections (no polling sleeps).

    Returns an empty list when ready, else the log lines of a server that exited or never got ready
    (it is killed).
    """
    assert proc.stdout is not None
    end = time.monotonic() + deadline_s
    lines: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (left := end - time.monotonic()) > 0:
            if not sel.select(timeout=left):
                break
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ready to accept connections" in line:
                return []
    proc.kill()
    proc.wait(timeout=10)
    return lines or ["(no output)\n"]
