"""A relay in Flask: speech in over HTTP, the avatar's frames and the audio out to the browser, live.

    python samples/flask_relay/app.py --local --port 8000     # built-in stand-in (AVATARSDK_LOCAL=1 works too)
    python samples/flask_relay/app.py --port 8000             # real service: set AVATARSDK_API_KEY,
        AVATARSDK_APP_ID, AVATARSDK_AVATAR_ID, AVATARSDK_CONSOLE_URL and AVATARSDK_INGRESS_URL
        (or --region us-west / AVATARSDK_REGION instead of the two URLs)

then open http://127.0.0.1:8000/ and press Speak. One SessionPool serves every request thread: each request
borrows a started session, streams its utterance, and forwards the frames as they arrive.

- ``POST /speak``: the body is the utterance: a WAV file (any rate, channels and sample format), raw PCM
  s16le mono at 16 kHz, or a ``multipart/form-data`` upload with a file field ``audio`` (WAV; MP3, OGG,
  FLAC, ... with the ``audio`` extra); raw PCM needs ``Content-Type: application/octet-stream`` (or
  ``audio/pcm``). An empty body, or ``GET /speak``, speaks the bundled clip (2 s of a speech-like signal made at
  start-up). The answer is a stream of Server-Sent Events: ``start`` (with the audio), a ``frame`` per frame,
  ``end`` (see ../relay_common/relaying.py for the format and why SSE). Errors before the stream, each as
  ``{"error": ..., "message": ...}``: 401/403 for a caller without access, 429 past the client's concurrent
  streams, 400/413/415 for audio it cannot take, 503 when every session stays busy for 10 s, 502 when a session
  cannot be started.

Access (../relay_common/guard.py): against the real service, set ``RELAY_TOKEN`` (clients send
``Authorization: Bearer <token>``); without it only loopback clients are served and ``--host`` must be a
loopback address. ``RELAY_MAX_STREAMS_PER_CLIENT`` (2) caps each client address's concurrent streams.
- ``GET /stats``: ``pool.stats()`` as JSON, with ``max_size``.
- ``GET /debug/requests/<req_id>`` (local runs only): what the stand-in received and sent for a request.
- ``GET /``: a page that speaks and shows the frames arriving (count, rate, time to first frame, latency).

This script serves with Werkzeug's threaded server (SIGTERM or Ctrl-C stops it, closing the pool). Any
threaded WSGI server can serve ``create_app()`` instead (gunicorn ``gthread``, waitress), which builds the pool
from the environment: docs/DEPLOYMENT.md has the commands and timeouts (not gunicorn's default sync worker).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "relay_common"))  # shared with django_relay

import relaying
from flask import Flask, Response, jsonify, render_template, request
from guard import Authorize, Guard, Guarded, Rejected, check_content_type, error_body, http_code, refuse_open_bind
from relaying import (
    MAX_UPLOAD,
    BadAudio,
    EventStream,
    make_pool,
    pool_stats,
    service_name,
    speech_like_clip,
    stand_in_record,
    utterance,
)
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from avatarsdk import AvatarSDKError, PoolTimeoutError, SessionPool, is_wav

if TYPE_CHECKING:
    from avatarsdk.testing import FakeAvatarService

logger = logging.getLogger("flask_relay")


def create_app(
    pool: Optional[SessionPool] = None,
    service: Optional[FakeAvatarService] = None,
    *,
    authorize: Optional[Authorize] = None,
) -> Flask:
    """The relay app. Without a ``pool``, one is made from the environment (``AVATARSDK_LOCAL=1``: the
    built-in stand-in). Access: ``RELAY_TOKEN`` from the environment, or ``authorize`` (the application's own
    check, given the ``Authorization`` header and the client's address); see ../relay_common/guard.py."""
    if pool is None:
        pool, service = make_pool(os.environ.get("AVATARSDK_LOCAL") == "1")
    guard = Guard.from_environment(service is not None, authorize)
    if not guard.checks_access and service is None:
        logger.warning("no RELAY_TOKEN: serving the real avatar service to loopback clients only")
    app = Flask(__name__, template_folder=str(Path(relaying.__file__).parent / "templates"))
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD
    clip = speech_like_clip()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:  # 404, 405, 413, ...: the relays' one JSON error shape
        status = exc.code or 500
        return jsonify(error_body(http_code(status), exc.description or exc.name or "")), status

    @app.get("/")
    def index() -> str:
        return render_template("index.html")

    @app.route("/speak", methods=["GET", "POST"])
    def speak() -> Any:
        began = time.monotonic()
        client = request.remote_addr or "unknown"
        try:
            guard.check(request.headers.get("Authorization"), client)
            leave = guard.enter(client)
        except Rejected as exc:
            return jsonify(error_body(exc.code, str(exc))), exc.status
        try:
            return open_stream(began, leave)
        except BaseException:
            leave()
            raise

    def open_stream(began: float, leave: Callable[[], None]) -> Any:
        try:
            if request.mimetype == "multipart/form-data":
                file = request.files.get("audio")
                if file is None:
                    raise BadAudio("a form upload needs a file field named 'audio'")
                pcm, source = utterance(b"", (file.filename or "upload", file.read()), clip)
            else:
                body = request.get_data(cache=False)
                check_content_type(request.mimetype, body, is_wav(body))
                pcm, source = utterance(body, None, clip)
        except BadAudio as exc:
            leave()
            return jsonify(error_body("bad_audio", str(exc))), exc.status
        except Rejected as exc:
            leave()
            return jsonify(error_body(exc.code, str(exc))), exc.status
        try:
            stream = EventStream.open(pool, pcm, source, began)  # borrows a session and sends the audio
        except PoolTimeoutError as exc:
            leave()
            return jsonify(error_body("busy", str(exc))), 503, {"Retry-After": "1"}
        except AvatarSDKError as exc:
            leave()
            logger.warning("cannot start a session: %s", exc)
            return jsonify(error_body(exc.code.value, str(exc))), 502
        # Not wrapped in flask.stream_with_context: the stream reads nothing from the request, and that
        # wrapper would not pass on a close() that comes before the first event.
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return Response(Guarded(stream, leave), mimetype="text/event-stream", headers=headers)

    @app.get("/stats")
    def stats() -> Any:
        return jsonify(pool_stats(pool, service))

    if service is not None:
        stand_in = service

        @app.get("/debug/requests/<req_id>")
        def debug_request(req_id: str) -> Any:
            record = stand_in_record(stand_in, req_id)
            if record is None:
                return jsonify(error_body("not_found", f"the stand-in saw no request {req_id}")), 404
            return jsonify(record)

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--local", action="store_true", help="use the built-in stand-in service")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000; 0: a free one)")
    parser.add_argument("--max-size", type=int, default=4, help="the pool's max_size (4)")
    parser.add_argument(
        "--min-idle", type=int, default=0, help="sessions kept started and idle, 600 credits an hour each (0)"
    )
    parser.add_argument("--region", help="us-west, ap-northeast, cn-beijing, spatialreal or auto, for the URLs")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the SDK's debug log")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.verbose:
        logging.getLogger("avatarsdk").setLevel(logging.DEBUG)
    local = args.local or os.environ.get("AVATARSDK_LOCAL") == "1"
    try:
        pool, service = make_pool(local, max_size=args.max_size, min_idle=args.min_idle, region=args.region)
    except KeyError as exc:
        print(f"error: set {exc.args[0]} (or use --local)", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    refusal = refuse_open_bind(args.host, service is not None, Guard.from_environment(service is not None))
    if refusal is not None:
        pool.close()
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        server = make_server(args.host, args.port, create_app(pool, service), threaded=True)

        def stop(signum: int, frame: Optional[FrameType]) -> None:
            raise KeyboardInterrupt  # SIGTERM ends serve_forever() as Ctrl-C does

        signal.signal(signal.SIGTERM, stop)
        where = service_name(service, args.region)
        print(f"relay: http://{args.host}:{server.server_port}/ (avatar service: {where})", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            server.server_close()
    finally:
        pool.close(timeout=5)  # waits up to 5 s for streams in flight
        if service is not None:
            service.close()
    print("relay: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
