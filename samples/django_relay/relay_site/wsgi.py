"""The WSGI application, for a threaded server (gunicorn ``gthread``, mod_wsgi, waitress; relay_site/asgi.py for
ASGI servers)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relay_site.settings")
application = get_wsgi_application()
