"""The ASGI application, for an ASGI server (uvicorn, Daphne, Hypercorn):

    uvicorn --app-dir samples/django_relay relay_site.asgi:application --host 127.0.0.1 --port 8000

``POST /speak`` streams frame by frame under ASGI too: its view is async and its body an async iterator
(relay/views.py), so Django neither buffers it nor warns about synchronous iterators.
"""

import os

import django
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse, JsonResponse

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relay_site.settings")
django.setup(set_prefix=False)

from guard import error_body, http_code  # noqa: E402 - samples/relay_common, on sys.path once the settings are read


class RelayHandler(ASGIHandler):
    """Django's ASGI handler, answering a body over DATA_UPLOAD_MAX_MEMORY_SIZE (which it refuses before any
    view or middleware runs) with the relays' JSON error shape rather than plain text."""

    def create_request(self, scope, body_file):  # type: ignore[no-untyped-def]
        request, response = super().create_request(scope, body_file)
        if isinstance(response, HttpResponse) and response.status_code == 413:
            response = JsonResponse(error_body(http_code(413), "the request body is too large"), status=413)
        return request, response


application = RelayHandler()
