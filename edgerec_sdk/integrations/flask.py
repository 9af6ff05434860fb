"""Flask extension: ``EdgeRec(app)`` or ``EdgeRec().init_app(app)``.

Reads ``app.config["EDGEREC"]`` (the same keys as Django's ``settings.EDGEREC``, see
:mod:`edgerec_sdk.integrations`), validates it at ``init_app`` time, and puts a per-process recommender holder
at ``app.extensions["edgerec"]``. The :class:`~edgerec_sdk.Recommender` itself is built on the first request of
each worker process (after a gunicorn ``--preload`` fork), and closed with a bounded flush at process exit or
by :meth:`EdgeRec.close`.

Example:
    >>> from flask import Flask  # doctest: +SKIP
    >>> app = Flask(__name__)  # doctest: +SKIP
    >>> app.config["EDGEREC"] = {"BUNDLE": "demo", "PROFILE_STORE": "sqlite:////var/lib/shop/profiles.sqlite3"}  # doctest: +SKIP
    >>> edgerec = EdgeRec(app)  # doctest: +SKIP
    >>> @app.get("/for-you/<user>")  # doctest: +SKIP
    ... def for_you(user):
    ...     return {"items": edgerec.recommender.recommend(user, k=8).item_ids}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import metrics
from .._impl.optional import require
from ..recommender import Recommender
from ._common import ProcessLocalRecommender, check_settings, create_recommender, parse_settings

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["EdgeRec", "current_recommender", "metrics_response"]

EXTENSION_KEY = "edgerec"


class EdgeRec:
    """The Flask extension.

    Args:
        app: the application to set up now; or call :meth:`init_app` later (application factories).
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Validate ``app.config["EDGEREC"]`` and register the holder at ``app.extensions["edgerec"]``.

        Raises:
            ConfigError: the settings are missing or invalid, ``BUNDLE`` is not a bundle directory, or ``HUB``
                lacks what the edge needs (at startup, never on a request).
        """
        require("flask", extra="flask")
        settings = parse_settings(app.config.get("EDGEREC"))
        check_settings(settings)
        holder = ProcessLocalRecommender(lambda: create_recommender(settings))
        app.extensions[EXTENSION_KEY] = holder
        if settings.preload:  # opt-in: build before the fork so the workers share it copy-on-write
            holder.preload()

    @property
    def recommender(self) -> Recommender:
        """The recommender of the current application (``current_app``, or the app given to the constructor)."""
        flask = require("flask", extra="flask")
        app = flask.current_app if flask.has_app_context() else self._app
        if app is None:
            raise RuntimeError("EdgeRec.recommender needs an application context or EdgeRec(app)")
        return _holder(app).recommender

    def close(self, app: Flask | None = None) -> None:
        """Close the recommender of ``app`` (default: the current one) in this process, flushing with a deadline."""
        flask = require("flask", extra="flask")
        target = app or (flask.current_app if flask.has_app_context() else self._app)
        if target is not None:
            _holder(target).close()


def metrics_response() -> Any:
    """A Flask response with this process's edge metrics (Prometheus text format, :mod:`edgerec_sdk.metrics`).

    Example: ``app.add_url_rule("/metrics", "metrics", metrics_response)``; keep it off the public internet.
    """
    flask = require("flask", extra="flask")
    return flask.Response(metrics.render(current_recommender()), content_type=metrics.CONTENT_TYPE)


def current_recommender() -> Recommender:
    """The recommender of ``flask.current_app`` in this process (built on first use)."""
    flask = require("flask", extra="flask")
    return _holder(flask.current_app).recommender


def _holder(app: Flask) -> ProcessLocalRecommender:
    try:
        holder: ProcessLocalRecommender = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError("edgerec is not set up on this app: call EdgeRec(app) or init_app(app)") from None
    return holder
