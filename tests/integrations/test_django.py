"""The Django app and examples/django_store, through Django's own test client."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import EXAMPLES

django = pytest.importorskip("django", reason="Django is not installed (extra [django])")

STORE = EXAMPLES / "django_store"


@pytest.fixture(scope="module", autouse=True)
def _django() -> None:
    if str(STORE) not in sys.path:
        sys.path.insert(0, str(STORE))
    os.environ["DJANGO_SETTINGS_MODULE"] = "store_site.settings"
    django.setup()


@pytest.fixture()
def client() -> Any:
    from django.test import Client

    from edgerec_sdk.integrations.django import close_recommender

    yield Client()
    close_recommender()


def test_recommender_is_not_built_by_setup() -> None:
    from edgerec_sdk.integrations import django as integration

    integration.close_recommender()
    assert integration._holder is None  # django.setup() ran AppConfig.ready(): nothing built there


def test_home_page_recommends(client: Any) -> None:
    page = client.get("/")
    assert page.status_code == 200 and b"Recommended for you" in page.content
    assert len(re.findall(rb'href="/product/', page.content)) == 8
    assert b"csrfmiddlewaretoken" in page.content and "uid" in page.cookies


def test_product_page_and_404(client: Any) -> None:
    item = client.get("/api/for-you/anyone").json()["items"][0]
    page = client.get(f"/product/{item}")
    assert page.status_code == 200 and b"Customers also viewed" in page.content
    assert len(re.findall(rb'href="/product/', page.content)) == 6
    assert client.get("/product/NO-SUCH-ITEM").status_code == 404


def test_click_personalises_the_next_page(client: Any, tmp_path: Path) -> None:
    from django.test import override_settings

    with override_settings(EDGEREC={"BUNDLE": "demo", "PROFILE_STORE": f"sqlite:///{tmp_path}/p.sqlite3"}):
        client.get("/")
        user = client.cookies["uid"].value
        before = client.get(f"/api/for-you/{user}").json()
        assert set(before["sources"]) == {"popular"}
        clicked = before["items"][0]
        response = client.post("/click", {"item": clicked, "rec_id": before["rec_id"]})
        assert response.status_code == 302 and response["Location"] == f"/product/{clicked}"
        after = client.get(f"/api/for-you/{user}").json()
        assert after["sources"][0] == "personalized" and clicked not in after["items"]
        assert b"personalized" in client.get("/").content
        from edgerec_sdk.integrations.django import get_recommender

        assert get_recommender().config.profile_store.startswith("sqlite")
    from edgerec_sdk.integrations.django import get_recommender

    assert get_recommender().config.profile_store == "memory"  # override_settings undone, recommender rebuilt


def test_click_needs_csrf_and_a_valid_event() -> None:
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/click", {"item": "B004756YJA"}).status_code == 403
    assert Client().post("/click", {"item": ""}).status_code == 400
    assert Client().get("/click").status_code == 405


def test_template_tags() -> None:
    from django.template import Context, Template

    class Anonymous:
        is_authenticated = False

    class User:
        is_authenticated = True
        pk = 42

    tpl = Template("{% load edgerec %}{% recommend user k=3 as recs %}{% for r in recs %}{{ r.source }} {% endfor %}"
                   "|{% similar_items item k=2 as sim %}{% for r in sim %}{{ r.source }} {% endfor %}"
                   "|{% item_info item as info %}{{ info.title }}")
    out = tpl.render(Context({"user": Anonymous(), "item": "B004756YJA"}))
    assert out.startswith("popular popular popular |similar similar |") and len(out.split("|")[2]) > 3
    assert tpl.render(Context({"user": User(), "item": "nope"})).endswith("|popular popular |")


def test_management_commands() -> None:
    from django.core.management import call_command

    out = io.StringIO()
    call_command("edgerec_status", stdout=out)
    report = json.loads(out.getvalue())
    assert report["ready"] is True and report["n_items"] > 0 and report["profile_store"] == "memory"
    out = io.StringIO()
    call_command("edgerec_warmup", "--k", "5", stdout=out)
    assert "recommend" in out.getvalue() and "similar_items" in out.getvalue()


def test_warmup_fails_on_a_broken_store(tmp_path: Path) -> None:
    from django.core.management import CommandError, call_command
    from django.test import override_settings

    (tmp_path / "file").write_text("x")
    with override_settings(EDGEREC={"BUNDLE": "demo", "PROFILE_STORE": f"sqlite:///{tmp_path}/file/p.db"}), \
            pytest.raises(CommandError, match="cannot build"):
        call_command("edgerec_warmup", stdout=io.StringIO())


@pytest.mark.parametrize(("settings", "environ", "ids"), [
    ({"BUNDLE": "demo"}, {}, []),
    (None, {}, ["edgerec.E001"]),
    ({"BUNDLE": "demo", "MAX_K": -1}, {}, ["edgerec.E001"]),
    ({"BUNDLE": "/no/such/bundle"}, {}, ["edgerec.E002"]),
    ({"BUNDLE": "demo"}, {"WEB_CONCURRENCY": "3"}, ["edgerec.W001"]),
    ({"BUNDLE": "demo"}, {"GUNICORN_CMD_ARGS": "--workers=4 -k gevent"}, ["edgerec.W001", "edgerec.W002"]),
    ({"BUNDLE": "demo", "PROFILE_STORE": "sqlite:////tmp/x.db"}, {"GUNICORN_CMD_ARGS": "-w 4"}, []),
    ({"BUNDLE": "demo", "INDEX": {"intra_op_threads": 64}}, {}, ["edgerec.W003"]),
])
def test_system_checks(settings: Any, environ: dict[str, str], ids: list[str]) -> None:
    from edgerec_sdk.integrations.django.checks import collect_messages

    assert [m.id for m in collect_messages(settings, environ)] == ids


def test_manage_py_check_validates_the_hub_mapping(tmp_path: Path) -> None:
    from edgerec_sdk.integrations.django.checks import collect_messages

    hub = {"HUB_URL": "https://hub.example.com", "TOKEN": "t", "USER_ID_KEY": "k", "STATE_DIR": str(tmp_path),
           "SIGNING_KEY": "s"}
    assert collect_messages({"HUB": hub}, {}) == []
    insecure = collect_messages({"HUB": {**hub, "HUB_URL": "http://hub.example.com"}}, {})
    assert [m.id for m in insecure] == ["edgerec.E003"] and "http://" in insecure[0].msg  # before: passed
    assert [m.id for m in collect_messages({"HUB": {**hub, "TOKEN": ""}}, {})] == ["edgerec.E003"]
    unsigned = {k: v for k, v in hub.items() if k != "SIGNING_KEY"}
    assert [m.id for m in collect_messages({"HUB": unsigned}, {})] == ["edgerec.E003"]


def test_warmup_waits_a_bounded_time_for_the_first_hub_bundle(tmp_path: Path) -> None:
    from django.core.management import CommandError, call_command
    from django.test import override_settings
    from sync.helpers import ADMIN, EDGE, KEY, bundle, publish

    from edgerec_sdk.hub import HubApp, serve_in_thread
    from edgerec_sdk.integrations.django import close_recommender

    app = HubApp(tmp_path / "hub", admin_tokens=[ADMIN], edge_tokens=[EDGE])
    with serve_in_thread(app) as hub:
        settings = {"HUB": {"HUB_URL": hub.url, "TOKEN": EDGE, "USER_ID_KEY": "k", "SIGNING_KEY": KEY.decode(),
                            "STATE_DIR": str(tmp_path / "edge")}}
        with override_settings(EDGEREC=settings):
            close_recommender()
            with pytest.raises(CommandError, match=r"no bundle after waiting 0\.5 s"):
                call_command("edgerec_warmup", "--wait", "0.5", stdout=io.StringIO())  # nothing published
            close_recommender()
            publish(app, bundle(tmp_path, "v1"))
            out = io.StringIO()
            call_command("edgerec_warmup", "--wait", "60", stdout=out)  # before: failed at once, no bundle yet
            assert "model v1" in out.getvalue()
            close_recommender()
    app.close()


def test_system_check_w005_unwritable_sqlite_dir(tmp_path: Path) -> None:
    from edgerec_sdk.integrations.django.checks import collect_messages

    (tmp_path / "file").write_text("x")
    bad = {"BUNDLE": "demo", "PROFILE_STORE": f"sqlite:///{tmp_path}/file/sub/p.db"}
    good = {"BUNDLE": "demo", "PROFILE_STORE": f"sqlite:///{tmp_path}/new/sub/p.db"}
    assert [m.id for m in collect_messages(bad, {})] == ["edgerec.W005"]
    assert collect_messages(good, {}) == []


def test_manage_py_check_passes() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "GUNICORN_CMD_ARGS")}
    env["DJANGO_SETTINGS_MODULE"] = "store_site.settings"
    out = subprocess.run([sys.executable, "manage.py", "check", "--fail-level", "WARNING"], cwd=STORE, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no issues" in out.stdout


def test_the_example_exposes_edge_metrics(client: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    assert client.get("/").status_code == 200
    r = client.get("/metrics")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.content.decode())}
    assert families["edgerec_requests"].samples[0].value >= 1
    assert families["edgerec_model_ready"].samples[0].value == 1
