"""The closed loop over loopback: hub, v1 from real data, an edge serving it, feedback, export, v2, swap.

Run from the repository root (the data folder defaults to ``$EDGEREC_DATA_DIR/amazon_beauty``)::

    python examples/closed_loop/closed_loop.py                 # a few minutes on a laptop
    python examples/closed_loop/closed_loop.py --quick         # a reduced run, well under a minute

What happens, in order:

1. a hub starts on ``127.0.0.1`` (a free port) with a fresh data directory;
2. v1 is built from the first users of Beauty (``edgerec build``; ``--builder cooc`` uses the torch-free
   co-occurrence builder instead) and published, signed, to channel ``stable`` with ``edgerec publish``;
3. an edge (``Recommender.connect``) picks v1 up and serves it;
4. the next users of the data set "shop": each asks for recommendations and reports what they viewed and bought
   with ``rec.feedback``; the edge ships the events to the hub (pseudonymised), and the hit rate of v1 on them is
   measured;
5. ``edgerec hub export-events`` writes the hub's event log; v2 is built from the v1 training data plus those
   events, and published to ``stable``;
6. the edge swaps to v2 on its next poll, while it keeps answering; the hub's status compares the versions.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edgerec_sdk import Recommender
from edgerec_sdk.bundle import Manifest
from edgerec_sdk.cli import main as edgerec
from edgerec_sdk.hub import HubApp, serve_in_thread

ADMIN, EDGE, SIGNING_KEY, USER_ID_KEY = "demo-admin-token", "demo-edge-token", "demo-signing-key", "demo-uid-key"
REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000  # event times of the replayed users (the data set has none)


def say(msg: str) -> None:
    print(f"[closed-loop] {msg}", flush=True)


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline, tick = time.monotonic() + timeout_s, threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        tick.wait(0.05)
    return True


def read_beauty(data: Path) -> tuple[list[list[int]], dict[int, str]]:
    """Sequences of item numbers (oldest first) and the number -> ASIN map."""
    sequences = [[int(x) for x in line.split()[1:]] for line in (data / "Beauty.txt").read_text().splitlines()
                 if line.strip()]
    asin = {}
    for line in (data / "item_asin.tsv").read_text().splitlines()[1:]:
        number, code = line.split("\t")
        asin[int(number)] = code
    return sequences, asin


def build(builder: str, events_csv: Path, out: Path, *, epochs: int) -> Path:
    """Build a bundle from an event log ``user,item,type,timestamp`` (items are ASINs)."""
    if builder == "edgerec":
        cmd = [sys.executable, "-m", "edgerec_sdk.cli", "build", "--data", str(events_csv), "--out", str(out),
               "--epochs", str(epochs), "--no-evaluate", "--no-baselines", "--no-progress", "--threads", "1"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return out
    # co-occurrence builder: it reads the one-user-per-line format with item numbers 1..K (renumbered here so
    # its dense K x K matrix covers only the items that occur)
    per_user: dict[str, list[str]] = {}
    with open(events_csv, newline="") as f:
        for row in csv.DictReader(f):
            per_user.setdefault(row["user"], []).append(row["item"])
    number: dict[str, int] = {}
    for seq in per_user.values():
        for code in seq:
            number.setdefault(code, len(number) + 1)
    folder = out.with_name(out.name + "-input")
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{i + 1} " + " ".join(str(number[c]) for c in seq) for i, seq in enumerate(per_user.values())]
    (folder / "Beauty.txt").write_text("\n".join(lines) + "\n")
    (folder / "item_asin.tsv").write_text("item_id\tasin\n" + "".join(f"{n}\t{c}\n" for c, n in number.items()))
    script = REPO / "examples" / "build_cooccurrence_bundle.py"
    subprocess.run([sys.executable, str(script), "--data", str(folder), "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def version_of(bundle_dir: Path) -> str:
    return Manifest.from_bytes((bundle_dir / "manifest.json").read_bytes()).model_version


def write_log(path: Path, sequences: list[list[int]], asin: dict[int, str], *, first_user: int) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "type", "timestamp"])
        for u, seq in enumerate(sequences):
            for j, item in enumerate(seq):
                w.writerow([f"hist-{first_user + u}", asin[item], "purchase", T0 - 10**6 + j])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(os.environ.get("EDGEREC_DATA_DIR", REPO.parent / "shared" / "data")) / "amazon_beauty"
    p.add_argument("--data", type=Path, default=default_data, help="folder with Beauty.txt and item_asin.tsv")
    p.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    p.add_argument("--builder", choices=("auto", "edgerec", "cooc"), default="auto",
                   help="edgerec build (needs the [build] extra) or the co-occurrence baseline; auto: edgerec if torch"
                   " is installed")
    p.add_argument("--train-users", type=int, default=8000, help="users v1 is built from")
    p.add_argument("--live-users", type=int, default=2000, help="users replayed as live traffic")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--poll-interval", type=float, default=2.0, help="seconds between the edge's manifest polls")
    p.add_argument("--quick", action="store_true", help="a reduced run: 400 + 200 users, one epoch")
    args = p.parse_args(argv)
    if args.quick:
        args.train_users, args.live_users, args.epochs = 400, 200, 1
    if not (args.data / "Beauty.txt").exists():
        say(f"no Beauty.txt under {args.data}; set EDGEREC_DATA_DIR or pass --data")
        return 2
    if args.builder == "auto":
        args.builder = "edgerec" if importlib.util.find_spec("torch") is not None else "cooc"
    work = args.work or Path(tempfile.mkdtemp(prefix="edgerec-closed-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    sequences, asin = read_beauty(args.data)
    train = sequences[: args.train_users]
    live = sequences[args.train_users: args.train_users + args.live_users]

    # 1. the hub
    hub = serve_in_thread(HubApp(work / "hub", admin_tokens=[ADMIN], edge_tokens=[EDGE]))
    say(f"hub on {hub.url} (data in {work / 'hub'})")
    rec = None
    try:
        # 2. v1 from real data
        history_log = work / "history.csv"
        write_log(history_log, train, asin, first_user=0)
        t = time.monotonic()
        v1 = build(args.builder, history_log, work / "v1", epochs=args.epochs)
        v1_version = version_of(v1)
        say(f"built v1 = {v1_version} from {len(train)} users in {time.monotonic() - t:.0f} s")
        hub_args = ["--hub", hub.url, "--token", ADMIN]
        edgerec(["publish", str(v1), *hub_args, "--channel", "stable", "--signing-key", SIGNING_KEY])

        # 3. an edge
        rec = Recommender.connect(hub.url, token=EDGE, user_id_key=USER_ID_KEY, state_dir=work / "edge",
                                  signing_key=SIGNING_KEY, poll_interval_s=args.poll_interval)
        if not wait_for(lambda: rec is not None and rec.status().model_version == v1_version, 60.0):
            say(f"the edge did not pick up v1: {rec.status().sync.get('last_update_error')}")
            return 1
        say(f"edge serves {rec.status().model_version} (origin {rec.status().bundle_origin})")

        # 4. live traffic: recommend, then report what the shopper did
        hits = asked = 0
        for u, seq in enumerate(live):
            user = f"shopper-{u}"
            for j, item in enumerate(seq):
                if j == len(seq) - 1 and j > 0:
                    answer = rec.recommend(user, k=10)
                    asked += 1
                    hits += asin[item] in answer.item_ids
                rec.feedback({"user": user, "item": asin[item], "type": "purchase", "ts": T0 + j})
        if not rec.flush(timeout_s=60.0):
            say("not every event reached the hub yet (they stay in the outbox)")
        sample = rec.recommend("shopper-0", k=3)
        say(f"{asked} shoppers, v1 hit rate@10 on their next purchase {hits / max(asked, 1):.3f}; "
            f"shopper-0 gets {sample.item_ids} from {sample.model_version}")
        say(f"hub holds {hub.app.storage.count_events()} events, all pseudonymised")

        # 5. export, build v2 from history + the new events, publish
        events = work / "events.csv"
        edgerec(["hub", "export-events", "--root", str(work / "hub"), "--out", str(events)])
        combined = work / "retrain.csv"
        with open(combined, "w") as out:
            out.write(history_log.read_text())
            out.writelines(events.read_text().splitlines(keepends=True)[1:])
        t = time.monotonic()
        v2 = build(args.builder, combined, work / "v2", epochs=args.epochs)
        v2_version = version_of(v2)
        say(f"built v2 = {v2_version} in {time.monotonic() - t:.0f} s")
        edgerec(["publish", str(v2), *hub_args, "--channel", "stable", "--signing-key", SIGNING_KEY])
        published = time.monotonic()

        # 6. the swap, while the edge keeps answering
        answered = 0

        def swapped() -> bool:
            nonlocal answered
            answered += 1
            return rec is not None and rec.recommend("shopper-0", k=3).model_version == v2_version

        if not wait_for(swapped, 10 * args.poll_interval + 30.0):
            say(f"the edge did not swap: {rec.status().sync.get('last_update_error')}")
            return 1
        sample = rec.recommend("shopper-0", k=3)
        say(f"edge swapped to {sample.model_version} {time.monotonic() - published:.1f} s after publishing "
            f"({answered} answers meanwhile); shopper-0 now gets {sample.item_ids}")
        for u in range(min(50, len(live))):  # a little traffic on v2, so the hub can compare the versions
            rec.feedback({"user": f"shopper-{u}", "item": asin[live[u][0]], "type": "click", "ts": T0 + 10**5})
        rec.flush(timeout_s=30.0)
        per_version = hub.app.storage.status()["per_model_version"]
        say(f"hub per-version comparison: {per_version}")
        print(f"RESULT v1={v1_version} v2={v2_version} events={hub.app.storage.count_events()}", flush=True)
        return 0
    finally:
        if rec is not None:
            rec.close(5.0)
        hub.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
