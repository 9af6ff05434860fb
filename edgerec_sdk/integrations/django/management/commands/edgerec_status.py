"""``manage.py edgerec_status``: load the configured recommender in this process and print its state as JSON."""

from __future__ import annotations

import json
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ....._impl.log import redact_url
from ... import get_recommender


class Command(BaseCommand):
    help = "Load the EDGEREC recommender in this process and print its status as JSON (exit 1 when not ready)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            rec = get_recommender()
        except Exception as exc:
            raise CommandError(f"edgerec: cannot build the recommender: {type(exc).__name__}: {exc}") from exc
        status = rec.status()
        spec = rec.config.profile_store
        report = {
            "pid": os.getpid(),
            "ready": status.ready,
            "model_version": status.model_version,
            "n_items": status.n_items,
            "bundle_origin": status.bundle_origin,
            "profile_store": spec if spec == "memory" or spec.startswith("sqlite") else redact_url(spec),
            "counters": dict(status.counters),
            "sync": dict(status.sync),
        }
        self.stdout.write(json.dumps(report, indent=2, sort_keys=True, default=str))
        if not status.ready:
            raise CommandError("edgerec: no bundle is serving")
