"""The hub's Prometheus metrics (``GET /metrics``, prometheus-client from the ``[hub]`` extra).

One registry per :class:`~edgerec_sdk.hub.HubApp`, so several apps in one process (tests, a benchmark) keep
separate counts. Counters are per process: with several replicas or gunicorn workers, scrape each and ``sum``
them. ``edgerec_hub_edges`` is read from the database at scrape time, so every replica reports the same fleet
(use ``max``, not ``sum``, across replicas).

Names follow Prometheus conventions: ``_total`` counters, units in names (``_seconds``, ``_bytes``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from .._impl.optional import require
from ..errors import StorageBusyError
from ..sync import protocol
from .storage import SQLStorage

__all__ = ["CONTENT_TYPE", "EDGE_WINDOW_S", "HubMetrics", "route_of"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: An edge counts towards ``edgerec_hub_edges`` for this long after its last batch.
EDGE_WINDOW_S = 15 * 60.0

_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# why a status answers a whole batch: the label of edgerec_hub_batches_refused_total
_BATCH_REFUSALS = {400: "bad_batch", 401: "auth", 403: "auth", 411: "no_length", 413: "too_large", 429: "busy",
                   503: "storage_unavailable"}


def route_of(method: str, path: str) -> str:
    """A bounded route label (never a version, channel or file name: label values must stay few)."""
    if path in (protocol.HEALTH_PATH, "/metrics"):
        return path.strip("/")
    parts = path.split("/")[2:] if path.startswith("/v1/") else []
    if parts == ["events"]:
        return "events"
    if parts == ["status"]:
        return "status"
    if parts == ["bundles"]:
        return "publish"
    if len(parts) == 3 and parts[0] == "bundles":
        return "bundle_file"
    if len(parts) == 3 and parts[0] == "channels" and parts[2] == "manifest":
        return "manifest"
    if len(parts) == 2 and parts[0] == "channels":
        return "channel_set" if method == "PUT" else "channel"
    if len(parts) >= 3 and parts[0] == "channels" and parts[2] == "artifacts":
        return "artifacts"
    return "other"


class _EdgesCollector:
    """``edgerec_hub_edges{model_version}``: edges whose newest batch in the window named each version."""

    def __init__(self, storage: SQLStorage) -> None:
        self.storage = storage
        self.gauge_family = require("prometheus_client.core", extra="hub").GaugeMetricFamily

    def describe(self) -> list[Any]:
        return []  # nothing to describe up front: collect() queries the database only when scraped

    def collect(self) -> Iterator[Any]:
        family = self.gauge_family("edgerec_hub_edges", "Edges seen in the last 15 minutes, by the model "
                                   "version of their newest batch (from the database: equal on every replica).",
                                   labels=["model_version"])
        try:
            per_version = self.storage.edges_per_version(since_ts=time.time() - EDGE_WINDOW_S)
        except StorageBusyError:
            per_version = {}  # the scrape still answers; the request metrics say the database is in trouble
        for version, n in sorted(per_version.items()):
            family.add_metric([version], n)
        yield family


class HubMetrics:
    """The counters and histograms of one hub app; ``render()`` is the ``/metrics`` body."""

    def __init__(self, storage: SQLStorage) -> None:
        prom = require("prometheus_client", extra="hub")
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=False)
        r = self.registry
        self.ingested = prom.Counter("edgerec_hub_events_ingested", "Events stored for the first time.",
                                     registry=r)
        self.duplicates = prom.Counter("edgerec_hub_events_duplicate", "Events already stored (a resent batch).",
                                       registry=r)
        self.refused = prom.Counter("edgerec_hub_events_refused", "Events refused one by one, by reason.",
                                    ["reason"], registry=r)
        self.batches_refused = prom.Counter("edgerec_hub_batches_refused",
                                            "Event batches answered with an error as a whole, by reason.",
                                            ["reason"], registry=r)
        self.batch_events = prom.Histogram("edgerec_hub_batch_events", "Events per stored batch.",
                                           buckets=_BATCH_BUCKETS, registry=r)
        self.requests = prom.Counter("edgerec_hub_requests", "Requests answered, by route and status code.",
                                     ["route", "code"], registry=r)
        self.latency = prom.Histogram("edgerec_hub_request_duration_seconds",
                                      "Time to answer a request (until the body starts), by route.",
                                      ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.bundle_downloads = prom.Counter("edgerec_hub_bundle_downloads",
                                             "Bundle file requests answered 200 or 206.", registry=r)
        self.bundle_bytes = prom.Counter("edgerec_hub_bundle_sent_bytes",
                                         "Bundle file bytes answered (Content-Length of 200 and 206).", registry=r)
        r.register(_EdgesCollector(storage))

    def request(self, method: str, path: str, status: int, seconds: float,
                headers: list[tuple[str, str]]) -> None:
        route = route_of(method, path)
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if route == "events" and status in _BATCH_REFUSALS:
            self.batches_refused.labels(_BATCH_REFUSALS[status]).inc()
        elif route == "bundle_file" and status in (200, 206) and method == "GET":
            self.bundle_downloads.inc()
            length = next((v for k, v in headers if k == "Content-Length"), "0")
            self.bundle_bytes.inc(int(length) if length.isdigit() else 0)

    def batch(self, n_events: int, result: protocol.BatchResult) -> None:
        self.batch_events.observe(n_events)
        self.ingested.inc(len(result.accepted))
        self.duplicates.inc(len(result.duplicates))
        for reason in result.rejected.values():
            self.refused.labels(reason).inc()

    def render(self) -> bytes:
        return bytes(self._prom.generate_latest(self.registry))
