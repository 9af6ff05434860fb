"""Views of the example store. The template tags do the recommending on the pages; the click view and the
JSON view call the per-process recommender directly."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from edgerec_sdk import EventError
from edgerec_sdk.integrations.django import get_recommender

USER_COOKIE = "uid"


def _user(request: HttpRequest) -> str:
    return request.COOKIES.get(USER_COOKIE) or uuid.uuid4().hex


def _with_user(response: HttpResponse, user: str) -> HttpResponse:
    response.set_cookie(USER_COOKIE, user, httponly=True, samesite="Lax")
    return response


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    return _with_user(render(request, "shop/home.html", {"uid": user}), user)


@require_GET
def product(request: HttpRequest, item_id: str) -> HttpResponse:
    info = get_recommender().items.get(item_id)
    if info is None:
        raise Http404("no such item")
    return render(request, "shop/product.html", {"item_id": item_id, "info": info})


@require_POST
def click(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    item = request.POST.get("item", "")
    event = {"user": user, "item": item, "type": "click"}
    if request.POST.get("rec_id"):
        event["rec_id"] = request.POST["rec_id"]
    try:
        get_recommender().feedback(event)
    except EventError as exc:
        return HttpResponseBadRequest(str(exc))
    return _with_user(redirect("product", item_id=item), user)


@require_GET
def api_for_you(request: HttpRequest, user: str) -> JsonResponse:
    recs = get_recommender().recommend(user, k=8)
    return JsonResponse({"items": recs.item_ids, "sources": [r.source for r in recs], "rec_id": recs.rec_id,
                         "degraded": recs.degraded, "degraded_reason": recs.degraded_reason})


@require_GET
def api_similar(request: HttpRequest, item_id: str) -> JsonResponse:
    recs = get_recommender().similar_items(item_id, k=6)
    return JsonResponse({"items": recs.item_ids, "rec_id": recs.rec_id, "degraded": recs.degraded})


@csrf_exempt  # a JSON API for scripts, no cookie session: a cross-site form cannot send its body
@require_POST
def api_click(request: HttpRequest) -> HttpResponse:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return HttpResponseBadRequest("body must be JSON")
    event = {"user": str(body.get("user", "")), "item": str(body.get("item", "")), "type": "click"}
    try:
        get_recommender().feedback(event)
    except EventError as exc:
        return HttpResponseBadRequest(str(exc))
    return HttpResponse(status=204)


def worker_pid_header(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Middleware: every response says which worker process served it (``X-Worker-Pid``)."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response["X-Worker-Pid"] = str(os.getpid())
        return response

    return middleware
