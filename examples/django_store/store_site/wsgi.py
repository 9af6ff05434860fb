"""WSGI entry point: ``gunicorn --preload -w 3 --chdir examples/django_store store_site.wsgi``.

With ``STORE_PRELOAD=1`` the recommender is built here, in the gunicorn master, before the workers fork: they
share its pages copy-on-write (docs/scaling.md).
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store_site.settings")
application = get_wsgi_application()

if os.environ.get("STORE_PRELOAD") == "1":
    from edgerec_sdk.integrations.django import get_holder

    get_holder().preload()
