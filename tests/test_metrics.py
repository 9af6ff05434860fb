"""Edge metrics (``edgerec_sdk.metrics``): the Prometheus text format, written without prometheus-client and
read back here with prometheus-client's own parser; values equal the recommender's status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sync.helpers import EDGE, KEY, bundle, new_hub, publish

from edgerec_sdk import Recommender
from edgerec_sdk.metrics import CONTENT_TYPE, render
from edgerec_sdk.sync import SyncConfig


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_parse_and_equal_the_status() -> None:
    with Recommender.demo() as rec:
        for i in range(5):
            rec.recommend(f"u{i % 2}", k=3)
        rec.recommend_many(["a", "b"], k=3)
        rec.similar_items("nope", k=3)
        with pytest.raises(ValueError):
            rec.recommend("u1", k=0)  # a programmer error raises, and is still timed
        text = render(rec)
        m = parse(text)
        counters = rec.status().counters
        assert m[("edgerec_requests_total", ())] == counters["requests"] == 8
        assert m[("edgerec_cache_hits_total", ())] == counters.get("cache_hits", 0) > 0
        assert m[("edgerec_cache_hit_ratio", ())] == pytest.approx(counters["cache_hits"] / 8)
        assert m[("edgerec_request_duration_seconds_count", ())] == 8  # 5 + 1 batch + 1 similar + 1 refused
        assert m[("edgerec_request_duration_seconds_bucket", (("le", "+Inf"),))] == 8
        assert m[("edgerec_model_info", (("model_version", rec.status().model_version),))] == 1
        assert not any(name.startswith("edgerec_outbox") for name, _ in m)  # no hub, no outbox
    m = parse(render(rec))  # closed: answers degrade with a reason
    rec.recommend("u1", k=3)
    m = parse(render(rec))
    assert m[("edgerec_degraded_answers_total", (("reason", "closed"),))] == 1
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_edge_with_a_hub_reports_outbox_and_refusals(tmp_path: Path) -> None:
    app = new_hub(tmp_path / "hub")
    publish(app, bundle(tmp_path, "v1", key=b"another key"))  # signed with a key the edge does not hold
    cfg = SyncConfig(hub_url="http://127.0.0.1:1", token=EDGE, user_id_key="uid", signing_key=KEY.decode(),
                     state_dir=str(tmp_path / "edge"), smoke_in_subprocess=False)
    rec = Recommender.connect("http://127.0.0.1:1", token=EDGE, user_id_key="uid", state_dir=tmp_path / "edge",
                              sync_config=cfg, transport=httpx.WSGITransport(app=app), start=False)
    rec.poll_once()
    for i in range(4):
        rec.feedback({"user": f"u{i}", "item": "item-000001", "type": "click"})
    assert rec.flush(10.0)
    m: dict[Any, float] = parse(render(rec))
    assert m[("edgerec_outbox_delivered_events_total", ())] == 4 == app.storage.count_events()
    assert m[("edgerec_outbox_pending_events", ())] == 0
    assert m[("edgerec_outbox_dropped_events_total", (("reason", "outbox_full"),))] == 0
    assert m[("edgerec_update_refusals_total", (("reason", "signature_invalid"),))] == 1
    assert m[("edgerec_model_ready", ())] == 0
    rec.close(5.0)
    app.close()
