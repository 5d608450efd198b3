"""Settings of the relay sample: one app (relay), no database, no sessions, auth or static files."""

import os
import secrets
import sys
from pathlib import Path

# The part shared with samples/flask_relay: relaying.py and the page.
COMMON = Path(__file__).resolve().parent.parent.parent / "relay_common"
sys.path.insert(0, str(COMMON))

# Nothing here signs cookies or tokens; set DJANGO_SECRET_KEY when you add something that does.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"] + [
    host for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if host
]

INSTALLED_APPS = ["relay.apps.RelayConfig"]
# No GZipMiddleware: compressing an event stream holds events back in the compressor.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "relay_site.urls"
WSGI_APPLICATION = "relay_site.wsgi.application"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [COMMON / "templates"]}]
DATABASES: dict = {}  # type: ignore[type-arg]
USE_TZ = True

# Uploads of audio: up to 32 MiB, kept in memory (relaying.MAX_UPLOAD).
DATA_UPLOAD_MAX_MEMORY_SIZE = FILE_UPLOAD_MAX_MEMORY_SIZE = 32 * 1024 * 1024

# The pool (relay/apps.py); AVATARSDK_LOCAL=1 runs it against the built-in stand-in.
RELAY_MAX_SIZE = int(os.environ.get("RELAY_MAX_SIZE", "4"))
RELAY_MIN_IDLE = int(os.environ.get("RELAY_MIN_IDLE", "0"))  # each: 600 credits an hour, around the clock

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "relay": {"handlers": ["console"], "level": "INFO"},
        "avatarsdk": {"handlers": ["console"], "level": "WARNING"},
    },
}
