"""Settings of the example store: no database, the demo bundle, a profile store from the environment."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# An example: in production the key comes from the environment and DEBUG stays off.
SECRET_KEY = os.environ.get("STORE_SECRET_KEY", "example-only-not-secret-" + "x" * 40)
DEBUG = os.environ.get("STORE_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "edgerec_sdk.integrations.django",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "shop.views.worker_pid_header",
]

ROOT_URLCONF = "store_site.urls"
WSGI_APPLICATION = "store_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                           "django.template.context_processors.csrf"]},
    },
]

DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# Follow a hub when STORE_HUB_URL is set (secrets from the environment), else serve a local bundle.
_HUB = {
    "hub_url": os.environ.get("STORE_HUB_URL", ""),
    "token": os.environ.get("STORE_HUB_TOKEN", ""),
    "user_id_key": os.environ.get("STORE_USER_ID_KEY", ""),
    "state_dir": os.environ.get("STORE_STATE_DIR", ""),
    "signing_key": os.environ.get("STORE_SIGNING_KEY"),
    "allow_unsigned_bundles": os.environ.get("STORE_ALLOW_UNSIGNED") == "1",
}
EDGEREC = {
    **({"HUB": _HUB} if _HUB["hub_url"] else {"BUNDLE": os.environ.get("STORE_BUNDLE", "demo")}),
    "PROFILE_STORE": os.environ.get("STORE_PROFILE_STORE", "memory"),
    "MAX_K": 50,
}
