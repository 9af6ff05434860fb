"""Many workers on one host: ``gunicorn --preload -w 3`` serving examples/flask_store.

What it measures (JSON lines on stdout, one per phase):

1. ``memory``: per-process RSS, PSS and private (USS) memory of the master and each worker, from
   ``/proc/<pid>/smaps_rollup``, after every worker has served requests (so each built its recommender), for
   ``-w 1`` and for ``-w 3``; plus how the item-vector file ``items.int8.npy`` is mapped in each worker
   (``Shared_Clean`` > 0 means the page-cache copy is shared). ``extra_worker_pss_mb`` is
   ``(total PSS at -w 3 - total PSS at -w 1) / 2``: what one more worker costs the host.
2. ``load``: ``--duration-s`` seconds of concurrent requests from ``--clients`` threads (loopback only, each
   request on a new connection, bounded by the duration), a mix of ``/api/for-you/<user>`` (70 %),
   ``/api/similar/<item>`` (20 %) and ``POST /api/click`` (10 %); status counts, requests/s, p50/p99 latency,
   and the set of worker pids that answered.
3. ``cross_worker``: a click sent to one worker, then the same user's recommendations fetched from a *different*
   worker: with the SQLite profile store they are personalised at once.

4. ``stop``: SIGTERM to the master until master and workers have exited. Over ``STOP_LIMIT_S`` (5 s) the run
   FAILS (``StopTooSlow``, non-zero exit) instead of SIGKILLing quietly: a slow stop meant workers hung at exit
   (fault D21).

Run (about a minute; results in benchmarks/results/workers.jsonl)::

    python benchmarks/bench_workers.py --duration-s 30 --clients 4

Nothing leaves 127.0.0.1; gunicorn is stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import add_out_argument, emit, start

ROOT = Path(__file__).resolve().parents[1]
STORE_DIR = ROOT / "examples" / "flask_store"
DJANGO_DIR = ROOT / "examples" / "django_store"
STOP_LIMIT_S = 5.0
"""A graceful stop slower than this fails (it meant workers hung at exit and were SIGKILLed: fault D21)."""


class StopTooSlow(RuntimeError):
    """gunicorn took longer than the limit to stop on SIGTERM."""


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    master_pid: int
    worker_pids: list[int] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    drain: threading.Thread | None = None


def start_gunicorn(*, workers: int, profile_store: str, worker_class: str = "sync", threads: int = 1,
                   preload_recommender: bool = False, timeout_s: float = 60.0, app: str = "flask",
                   env: dict[str, str] | None = None) -> Server:
    """Start gunicorn on a free loopback port and wait until every worker has booted.

    ``app``: ``flask`` (examples/flask_store, ``PRELOAD=True`` for ``preload_recommender``) or ``django``
    (examples/django_store, ``STORE_PRELOAD=1``: ``get_holder().preload()`` in the master). ``env`` is added
    to the server's environment (``STORE_HUB_URL`` ...).
    """
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if gunicorn is None:
        raise RuntimeError("gunicorn is not installed")
    cmd = [gunicorn, "--preload", "-w", str(workers), "-k", worker_class, "--threads", str(threads),
           "-b", "127.0.0.1:0", "--chdir", str(DJANGO_DIR if app == "django" else STORE_DIR),
           "--log-level", "info", "--graceful-timeout", "30"]
    help_text = subprocess.run([gunicorn, "--help"], capture_output=True, text=True, timeout=60).stdout
    if "--no-control-socket" in help_text:
        cmd.append("--no-control-socket")
    full_env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    full_env.pop("WEB_CONCURRENCY", None)
    if app == "django":
        cmd.append("store_site.wsgi")
        full_env.update(STORE_PROFILE_STORE=profile_store, STORE_PRELOAD="1" if preload_recommender else "0")
    else:
        extra = ", PRELOAD=True" if preload_recommender else ""
        cmd.append(f"storefront:create_app(profile_store={profile_store!r}{extra})")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
                            start_new_session=True)
    server = Server(proc, 0, proc.pid)
    end = time.monotonic() + timeout_s
    # One thread reads the log from the start: select() on the pipe beside a buffered readline() misses lines
    # already in the reader's buffer, and waited out the timeout with every worker booted.
    lines: queue.Queue[str | None] = queue.Queue()
    server.drain = threading.Thread(target=_drain, args=(proc, server.log, lines), daemon=True)
    server.drain.start()
    while len(server.worker_pids) < workers or not server.port:
        left = end - time.monotonic()
        try:
            line = lines.get(timeout=max(left, 0.0)) if left > 0 else None
        except queue.Empty:
            line = None
            left = 0.0
        if line is None:
            stop(server)
            what = "did not start" if left <= 0 else "exited"
            raise RuntimeError(f"gunicorn {what}:\n" + "".join(server.log[-30:]))
        if m := re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line):
            server.port = int(m.group(1))
        if m := re.search(r"Booting worker with pid: (\d+)", line):
            server.worker_pids.append(int(m.group(1)))
    return server


def _drain(proc: subprocess.Popen[str], log: list[str], lines: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        log.append(line)
        del log[:-500]
        lines.put(line)
    lines.put(None)  # end of the log: the master exited


def stop(server: Server, *, limit_s: float = STOP_LIMIT_S) -> float:
    """SIGTERM the master (graceful) and return the seconds until it and its workers exited.

    Raises:
        StopTooSlow: they were still running after ``limit_s``; the process group is SIGKILLed first, so nothing
            is left running, but the stop is a failure, never silently forced.
    """
    t0 = time.monotonic()
    slow = False
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            slow = True
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
    elapsed = time.monotonic() - t0
    if server.drain is not None:
        server.drain.join(timeout=10)  # ends at EOF, once every worker has exited
    if server.proc.stdout is not None:
        server.proc.stdout.close()
    if slow:
        raise StopTooSlow(f"gunicorn did not stop within {limit_s} s of SIGTERM (SIGKILLed):\n"
                          + "".join(server.log[-30:]))
    return elapsed


def reload(server: Server, *, timeout_s: float = 30.0) -> list[int]:
    """SIGHUP the master; wait until as many new workers have booted as there were and the old ones are gone.

    Returns the new worker pids. Raises ``RuntimeError`` on a timeout.
    """
    old, n = list(server.worker_pids), len(server.worker_pids)
    seen = len(server.log)
    server.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        booted = [int(m.group(1)) for line in server.log[seen:]
                  if (m := re.search(r"Booting worker with pid: (\d+)", line))]
        if len(booted) >= n and not any(_alive(p) for p in old):
            server.worker_pids = booted[-n:]
            return server.worker_pids
        time.sleep(0.05)
    raise RuntimeError("gunicorn did not reload in time:\n" + "".join(server.log[-30:]))


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie counts as gone: it has exited, its parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def request(port: int, method: str, path: str, body: dict[str, Any] | None = None,
            timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request on a new loopback connection (so the kernel may hand it to any worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        headers = {"Connection": "close"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def warm_all_workers(server: Server, *, max_requests: int = 400) -> dict[int, int]:
    """Request until every worker has answered both endpoints (each builds its recommender on first use)."""
    seen: Counter[int] = Counter()
    item = None
    for n in range(max_requests):
        status, headers, body = request(server.port, "GET", f"/api/for-you/warm-{n}")
        if status != 200:
            raise RuntimeError(f"warm-up got HTTP {status}:\n" + "".join(server.log[-40:]))
        pid = int(headers["x-worker-pid"])
        item = item or next(iter(_ids(body)), None)  # none before a hub's first bundle
        if item is not None:
            request(server.port, "GET", f"/api/similar/{item}")
        seen[pid] += 1
        if len(seen) == len(server.worker_pids) and min(seen.values()) >= 3:
            break
    return dict(seen)


def wait_ready(server: Server, *, timeout_s: float = 60.0) -> None:
    """Request until every worker answers from a bundle: with a hub, a worker's first bundle arrives (downloaded
    and smoke-tested) a moment after it boots, and until then it answers ``not_ready``."""
    ready: set[int] = set()
    end = time.monotonic() + timeout_s
    while set(server.worker_pids) - ready:
        if time.monotonic() > end:
            raise RuntimeError(f"workers not ready: {sorted(set(server.worker_pids) - ready)}")
        status, headers, body = request(server.port, "GET", "/api/for-you/ready-probe")
        if status == 200 and json.loads(body).get("degraded_reason") != "not_ready":
            ready.add(int(headers["x-worker-pid"]))
        else:
            time.sleep(0.05)


def _ids(body: bytes) -> list[str]:
    """Item ids of a recommendations answer (Flask answers rows with an ``id``, Django plain ids)."""
    return [i if isinstance(i, str) else i["id"] for i in json.loads(body)["items"]]


def cross_worker_click(port: int, *, max_tries: int = 200) -> dict[str, Any]:
    """Click via one worker; read the same user's recommendations from another worker."""
    user = f"cross-{random.getrandbits(40):x}"
    _, headers, body = request(port, "GET", f"/api/for-you/{user}")
    before = json.loads(body)
    clicked = before["items"][0]["id"]
    _, headers, _ = request(port, "POST", "/api/click", {"user": user, "item": clicked})
    click_pid = int(headers["x-worker-pid"])
    # Reads go in concurrent bursts: one idle worker can accept every sequential connection (the kernel does not
    # deal accepts round robin), which on a loaded machine left 200 reads in a row on the clicking worker.
    burst = 6
    with ThreadPoolExecutor(max_workers=burst) as pool:
        for _ in range(max(max_tries // burst, 1)):
            answers = list(pool.map(lambda _: request(port, "GET", f"/api/for-you/{user}"), range(burst)))
            other = [(h, b) for _, h, b in answers if int(h["x-worker-pid"]) != click_pid]
            if other:
                headers, body = other[0]
                break
        else:
            raise RuntimeError("no other worker answered")
    after = json.loads(body)
    return {
        "click_pid": click_pid, "read_pid": int(headers["x-worker-pid"]),
        "before_sources": sorted({i["source"] for i in before["items"]}),
        "after_first_source": after["items"][0]["source"],
        "changed": after["items"] != before["items"] and after["items"][0]["source"] == "personalized",
        "clicked_item_excluded": clicked not in [i["id"] for i in after["items"]],
    }


def smaps(pid: int, items_file: str = "items.int8.npy") -> dict[str, Any]:
    """RSS/PSS/USS of one process and how the item-vector file is mapped in it (MB)."""
    roll: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                roll[parts[0][:-1]] = int(parts[1])
    items: Counter[str] = Counter()
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                current = line.rstrip().split()[-1] if len(line.split()) >= 6 else ""
            elif current and current.endswith(items_file):
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    items[parts[0][:-1]] += int(parts[1])
    mb = 1024.0
    return {
        "pid": pid, "rss_mb": round(roll.get("Rss", 0) / mb, 1), "pss_mb": round(roll.get("Pss", 0) / mb, 1),
        "uss_mb": round((roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0)) / mb, 1),
        "items_npy": {k: round(items[k] / mb, 2) for k in ("Rss", "Pss", "Shared_Clean", "Private_Clean")},
    }


def memory_report(server: Server) -> dict[str, Any]:
    procs = [smaps(server.master_pid)] + [smaps(p) for p in server.worker_pids]
    return {"master": procs[0], "workers": procs[1:], "total_pss_mb": round(sum(p["pss_mb"] for p in procs), 1)}


def load(port: int, *, duration_s: float, clients: int, items: list[str], click_share: float = 0.1) -> dict[str, Any]:
    """``clients`` threads, each sending one request at a time until ``duration_s`` passes.

    ``click_share`` of the requests are clicks, the rest 7:2 for-you and similar-items pages.
    """
    statuses: Counter[int] = Counter()
    pids: Counter[int] = Counter()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    end = time.monotonic() + duration_s

    def run(seed: int) -> None:
        rng = random.Random(seed)
        local_lat, local_status, local_pid, local_err = [], Counter(), Counter(), Counter()
        while time.monotonic() < end:
            user = f"load-{rng.randrange(500)}"
            roll = rng.random()
            t0 = time.perf_counter()
            try:
                if roll < (1.0 - click_share) * 0.7 / 0.9:
                    status, headers, _ = request(port, "GET", f"/api/for-you/{user}")
                elif roll < 1.0 - click_share:
                    status, headers, _ = request(port, "GET", f"/api/similar/{rng.choice(items)}")
                else:
                    status, headers, _ = request(port, "POST", "/api/click", {"user": user, "item": rng.choice(items)})
            except OSError as exc:
                local_err[type(exc).__name__] += 1
                continue
            local_lat.append(time.perf_counter() - t0)
            local_status[status] += 1
            local_pid[int(headers.get("x-worker-pid", "0"))] += 1
        with lock:
            latencies.extend(local_lat)
            statuses.update(local_status)
            pids.update(local_pid)
            errors.update(local_err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration_s + 60)
    wall = time.monotonic() - t0
    latencies.sort()
    n = len(latencies)
    return {
        "duration_s": round(wall, 1), "clients": clients, "requests": n, "rps": round(n / wall, 1),
        "status": {str(k): v for k, v in sorted(statuses.items())},
        "http_5xx": sum(v for k, v in statuses.items() if k >= 500), "connection_errors": dict(errors),
        "p50_ms": round(latencies[n // 2] * 1e3, 1) if n else None,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1e3, 1) if n else None,
        "requests_per_worker": {str(k): v for k, v in sorted(pids.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"])
    parser.add_argument("--preload-recommender", action="store_true",
                        help='EDGEREC["PRELOAD"]=True: build the recommender in the master, before the fork')
    parser.add_argument("--app", default="flask", choices=["flask", "django"], help="which example store")
    add_out_argument(parser, "workers")
    args = parser.parse_args(argv)
    start(args.out)
    tmp = Path(tempfile.mkdtemp(prefix="edgerec-bench-"))
    ok = True
    try:
        spec = f"sqlite:///{tmp}/one/profiles.sqlite3"
        one = start_gunicorn(workers=1, profile_store=spec, worker_class=args.worker_class,
                             preload_recommender=args.preload_recommender, app=args.app)
        try:
            warm_all_workers(one)
            base = memory_report(one)
        finally:
            stop(one)
        spec = f"sqlite:///{tmp}/many/profiles.sqlite3"
        many = start_gunicorn(workers=args.workers, profile_store=spec, worker_class=args.worker_class,
                              threads=4 if args.worker_class == "gthread" else 1,
                              preload_recommender=args.preload_recommender, app=args.app)
        try:
            warmed = warm_all_workers(many)
            mem = memory_report(many)
            extra = (mem["total_pss_mb"] - base["total_pss_mb"]) / max(args.workers - 1, 1)
            emit(**{"phase": "memory", "preload_recommender": args.preload_recommender, "workers_1": base, f"workers_{args.workers}": mem,
                              "warm_requests": warmed, "extra_worker_pss_mb": round(extra, 1)})
            _, _, body = request(many.port, "GET", "/api/for-you/items-seed?k=50")
            items = _ids(body)
            result = load(many.port, duration_s=args.duration_s, clients=args.clients, items=items)
            emit(**{"phase": "load", "worker_class": args.worker_class, **result})
            changed = True
            if args.app == "flask":  # the Flask store's answers carry each item's source
                cross = cross_worker_click(many.port)
                emit(**{"phase": "cross_worker", **cross})
                changed = cross["changed"]
            after = memory_report(many)
            emit(**{"phase": "memory_after_load", "workers": after["workers"],
                              "total_pss_mb": after["total_pss_mb"]})
            ok = result["http_5xx"] == 0 and not result["connection_errors"] and changed
            # Raises (the run fails) past STOP_LIMIT_S: a slow stop means workers hung at exit (fault D21).
            emit(phase="stop", app=args.app, workers=args.workers, sigterm_exit_s=round(stop(many), 2),
                 limit_s=STOP_LIMIT_S)
        finally:
            stop(many)  # after an error above; a no-op once stopped
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
