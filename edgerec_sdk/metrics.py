"""Prometheus metrics of one edge process, in the text exposition format, with no dependency.

The runtime never needs prometheus-client: :func:`render` writes the format (version 0.0.4) itself from
:meth:`Recommender.status` and the request latency histogram. Serve it from any web framework:

- Flask: ``app.add_url_rule("/metrics", "metrics", edgerec_sdk.integrations.flask.metrics_response)``
  (``examples/flask_store`` exposes ``/metrics``);
- Django: ``path("metrics", edgerec_sdk.integrations.django.metrics_view)``;
- anything else: ``body = render(recommender)`` with ``Content-Type: CONTENT_TYPE``.

Each worker process has its own counters; scrape every worker (or sum them in Prometheus by instance).

Example:
    >>> from edgerec_sdk import Recommender
    >>> from edgerec_sdk.metrics import render
    >>> with Recommender.demo() as rec:
    ...     _ = rec.recommend("u1", k=3)
    ...     text = render(rec)
    >>> "edgerec_requests_total 1" in text
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .recommender import Recommender

__all__ = ["CONTENT_TYPE", "render"]

#: The ``Content-Type`` of :func:`render`'s output.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_OUTBOX_DROPS = ("dropped_outbox_full", "dropped_memory_full", "dropped_forgotten", "dropped_corrupt")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[Mapping[str, str], float]]) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            self.sample(name, labels, value)

    def sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")


def render(recommender: Recommender) -> str:
    """The process's metrics in the Prometheus text format (``Content-Type``: :data:`CONTENT_TYPE`)."""
    status = recommender.status()
    counters: Mapping[str, int] = status.counters
    sync: Mapping[str, Any] = status.sync
    w = _Writer()
    requests = counters.get("requests", 0)
    w.family("edgerec_requests_total", "counter", "Users answered by recommend/similar_items (a batch counts each user).",
             [({}, requests)])
    w.family("edgerec_degraded_answers_total", "counter", "Degraded answers, by reason.",
             [({"reason": k[len("degraded_"):]}, v) for k, v in sorted(counters.items())
              if k.startswith("degraded_")])
    buckets, total_s = recommender._counters.latency.snapshot()
    bounds = recommender._counters.latency.buckets
    w.lines += ["# HELP edgerec_request_duration_seconds Wall time of recommend_many/similar_items calls.",
                "# TYPE edgerec_request_duration_seconds histogram"]
    for bound, count in zip((*bounds, math.inf), buckets, strict=True):
        w.sample("edgerec_request_duration_seconds_bucket", {"le": _number(bound)}, count)
    w.sample("edgerec_request_duration_seconds_sum", {}, total_s)
    w.sample("edgerec_request_duration_seconds_count", {}, buckets[-1])
    hits = counters.get("cache_hits", 0)
    w.family("edgerec_cache_hits_total", "counter", "Answers served from the result cache.", [({}, hits)])
    w.family("edgerec_cache_hit_ratio", "gauge", "Cache hits over requests since the process started.",
             [({}, hits / requests if requests else 0.0)])
    w.family("edgerec_feedback_events", "counter", "feedback() calls, by outcome.",
             [({"outcome": k[len("feedback_"):]}, v) for k, v in sorted(counters.items())
              if k.startswith("feedback_")])
    w.family("edgerec_model_info", "gauge", "The model version serving now (value 1).",
             [({"model_version": status.model_version}, 1)] if status.model_version else [])
    w.family("edgerec_model_ready", "gauge", "1 when a bundle is serving.", [({}, int(status.ready))])
    outbox: Mapping[str, int] = sync.get("outbox") or {}
    if sync:
        w.family("edgerec_outbox_pending_events", "gauge", "Feedback events waiting for the hub (host-wide).",
                 [({}, outbox.get("pending", 0))])
        w.family("edgerec_outbox_delivered_events_total", "counter", "Feedback events the hub acknowledged (host-wide).",
                 [({}, outbox.get("delivered", 0))])
        w.family("edgerec_outbox_dropped_events_total", "counter", "Feedback events never sent, by reason (host-wide).",
                 [({"reason": r[len("dropped_"):]}, outbox.get(r, 0)) for r in _OUTBOX_DROPS]
                 + [({"reason": "dead_lettered"}, outbox.get("dead_lettered", 0))])
        refusals: Mapping[str, int] = sync.get("refusals_by_reason") or {}
        w.family("edgerec_update_refusals_total", "counter", "Bundles the updater refused, by reason.",
                 [({"reason": r}, n) for r, n in sorted(refusals.items())])
    return "\n".join(w.lines) + "\n"
