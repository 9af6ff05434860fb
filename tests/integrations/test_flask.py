"""The Flask extension and examples/flask_store, through Flask's own test client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgerec_sdk import ConfigError, Recommender

from .conftest import EXAMPLES

flask = pytest.importorskip("flask", reason="Flask is not installed (extra [flask])")

from edgerec_sdk.integrations.flask import EdgeRec, current_recommender  # noqa: E402


@pytest.fixture()
def store_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.syspath_prepend(str(EXAMPLES / "flask_store"))
    import storefront

    app = storefront.create_app(profile_store=f"sqlite:///{tmp_path}/profiles.sqlite3")
    app.config["TESTING"] = True
    yield app
    app.extensions["edgerec"].close()


def test_extension_is_lazy_and_lives_in_app_extensions() -> None:
    app = flask.Flask(__name__)
    app.config["EDGEREC"] = {"BUNDLE": "demo", "MAX_K": 5}
    ext = EdgeRec()
    ext.init_app(app)
    holder = app.extensions["edgerec"]
    assert holder.peek() is None  # nothing built at init_app: a --preload master forks before any request
    with app.app_context():
        rec = current_recommender()
        assert isinstance(rec, Recommender) and rec is ext.recommender and rec.config.max_k == 5
        assert len(holder.recommend("u", k=50)) == 5  # the holder forwards the request API
    ext.close(app)
    assert rec.status().closed


def test_bad_settings_fail_at_init_app() -> None:
    app = flask.Flask(__name__)
    with pytest.raises(ConfigError):
        EdgeRec(app)  # no EDGEREC at all
    app.config["EDGEREC"] = {"BUNDLE": "demo", "MAX_K": 0}
    with pytest.raises(ConfigError):
        EdgeRec(app)


def test_flask_init_app_refuses_a_missing_bundle(tmp_path: Path) -> None:
    app = flask.Flask(__name__)
    app.config["EDGEREC"] = {"BUNDLE": str(tmp_path / "no-such-bundle")}
    with pytest.raises(ConfigError, match="not a bundle directory"):
        EdgeRec(app)  # before: accepted, then 500 on every request


def test_flask_init_app_refuses_an_unusable_hub(tmp_path: Path) -> None:
    app = flask.Flask(__name__)
    hub = {"HUB_URL": "http://hub.example.com", "TOKEN": "t", "USER_ID_KEY": "k", "STATE_DIR": str(tmp_path),
           "SIGNING_KEY": "s"}
    app.config["EDGEREC"] = {"HUB": hub}
    with pytest.raises(ConfigError, match="http://"):
        EdgeRec(app)
    app.config["EDGEREC"] = {"HUB": {**hub, "HUB_URL": "https://hub.example.com", "TOKN": "typo"}}
    with pytest.raises(ConfigError, match="unknown key"):
        EdgeRec(app)


def test_home_page_recommends_and_sets_a_user_cookie(store_app: Any) -> None:
    client = store_app.test_client()
    page = client.get("/")
    assert page.status_code == 200 and b"Recommended for you" in page.data
    assert page.headers["X-Worker-Pid"].isdigit()
    assert len(re.findall(rb'href="/product/', page.data)) == 8
    assert client.get_cookie("uid") is not None


def test_product_page_shows_customers_also_viewed(store_app: Any) -> None:
    client = store_app.test_client()
    item = client.get("/api/for-you/someone").get_json()["items"][0]["id"]
    page = client.get(f"/product/{item}")
    assert page.status_code == 200 and b"Customers also viewed" in page.data
    assert len(re.findall(rb'href="/product/', page.data)) == 6
    assert client.get("/product/NO-SUCH-ITEM").status_code == 404


def test_click_personalises_the_next_page(store_app: Any) -> None:
    client = store_app.test_client()
    client.get("/")
    user = client.get_cookie("uid").value
    before = client.get(f"/api/for-you/{user}").get_json()
    assert {i["source"] for i in before["items"]} == {"popular"}
    clicked = before["items"][0]["id"]
    response = client.post("/click", data={"item": clicked, "rec_id": before["rec_id"]})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/product/{clicked}")
    after = client.get(f"/api/for-you/{user}").get_json()
    assert after["items"][0]["source"] == "personalized" and not after["degraded"]
    assert clicked not in [i["id"] for i in after["items"]]
    assert b"personalized" in client.get("/").data


def test_json_click_and_bad_events(store_app: Any) -> None:
    client = store_app.test_client()
    assert client.post("/api/click", json={"user": "u9", "item": "B004756YJA"}).status_code == 204
    assert client.get("/api/for-you/u9").get_json()["items"][0]["source"] == "personalized"
    assert client.post("/api/click", json={"user": "", "item": "B004756YJA"}).status_code == 400
    assert client.post("/api/click", json={"user": "u9"}).status_code == 400


def test_e10_ids_are_escaped_in_html(store_app: Any) -> None:
    client = store_app.test_client()
    client.set_cookie("uid", "<script>alert(1)</script>")
    page = client.get("/")
    assert page.status_code == 200 and b"<script>alert" not in page.data


def test_healthz(store_app: Any) -> None:
    body = store_app.test_client().get("/healthz").get_json()
    assert body["ready"] is True and body["model_version"]


def test_the_example_exposes_edge_metrics(store_app: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client = store_app.test_client()
    for _ in range(3):
        assert client.get("/").status_code == 200
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.get_data(as_text=True))}
    requests = families["edgerec_requests"].samples[0].value
    assert requests >= 3
    duration = {s.name: s.value for s in families["edgerec_request_duration_seconds"].samples
                if not s.labels}
    assert duration["edgerec_request_duration_seconds_count"] >= 1
    assert families["edgerec_model_ready"].samples[0].value == 1
