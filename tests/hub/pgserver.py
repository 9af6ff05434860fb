"""A throwaway PostgreSQL server for the storage tests: ``initdb`` into a temporary directory, ``pg_ctl start``
on a free loopback port (its unix socket in the same directory), one per test session.

Found when the server binaries are on ``PATH`` or under ``/usr/lib/postgresql/*/bin`` (Debian's
``apt-get install postgresql``). PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` user through ``runuser``. Anything missing makes :func:`start` return a reason to skip instead.
No sleeps: ``pg_ctl -w`` waits for the server itself, with a deadline.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

DB, USER = "edgerec", "edgerec"
_START_TIMEOUT_S = 60


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, newest major version first."""
    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.insert(0, Path(on_path).resolve().parent)
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    bindir: Path
    base: Path
    port: int
    run_as: list[str]

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, *, schema: str | None = None) -> str:
        """A URL of the test database; with ``schema``, connections see only that schema's tables."""
        query = f"?options=-csearch_path%3D{schema}" if schema else ""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DB}{query}"

    def new_schema(self) -> str:
        """An empty schema: each test gets fresh tables without a new database."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")  # a generated identifier, not input
        return name

    def _run(self, *args: str, timeout: float = _START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.run_as, *args], capture_output=True, text=True, timeout=timeout, check=False)

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def start() -> PgServer | str:
    """Start a server with database ``edgerec`` (user ``edgerec``, trust auth), or say why it cannot."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'edgerec-sdk[hub]')"
    bindir = find_bindir()
    if bindir is None:
        return "PostgreSQL server binaries not found (apt-get install postgresql)"
    run_as: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # initdb and postgres refuse root
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if runuser is None or owner is None:
            return "running as root without a 'postgres' user and runuser to start PostgreSQL as"
        run_as = [runuser, "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="edgerec-pg-"))
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    server = PgServer(bindir, base, 0, run_as)
    init = server._run(str(bindir / "initdb"), "-D", str(server.data), "-U", USER, "-A", "trust", "-E", "UTF8",
                       "--locale=C", "--no-sync", "--no-instructions")
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        return f"initdb failed: {(init.stderr or init.stdout).strip()[-300:]}"
    reason = "pg_ctl start failed"
    for _ in range(3):  # a port picked free can be taken before the server binds it
        server.port = _free_port()
        opts = (f"-p {server.port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off")
        started = server._run(str(bindir / "pg_ctl"), "-D", str(server.data), "-l", str(base / "server.log"),
                              "-o", opts, "-w", "-t", str(_START_TIMEOUT_S), "start")
        if started.returncode == 0:
            break
        log = base / "server.log"
        reason = f"pg_ctl start failed: {log.read_text()[-300:] if log.exists() else started.stderr[-300:]}"
    else:
        server.stop()
        return reason
    try:
        with psycopg.connect(f"postgresql://{USER}@127.0.0.1:{server.port}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
    except psycopg.Error as exc:
        server.stop()
        return f"cannot create the test database: {exc}"
    return server
