"""The hub's ``/metrics``: parsed with prometheus-client's own parser; counters equal what was sent."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from sync.helpers import ADMIN, EDGE, bundle, publish

from edgerec_sdk.hub import HubApp
from edgerec_sdk.hub.metrics import route_of
from edgerec_sdk.sync import protocol


def scrape(app: HubApp) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://hub") as c:
        r = c.get("/metrics")  # no token: scraped like /healthz
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(r.text) for s in f.samples}


def test_metrics_count_what_the_hub_did(tmp_path: Path, hub_db: str | None) -> None:
    app = HubApp(tmp_path / "hub", admin_tokens=[ADMIN], edge_tokens=[EDGE], db=hub_db)
    publish(app, bundle(tmp_path, "v1"))
    edge = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://hub",
                        headers={"Authorization": f"Bearer {EDGE}"})
    sent = 0
    for b in range(3):
        events = [orjson.dumps({"event_id": f"e{b}-{i}", "user": "u" * 32, "item": "it", "type": "click",
                                "model_version": "v1"}) for i in range(40)]
        body, headers = protocol.encode_batch(edge_id=f"edge-{b % 2}", batch_id=f"b{b}", events=events)
        assert edge.post("/v1/events", content=body, headers=headers).status_code == 200
        sent += len(events)
    body, headers = protocol.encode_batch(edge_id="edge-0", batch_id="again", events=[
        orjson.dumps({"event_id": "e0-0", "user": "u" * 32, "item": "it", "type": "click"}),
        orjson.dumps({"event_id": "bad", "user": "u" * 32, "item": "it", "type": "no-such-type"})])
    assert edge.post("/v1/events", content=body, headers=headers).status_code == 200
    assert edge.post("/v1/events", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    manifest = edge.get("/v1/channels/stable/manifest")
    name = sorted(orjson.loads(manifest.content)["files"])[0]
    got = edge.get(f"/v1/bundles/v1/{name}")
    assert got.status_code == 200
    edge.close()
    m = scrape(app)
    assert m[("edgerec_hub_events_ingested_total", ())] == sent == app.storage.count_events()
    assert m[("edgerec_hub_events_duplicate_total", ())] == 1
    assert sum(v for (n, _), v in m.items() if n == "edgerec_hub_events_refused_total") == 1
    assert m[("edgerec_hub_batches_refused_total", (("reason", "bad_batch"),))] == 1
    assert m[("edgerec_hub_batch_events_count", ())] == 4 and m[("edgerec_hub_batch_events_sum", ())] == sent + 2
    assert m[("edgerec_hub_requests_total", (("code", "200"), ("route", "events")))] == 4
    assert m[("edgerec_hub_request_duration_seconds_count", (("route", "events"),))] == 5
    assert m[("edgerec_hub_bundle_downloads_total", ())] == 1
    assert m[("edgerec_hub_bundle_sent_bytes_total", ())] == len(got.content) > 0
    assert m[("edgerec_hub_edges", (("model_version", "v1"),))] == 2
    app.close()


def test_routes_are_a_bounded_label() -> None:
    assert route_of("GET", "/v1/bundles/v9/items.int8.npy") == "bundle_file"
    assert route_of("GET", "/v1/channels/any-name/manifest") == "manifest"
    assert route_of("PUT", "/v1/channels/any-name") == "channel_set"
    assert route_of("GET", "/v1/whatever/x/y/z") == route_of("GET", "/favicon.ico") == "other"


def test_metrics_off(tmp_path: Path) -> None:
    app = HubApp(tmp_path / "hub", admin_tokens=[ADMIN], metrics=False)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://hub") as c:
        assert c.get("/metrics").status_code == 404
    assert app.metrics is None
    app.close()

