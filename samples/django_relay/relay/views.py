"""The relay's views: the page, the event stream of an utterance's frames, the pool's counts.

``speak`` is an async view, so one view serves both interfaces without blocking either: under ASGI
(relay_site/asgi.py, e.g. uvicorn) its body is an async iterator whose blocking parts (borrowing a session,
sending the audio, waiting for each frame) run on the stream's own worker thread
(``avatarsdk.ThreadedIterator``), and Django streams it frame by frame; under WSGI (runserver, gunicorn
``gthread``) its body is the plain iterator, read by the request's thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Iterable, Optional, Tuple, Union, cast

from django.apps import apps
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from guard import Guarded, Rejected, check_content_type, error_body, http_code  # samples/relay_common
from relaying import BadAudio, EventStream, pool_stats, stand_in_record, utterance

from avatarsdk import AvatarSDKError, PoolTimeoutError, ThreadedIterator, is_wav

from .apps import RelayConfig

logger = logging.getLogger(__name__)


def relay() -> RelayConfig:
    config = cast(RelayConfig, apps.get_app_config("relay"))
    if config.pool is None:
        raise RuntimeError("the relay's pool was not made (see RelayConfig.ready)")
    return config


def rejection(status: int, code: str, message: str) -> JsonResponse:
    """Every rejection's JSON shape (../relay_common/guard.py)."""
    return JsonResponse(error_body(code, message), status=status)


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "index.html")


async def speak(request: HttpRequest) -> HttpResponse:
    """The utterance in the body (WAV, raw PCM s16le mono 16 kHz with ``Content-Type:
    application/octet-stream``, a form's ``audio`` file, or nothing for the bundled clip); the answer streams
    its frames as Server-Sent Events (see samples/relay_common/relaying.py)."""
    if request.method not in ("GET", "POST"):
        return rejection(405, http_code(405), f"{request.method} is not allowed: GET or POST")
    began = time.monotonic()
    config = relay()
    client = str(request.META.get("REMOTE_ADDR") or "unknown")
    try:
        config.guard.check(request.headers.get("Authorization"), client)
        leave = config.guard.enter(client)
    except Rejected as exc:
        return rejection(exc.status, exc.code, str(exc))
    try:
        return await open_stream(request, config, began, leave)
    except BaseException:
        leave()
        raise


# An endpoint for the app's clients, which send no cookies (they authenticate with RELAY_TOKEN, or the app's
# own check): Django's CSRF check does not apply. Set as an attribute: Django 4.2's decorators take no async view.
speak.csrf_exempt = True  # type: ignore[attr-defined]


def read_audio(request: HttpRequest, clip: bytes) -> Tuple[bytes, str]:
    """The request's audio (blocking: reads and decodes the body; run on a thread)."""
    try:
        if request.content_type == "multipart/form-data":
            file = request.FILES.get("audio")
            if file is None:
                raise BadAudio("a form upload needs a file field named 'audio'")
            return utterance(b"", (file.name or "upload", file.read()), clip)
        body = request.body
    except RequestDataTooBig as exc:
        raise Rejected(413, http_code(413), str(exc)) from exc
    check_content_type(request.content_type, body, is_wav(body))
    return utterance(body, None, clip)


async def open_stream(
    request: HttpRequest, config: RelayConfig, began: float, leave: Callable[[], None]
) -> HttpResponse:
    assert config.pool is not None
    pool = config.pool
    body: Union[Iterable[bytes], ThreadedIterator[bytes]]
    try:
        pcm, source = await asyncio.to_thread(read_audio, request, config.clip)

        def opened() -> Guarded:  # borrows a session and sends the audio
            return Guarded(EventStream.open(pool, pcm, source, began), leave)

        if isinstance(request, ASGIRequest):
            body = await ThreadedIterator.open(opened)
        else:
            body = await asyncio.to_thread(opened)
    except Rejected as exc:
        leave()
        return rejection(exc.status, exc.code, str(exc))
    except BadAudio as exc:
        leave()
        return rejection(exc.status, "bad_audio", str(exc))
    except PoolTimeoutError as exc:
        leave()
        busy = rejection(503, "busy", str(exc))
        busy["Retry-After"] = "1"
        return busy
    except AvatarSDKError as exc:
        leave()
        logger.warning("cannot start a session: %s", exc)
        return rejection(502, exc.code.value, str(exc))
    # The server closes the response when it ends or the client goes away; Django passes that on to the
    # body's close(), which gives the session back (interrupting the request if frames were to come).
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@require_GET
def stats(request: HttpRequest) -> HttpResponse:
    config = relay()
    assert config.pool is not None
    return JsonResponse(pool_stats(config.pool, config.service))


@require_GET
def debug_request(request: HttpRequest, req_id: str) -> HttpResponse:
    """What the built-in stand-in received and sent for a request (local runs only)."""
    config = relay()
    if config.service is None:
        return rejection(404, "not_found", "only with the built-in stand-in")
    record = stand_in_record(config.service, req_id)
    if record is None:
        return rejection(404, "not_found", f"the stand-in saw no request {req_id}")
    return JsonResponse(record)


def not_found(request: HttpRequest, exception: Optional[Exception] = None) -> HttpResponse:
    return rejection(404, "not_found", f"no such page: {request.path}")


def bad_request(request: HttpRequest, exception: Optional[Exception] = None) -> HttpResponse:
    return rejection(400, "bad_request", "the request could not be read")
