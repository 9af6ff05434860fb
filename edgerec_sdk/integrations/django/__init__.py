"""Django app: add ``"edgerec_sdk.integrations.django"`` to ``INSTALLED_APPS`` and set ``EDGEREC``.

``settings.EDGEREC`` takes the keys described in :mod:`edgerec_sdk.integrations` (``BUNDLE``, ``PROFILE_STORE``,
``SIGNING_KEY``, any :class:`~edgerec_sdk.RecommenderConfig` field). The app gives you:

* :func:`get_recommender`: this process's :class:`~edgerec_sdk.Recommender`, built on first use (after a
  gunicorn ``--preload`` fork, never in ``AppConfig.ready()``) and rebuilt when ``EDGEREC`` changes in tests
  (``override_settings``);
* template tags: ``{% load edgerec %}``, ``{% recommend user k=8 as recs %}``, ``{% similar_items item_id k=6 as also %}``;
* management commands ``edgerec_status`` and ``edgerec_warmup``;
* :func:`metrics_view`: this process's edge metrics for Prometheus (``path("metrics", metrics_view)``);
* system checks ``edgerec.E001`` to ``E002`` and ``edgerec.W001`` to ``W005`` (``manage.py check``).

Example:
    >>> from edgerec_sdk.integrations.django import get_recommender  # doctest: +SKIP
    >>> def product(request, item_id):  # doctest: +SKIP
    ...     also_viewed = get_recommender().similar_items(item_id, k=6)
"""

from __future__ import annotations

import threading

from ... import metrics
from ...recommender import Recommender
from .._common import ProcessLocalRecommender, create_recommender, parse_settings

__all__ = ["close_recommender", "get_recommender", "metrics_view"]

_lock = threading.Lock()
_holder: ProcessLocalRecommender | None = None


def _settings_mapping() -> object:
    from django.conf import settings

    return getattr(settings, "EDGEREC", None)


def get_holder() -> ProcessLocalRecommender:
    """The process-wide holder, built from ``settings.EDGEREC`` on first call."""
    global _holder
    holder = _holder
    if holder is not None:
        return holder
    with _lock:
        if _holder is None:
            settings = parse_settings(_settings_mapping())
            _holder = ProcessLocalRecommender(lambda: create_recommender(settings))
        return _holder


def get_recommender() -> Recommender:
    """This process's recommender, built on first use from ``settings.EDGEREC``.

    Raises:
        ConfigError: ``EDGEREC`` is missing or invalid.
        ModelFormatError, ModelIntegrityError, ModelLoadError: the bundle cannot be served (``manage.py check``
            and ``manage.py edgerec_warmup`` find these before traffic does).
    """
    return get_holder().recommender


def close_recommender() -> None:
    """Close this process's recommender and forget the settings; the next call rebuilds both."""
    global _holder
    with _lock:
        holder, _holder = _holder, None
    if holder is not None:
        holder.close()


def metrics_view(request: object) -> object:
    """A Django view answering this process's edge metrics (Prometheus text format); keep it off the internet."""
    from django.http import HttpResponse

    return HttpResponse(metrics.render(get_recommender()), content_type=metrics.CONTENT_TYPE)
