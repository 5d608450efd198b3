#!/usr/bin/env python
"""The relay in Django: speech in over HTTP, the avatar's frames and the audio out to the browser, live.

    AVATARSDK_LOCAL=1 python samples/django_relay/manage.py runserver 127.0.0.1:8000 --noreload
    python samples/django_relay/manage.py runserver 127.0.0.1:8000 --local    # the same (--local sets it)
    python samples/django_relay/manage.py runserver 127.0.0.1:8000            # real service: set
        AVATARSDK_API_KEY, AVATARSDK_APP_ID, AVATARSDK_AVATAR_ID, AVATARSDK_CONSOLE_URL, AVATARSDK_INGRESS_URL
        (or AVATARSDK_REGION, or --region us-west, instead of the two URLs)

then open http://127.0.0.1:8000/ and press Speak. The app ``relay`` creates one SessionPool in
``RelayConfig.ready()`` (relay/apps.py); its views (relay/views.py) answer ``POST /speak`` with a
``StreamingHttpResponse`` of Server-Sent Events, one per frame as it arrives (../relay_common/relaying.py:
the format, and the part shared with samples/flask_relay). runserver is threaded, so requests share the pool;
for production any threaded WSGI server serves relay_site.wsgi (gunicorn ``gthread``, mod_wsgi, waitress), and
an ASGI server relay_site.asgi (``uvicorn --app-dir samples/django_relay relay_site.asgi:application``): the
view is async and streams under both (docs/DEPLOYMENT.md has the commands).

Access (../relay_common/guard.py): against the real service set RELAY_TOKEN (clients send ``Authorization:
Bearer <token>``); without it only loopback clients are served and runserver refuses a non-loopback address.
RELAY_MAX_STREAMS_PER_CLIENT (2) caps each client address's concurrent streams (429 past it).

Settings from the environment: RELAY_MAX_SIZE (the pool's max_size, 4), RELAY_MIN_IDLE (0; each
session kept idle is billed around the clock, 600 credits an hour),
DJANGO_DEBUG=1, DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS (comma-separated, beside the loopback names).
"""

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import List, Optional


def stop(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt  # SIGTERM stops runserver as Ctrl-C does: it exits 0 and the pool is closed at exit


def open_bind_refusal(args: List[str]) -> Optional[str]:
    """Why ``runserver`` must not listen where ``args`` say (``None``: it may): the real service on a
    non-loopback address without RELAY_TOKEN (../relay_common/guard.py)."""
    if args[:1] != ["runserver"]:
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "relay_common"))
    from guard import Guard, refuse_open_bind  # noqa: PLC0415 - samples/relay_common, on the path just now

    addresses = [arg for arg in args[1:] if not arg.startswith("-")]
    address = addresses[0] if addresses else "127.0.0.1:8000"
    host = address.rsplit(":", 1)[0] if ":" in address and not address.isdigit() else "127.0.0.1"
    local = os.environ.get("AVATARSDK_LOCAL") == "1"
    return refuse_open_bind(host or "127.0.0.1", local, Guard(local=local, token=os.environ.get("RELAY_TOKEN")))


def main() -> None:
    if "--local" in sys.argv[2:]:  # the samples' switch for the built-in stand-in; not a Django option
        sys.argv.remove("--local")
        os.environ["AVATARSDK_LOCAL"] = "1"
    if "--region" in sys.argv[2:-1]:  # the samples' region flag, likewise (sets AVATARSDK_REGION)
        at = sys.argv.index("--region", 2)
        os.environ["AVATARSDK_REGION"] = sys.argv[at + 1]
        del sys.argv[at : at + 2]
    refusal = open_bind_refusal(sys.argv[1:])
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        sys.exit(2)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relay_site.settings")
    signal.signal(signal.SIGTERM, stop)
    from django.core.management import execute_from_command_line  # noqa: PLC0415 - after the settings variable

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
