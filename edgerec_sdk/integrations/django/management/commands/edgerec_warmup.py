"""``manage.py edgerec_warmup``: build the recommender and run one request of each kind, as a deploy gate.

It loads and verifies the bundle, reads the profile store once (proving a shared store is reachable), and runs
``recommend`` for a cold user and ``similar_items`` for a popular item, printing each duration. It exits non-zero
when any answer is degraded, so a deploy can stop before traffic reaches a broken bundle or store.

With ``HUB`` settings a new host has no bundle until the first one arrives from the hub: ``--wait SECONDS``
(default 30) polls for it that long at most, then fails saying what the updater last reported.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ... import get_recommender

_PROBE_USER = "edgerec-warmup-probe"


class Command(BaseCommand):
    help = "Load the EDGEREC bundle and run one recommend and one similar_items; fail when degraded."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--k", type=int, default=10, help="items per probe request (default 10)")
        parser.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                            help="with HUB settings, wait at most this long for the first bundle (default 30; "
                                 "0 fails at once when none is on disk yet)")

    def handle(self, *args: Any, **options: Any) -> None:
        k = options["k"]
        t0 = time.perf_counter()
        try:
            rec = get_recommender()
        except Exception as exc:
            raise CommandError(f"edgerec: cannot build the recommender: {type(exc).__name__}: {exc}") from exc
        self._wait_for_bundle(rec, max(0.0, float(options["wait"])))
        t1 = time.perf_counter()
        cold = rec.recommend(_PROBE_USER, k=k)
        t2 = time.perf_counter()
        seed = cold.item_ids[0] if len(cold) else next(iter(rec.items), None)
        similar = rec.similar_items(seed, k=k) if seed is not None else None
        t3 = time.perf_counter()
        self.stdout.write(
            f"edgerec: model {rec.status().model_version} ({rec.status().n_items} items) loaded in "
            f"{(t1 - t0) * 1e3:.0f} ms; recommend {(t2 - t1) * 1e3:.1f} ms ({len(cold)} items); "
            f"similar_items {(t3 - t2) * 1e3:.1f} ms ({0 if similar is None else len(similar)} items)"
        )
        bad = [f"{name}: {r.degraded_reason}" for name, r in (("recommend", cold), ("similar_items", similar))
               if r is not None and r.degraded]
        if bad:
            raise CommandError("edgerec: degraded answers: " + ", ".join(bad))

    def _wait_for_bundle(self, rec: Any, wait_s: float) -> None:
        """Drive the updater until a bundle serves, for at most ``wait_s``; fail with its last report."""
        deadline = time.monotonic() + wait_s
        pause = threading.Event()
        while not rec.status().ready and time.monotonic() < deadline:
            rec.poll_once()  # returns at once when the updater thread is already polling
            pause.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        status = rec.status()
        if not status.ready:
            last = (status.sync or {}).get("last_update_error") or "no answer from the hub yet"
            raise CommandError(f"edgerec: no bundle after waiting {wait_s:g} s (--wait); the updater last "
                               f"reported: {last}")
