"""A small Flask storefront over the demo bundle: "recommended for you", "customers also viewed", clicks.

Run it (one process)::

    flask --app examples/flask_store/storefront:create_app run

or with three gunicorn workers sharing one profile store, so a click taken by one worker personalises the page
the next worker serves::

    gunicorn --preload -w 3 --chdir examples/flask_store \
        'storefront:create_app(profile_store="sqlite:////tmp/flask_store/profiles.sqlite3")'

To follow a hub instead of the demo bundle, set ``STORE_HUB_URL``, ``STORE_HUB_TOKEN``, ``STORE_USER_ID_KEY``,
``STORE_STATE_DIR`` and ``STORE_SIGNING_KEY`` (or ``STORE_ALLOW_UNSIGNED=1`` in development).

Pages: ``/`` (recommended for you), ``/product/<item_id>`` (customers also viewed), ``POST /click``. JSON for
scripts: ``/api/for-you/<user>``, ``/api/similar/<item_id>``, ``POST /api/click``, ``/healthz``. Every response
carries ``X-Worker-Pid`` so you can see which worker served it.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from flask import Flask, abort, jsonify, redirect, render_template, request, url_for

from edgerec_sdk import EventError
from edgerec_sdk.integrations.flask import EdgeRec, current_recommender, metrics_response

USER_COOKIE = "uid"


def create_app(*, bundle: str = "demo", profile_store: str | None = None, **edgerec: Any) -> Flask:
    """Build the app. ``profile_store`` defaults to ``$STORE_PROFILE_STORE`` or ``"memory"``."""
    app = Flask(__name__)
    hub = hub_from_environment()
    app.config["EDGEREC"] = {
        **({"HUB": hub} if hub else {"BUNDLE": bundle}),
        "PROFILE_STORE": profile_store or os.environ.get("STORE_PROFILE_STORE", "memory"),
        **edgerec,
    }
    EdgeRec(app)

    @app.after_request
    def tag_worker(response: Any) -> Any:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    @app.get("/")
    def home() -> Any:
        user = request.cookies.get(USER_COOKIE) or uuid.uuid4().hex
        recs = current_recommender().recommend(user, k=8)
        response = app.make_response(render_template("home.html", recs=rows(recs), rec_id=recs.rec_id))
        response.set_cookie(USER_COOKIE, user, httponly=True, samesite="Lax")
        return response

    @app.get("/product/<item_id>")
    def product(item_id: str) -> Any:
        rec = current_recommender()
        info = rec.items.get(item_id)
        if info is None:
            abort(404)
        also = rec.similar_items(item_id, k=6)
        return render_template("product.html", item_id=item_id, info=info, also=rows(also), rec_id=also.rec_id)

    @app.post("/click")
    def click() -> Any:
        user = request.cookies.get(USER_COOKIE) or uuid.uuid4().hex
        item = request.form.get("item", "")
        send_click(user, item, request.form.get("rec_id"))
        response = redirect(url_for("product", item_id=item))
        response.set_cookie(USER_COOKIE, user, httponly=True, samesite="Lax")
        return response

    @app.get("/api/for-you/<user>")
    def api_for_you(user: str) -> Any:
        k = request.args.get("k", default=8, type=int)
        return jsonify(as_json(current_recommender().recommend(user, k=max(1, min(k, 50)))))

    @app.get("/api/similar/<item_id>")
    def api_similar(item_id: str) -> Any:
        k = request.args.get("k", default=6, type=int)
        return jsonify(as_json(current_recommender().similar_items(item_id, k=max(1, min(k, 50)))))

    @app.post("/api/click")
    def api_click() -> Any:
        body = request.get_json(silent=True) or {}
        send_click(str(body.get("user", "")), str(body.get("item", "")), body.get("rec_id"))
        return "", 204

    @app.get("/healthz")
    def healthz() -> Any:
        status = current_recommender().status()
        return jsonify(ready=status.ready, model_version=status.model_version, pid=os.getpid()), (
            200 if status.ready else 503)

    # Prometheus scrapes each worker's edge metrics here (requests, degraded answers, latency, outbox, model)
    app.add_url_rule("/metrics", "metrics", metrics_response)
    return app


def hub_from_environment() -> dict[str, Any] | None:
    """``EDGEREC["HUB"]`` from ``STORE_HUB_*`` variables (secrets stay out of code), or ``None``."""
    env = os.environ
    if not env.get("STORE_HUB_URL"):
        return None
    return {"hub_url": env["STORE_HUB_URL"], "token": env["STORE_HUB_TOKEN"], "user_id_key": env["STORE_USER_ID_KEY"],
            "state_dir": env["STORE_STATE_DIR"], "signing_key": env.get("STORE_SIGNING_KEY"),
            "allow_unsigned_bundles": env.get("STORE_ALLOW_UNSIGNED") == "1"}


def send_click(user: str, item: str, rec_id: Any) -> None:
    event = {"user": user, "item": item, "type": "click"}
    if isinstance(rec_id, str) and rec_id:
        event["rec_id"] = rec_id
    try:
        current_recommender().feedback(event)
    except EventError as exc:
        abort(400, description=str(exc))


def rows(recs: Any) -> list[dict[str, Any]]:
    catalog = current_recommender().items
    return [{"id": r.item_id, "title": (catalog.get(r.item_id) or {}).get("title", r.item_id),
             "score": round(r.score, 4), "source": r.source} for r in recs]


def as_json(recs: Any) -> dict[str, Any]:
    return {"items": rows(recs), "rec_id": recs.rec_id, "model_version": recs.model_version,
            "degraded": recs.degraded, "degraded_reason": recs.degraded_reason, "pid": os.getpid()}
