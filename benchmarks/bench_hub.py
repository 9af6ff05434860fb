"""How many events one hub process ingests, on PostgreSQL and on SQLite, and with two replicas; bundle download
throughput from PostgreSQL storage against local files.

Each hub is a real ``edgerec hub serve`` process (waitress) on loopback. The load is ``--edges`` concurrent
edges (threads of this process, each with its own keep-alive connection) sending batches of ``--batch`` events,
gzip-compressed as the SDK's uploader sends them; bodies are encoded before the clock starts, so the client
spends its CPU on HTTP only. "Two replicas" are two hub processes on one database, the edges alternating
between them batch by batch (a client-side round robin, as ``SyncConfig.hub_urls`` or a load balancer would).
The three runs repeat in ``--rounds`` interleaved rounds (each round's line is kept; the summary line gives
the median events/s and the latencies of all rounds). While PostgreSQL ingests, ``/metrics`` is scraped
mid-run and again at the end; the script checks that it parses with prometheus-client's parser and that
``edgerec_hub_events_ingested_total`` (summed over replicas) equals the events sent.

PostgreSQL is a throwaway server (``tests/hub/pgserver.py``) switched to durable settings (``fsync``,
``synchronous_commit``, ``full_page_writes`` on) before the runs, unless ``--db`` names another.

    python benchmarks/bench_hub.py                                   # ~3 minutes on 2 cores
    python benchmarks/bench_hub.py --batches-per-edge 20 --rounds 5 --download-mb 256
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from _bench import add_out_argument, emit, start

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
ADMIN, EDGE = "bench-admin", "bench-edge"


@contextmanager
def hub_process(root: Path, db: str | None, threads: int) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "edgerec_sdk.cli", "hub", "serve", "--root", str(root), "--port", str(port),
           "--threads", str(threads), "--admin-token", ADMIN, "--edge-token", EDGE]
    proc = subprocess.Popen([*cmd, *(["--db", db] if db else [])], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"hub did not start: {' '.join(cmd[3:6])}") from None
                threading.Event().wait(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def encode_batches(edges: int, per_edge: int, batch: int, tag: str) -> list[list[tuple[bytes, dict[str, str]]]]:
    now = time.time()
    out = []
    for e in range(edges):
        bodies = []
        for b in range(per_edge):
            events = [{"event_id": f"{tag}-{e}-{b}-{i}", "user": hashlib.sha256(f"u{(b * batch + i) % 997}".encode())
                       .hexdigest()[:32], "item": f"item-{(e * 31 + i) % 5000:06d}",
                       "type": "click" if i % 4 else "purchase", "ts": now, "model_version": "v1",
                       "edge_id": f"edge-{e}"} for i in range(batch)]
            raw = orjson.dumps({"v": 1, "edge_id": f"edge-{e}", "batch_id": f"{tag}-{e}-{b}", "events": events})
            bodies.append((gzip.compress(raw, 6), {"Content-Type": "application/json", "Content-Encoding": "gzip",
                                                  "Authorization": f"Bearer {EDGE}"}))
        out.append(bodies)
    return out


def ingest(urls: list[str], batches: list[list[tuple[bytes, dict[str, str]]]],
           scrape_at: float | None = None) -> dict[str, Any]:
    """Send every batch; each edge alternates over ``urls``; return throughput, latencies and a mid-run scrape."""
    latencies: list[float] = []
    accepted = [0]
    retries = [0]
    lock = threading.Lock()
    scraped: list[str] = []
    total_batches = sum(len(b) for b in batches)

    def edge(i: int, bodies: list[tuple[bytes, dict[str, str]]]) -> None:
        with httpx.Client(timeout=60.0) as client:
            for n, (body, headers) in enumerate(bodies):
                url = urls[(i + n) % len(urls)] + "/v1/events"
                while True:
                    t0 = time.perf_counter()
                    r = client.post(url, content=body, headers=headers)
                    dt = time.perf_counter() - t0
                    if r.status_code == 200:
                        break
                    with lock:
                        retries[0] += 1
                    threading.Event().wait(0.05)
                with lock:
                    latencies.append(dt)
                    accepted[0] += int(r.json()["accepted"])
                    if scrape_at is not None and not scraped and len(latencies) >= scrape_at * total_batches:
                        scraped.append(httpx.get(urls[0] + "/metrics", timeout=10).text)

    threads = [threading.Thread(target=edge, args=(i, b)) for i, b in enumerate(batches)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ts = np.array(latencies)
    events = sum(len(orjson.loads(gzip.decompress(b))["events"]) for bodies in batches for b, _ in bodies)
    return {"events": events, "accepted": accepted[0], "batches": len(latencies), "retried_batches": retries[0],
            "latencies": ts,
            "wall_s": round(wall, 2), "events_per_s": round(accepted[0] / wall, 1),
            "batch_p50_ms": round(float(np.median(ts)) * 1e3, 1),
            "batch_p99_ms": round(float(np.quantile(ts, 0.99)) * 1e3, 1), "scraped": scraped}


def ingested_total(text: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "edgerec_hub_events_ingested_total")


def downloads(url: str, version: str, name: str, size: int, repeat: int) -> dict[str, Any]:
    ts = []
    with httpx.Client(timeout=120.0, headers={"Authorization": f"Bearer {EDGE}"}) as c:
        for _ in range(repeat):
            t0 = time.perf_counter()
            got = 0
            with c.stream("GET", f"{url}/v1/bundles/{version}/{name}") as r:
                for chunk in r.iter_raw(1024 * 1024):
                    got += len(chunk)
            ts.append(time.perf_counter() - t0)
            assert got == size, (got, size)
    med = float(np.median(ts))
    return {"mb": round(size / 2**20, 1), "repeat": repeat, "median_s": round(med, 3),
            "mb_per_s": round(size / 2**20 / med, 1), "best_mb_per_s": round(size / 2**20 / min(ts), 1)}


def publish_big(url: str, tmp: Path, mb: int) -> tuple[str, str, int]:
    from edgerec_sdk.hub.publish import make_tar
    from edgerec_sdk.testing import make_tiny_bundle

    d = make_tiny_bundle(tmp / "big-bundle", model_version="big1")
    # one extra listed file of the requested size: the manifest names it, the hub streams it like any other
    blob = d / "blob.bin"
    with open(blob, "wb") as f:
        for i in range(mb):
            f.write(hashlib.sha256(str(i).encode()).digest() * 32768)
    doc = orjson.loads((d / "manifest.json").read_bytes())
    doc["files"]["blob.bin"] = {"sha256": hashlib.sha256(blob.read_bytes()).hexdigest(), "size": blob.stat().st_size}
    (d / "manifest.json").write_bytes(orjson.dumps(doc))
    (d / "signature").unlink(missing_ok=True)
    r = httpx.post(f"{url}/v1/bundles", content=make_tar(d), headers={"Authorization": f"Bearer {ADMIN}"},
                   timeout=600)
    assert r.status_code in (200, 201), r.text
    return "big1", "blob.bin", blob.stat().st_size


def durable(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = on")
        conn.execute("SELECT pg_reload_conf()")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edges", type=int, default=16)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--batches-per-edge", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three ingest runs")
    p.add_argument("--threads", type=int, default=8, help="hub worker threads (edgerec hub serve --threads)")
    p.add_argument("--download-mb", type=int, default=128)
    p.add_argument("--download-repeat", type=int, default=5)
    p.add_argument("--db", default=None, help="an empty PostgreSQL database; default: a throwaway server")
    add_out_argument(p, "hub")
    args = p.parse_args()
    start(args.out)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-hub-")))
        db = args.db
        if db is None:
            from hub import pgserver

            server = pgserver.start()
            if isinstance(server, str):
                raise SystemExit(f"cannot start PostgreSQL: {server}")
            stack.callback(server.stop)
            durable(server.url())
            db = server.url()
        shape = {"edges": args.edges, "batch": args.batch, "batches_per_edge": args.batches_per_edge,
                 "hub_threads": args.threads}
        # every configuration runs once per round, rounds interleaved: a burst of load from elsewhere on the
        # machine lands on all of them alike, and the median over rounds is what is reported
        configs = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2))
        with hub_process(tmp / "root-sqlite", None, args.threads) as lite, \
                hub_process(tmp / "root-pg", db, args.threads) as one, \
                hub_process(tmp / "root-a", db, args.threads) as a, hub_process(tmp / "root-b", db, args.threads) as b:
            urls = {configs[0]: [lite], configs[1]: [one], configs[2]: [a, b]}
            runs: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in configs}
            mid_run: list[float] = []
            for r in range(args.rounds):
                for config in configs:
                    batches = encode_batches(args.edges, args.batches_per_edge, args.batch, f"{config}-{r}")
                    res = ingest(urls[config], batches, scrape_at=0.5 if config == configs[1] and r == 0 else None)
                    mid_run += [ingested_total(t) for t in res.pop("scraped")]
                    runs[config].append(res)
                    emit(bench="ingest_round", backend=config[0], replicas=config[1], round=r,
                         **{k: v for k, v in res.items() if k != "latencies"})
            for config in configs:
                rs = runs[config]
                ts = np.concatenate([x["latencies"] for x in rs])
                per = [ingested_total(httpx.get(u + "/metrics", timeout=10).text) for u in urls[config]]
                sent = sum(x["events"] for x in rs)
                emit(bench="ingest", backend=config[0], replicas=config[1], **shape, rounds=len(rs),
                     events=sent, accepted=sum(x["accepted"] for x in rs),
                     retried_batches=sum(x["retried_batches"] for x in rs),
                     events_per_s=round(float(np.median([x["events_per_s"] for x in rs])), 1),
                     events_per_s_rounds=[x["events_per_s"] for x in rs],
                     batch_p50_ms=round(float(np.median(ts)) * 1e3, 1),
                     batch_p99_ms=round(float(np.quantile(ts, 0.99)) * 1e3, 1),
                     metrics_ingested=sum(per), metrics_per_process=per, metrics_equal_sent=sum(per) == sent,
                     **({"metrics_mid_run_ingested": mid_run[0]} if config == configs[1] and mid_run else {}))
        for name, backend in (("postgresql", db), ("local_files", None)):
            with hub_process(tmp / f"dl-{name}", backend, args.threads) as url:
                version, fname, size = publish_big(url, tmp / f"b-{name}", args.download_mb)
                emit(bench="download", storage=name, **downloads(url, version, fname, size, args.download_repeat))


if __name__ == "__main__":
    main()
