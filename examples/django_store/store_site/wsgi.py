"""WSGI entry point: ``gunicorn --preload -w 3 --chdir examples/django_store store_site.wsgi``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store_site.settings")
application = get_wsgi_application()
