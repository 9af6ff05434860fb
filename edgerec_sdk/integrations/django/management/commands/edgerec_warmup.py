"""``manage.py edgerec_warmup``: build the recommender and run one request of each kind, as a deploy gate.

It loads and verifies the bundle, reads the profile store once (proving a shared store is reachable), and runs
``recommend`` for a cold user and ``similar_items`` for a popular item, printing each duration. It exits non-zero
when any answer is degraded, so a deploy can stop before traffic reaches a broken bundle or store.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ... import get_recommender

_PROBE_USER = "edgerec-warmup-probe"


class Command(BaseCommand):
    help = "Load the EDGEREC bundle and run one recommend and one similar_items; fail when degraded."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--k", type=int, default=10, help="items per probe request (default 10)")

    def handle(self, *args: Any, **options: Any) -> None:
        k = options["k"]
        t0 = time.perf_counter()
        try:
            rec = get_recommender()
        except Exception as exc:
            raise CommandError(f"edgerec: cannot build the recommender: {type(exc).__name__}: {exc}") from exc
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
