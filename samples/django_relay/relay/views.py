"""The relay's views: the page, the event stream of an utterance's frames, the pool's counts."""

from __future__ import annotations

import logging
import time
from typing import cast

from django.apps import apps
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods
from relaying import BadAudio, EventStream, pool_stats, stand_in_record, utterance  # samples/relay_common

from avatarsdk import AvatarSDKError, PoolTimeoutError

from .apps import RelayConfig

logger = logging.getLogger(__name__)


def relay() -> RelayConfig:
    config = cast(RelayConfig, apps.get_app_config("relay"))
    if config.pool is None:
        raise RuntimeError("the relay's pool was not made (see RelayConfig.ready)")
    return config


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "index.html")


# An endpoint for the app's clients, which send no cookies (authenticate them your own way, e.g. a token
# header): Django's CSRF check does not apply.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def speak(request: HttpRequest) -> HttpResponse:
    """The utterance in the body (WAV, raw PCM s16le mono 16 kHz, a form's ``audio`` file, or nothing for
    the bundled clip); the answer streams its frames as Server-Sent Events (see samples/relay_common/relaying.py)."""
    began = time.monotonic()
    config = relay()
    assert config.pool is not None
    try:
        if request.content_type == "multipart/form-data":
            file = request.FILES.get("audio")
            if file is None:
                raise BadAudio("a form upload needs a file field named 'audio'")
            pcm, source = utterance(b"", (file.name or "upload", file.read()), config.clip)
        else:
            pcm, source = utterance(request.body, None, config.clip)
    except BadAudio as exc:
        return JsonResponse({"error": "bad_audio", "message": str(exc)}, status=exc.status)
    try:
        stream = EventStream.open(config.pool, pcm, source, began)  # borrows a session and sends the audio
    except PoolTimeoutError as exc:
        busy = JsonResponse({"error": "busy", "message": str(exc)}, status=503)
        busy["Retry-After"] = "1"
        return busy
    except AvatarSDKError as exc:
        logger.warning("cannot start a session: %s", exc)
        return JsonResponse({"error": exc.code.value, "message": str(exc)}, status=502)
    # The WSGI server closes the response when it ends or the client goes away; Django passes that on
    # to stream.close(), which gives the session back (interrupting the request if frames were to come).
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
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
        raise Http404("only with the built-in stand-in")
    record = stand_in_record(config.service, req_id)
    if record is None:
        return JsonResponse({"error": "not_found", "message": f"the stand-in saw no request {req_id}"}, status=404)
    return JsonResponse(record)
