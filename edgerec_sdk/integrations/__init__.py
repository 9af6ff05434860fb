"""Framework integrations: a Django app and a Flask extension.

Both read the same settings mapping (Django ``settings.EDGEREC``, Flask ``app.config["EDGEREC"]``) and hold
one :class:`~edgerec_sdk.Recommender` per worker process, created on first use, so a gunicorn ``--preload``
master never builds one that its workers would inherit. Neither Django nor Flask is imported until the
integration itself is used; ``import edgerec_sdk`` never imports them.

Settings (keys are case-insensitive; upper case is the convention):

``BUNDLE``
    a bundle directory, or ``"demo"`` for the small demo bundle shipped inside the package.
``SIGNING_KEY``
    the HMAC key the bundle was signed with (``str`` or ``bytes``); checked when set.
``HUB``
    reserved for the hub connection: a mapping of hub settings (``HUB_URL``, ``TOKEN``, ``USER_ID_KEY``,
    ``SIGNING_KEY``, ``CHANNEL``, ``STATE_DIR`` …) passed to ``Recommender.connect`` once that API is available
    in the installed version; until then setting it is a ``ConfigError``.
``PROFILE_STORE`` and every other :class:`~edgerec_sdk.RecommenderConfig` field
    (``STRICT``, ``MAX_K``, ``CACHE_SIZE``, ``FALLBACK_ITEMS``, ``INDEX``: {...}, ``PROFILE``: {...}),
    given to :meth:`RecommenderConfig.from_mapping <edgerec_sdk.RecommenderConfig.from_mapping>`.

Example:
    >>> from edgerec_sdk.integrations import parse_settings
    >>> parse_settings({"BUNDLE": "demo", "PROFILE_STORE": "memory", "MAX_K": 50}).config.max_k
    50
"""

from __future__ import annotations

from ._common import ProcessLocalRecommender, Settings, create_recommender, parse_settings

__all__ = ["ProcessLocalRecommender", "Settings", "create_recommender", "parse_settings"]
