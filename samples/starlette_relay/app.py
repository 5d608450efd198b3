"""The relay in Starlette (ASGI): speech in over HTTP, the avatar's frames and the audio out, live.

    python samples/starlette_relay/app.py --local --port 8000     # built-in stand-in (AVATARSDK_LOCAL=1 works too)
    python samples/starlette_relay/app.py --port 8000             # real service: set AVATARSDK_API_KEY,
        AVATARSDK_APP_ID, AVATARSDK_AVATAR_ID, AVATARSDK_CONSOLE_URL and AVATARSDK_INGRESS_URL
        (or --region us-west / AVATARSDK_REGION instead of the two URLs)
    uvicorn --app-dir samples/starlette_relay app:create_app --factory --host 127.0.0.1 --port 8000

The same endpoints, event stream, access check and errors as samples/flask_relay (its docstring lists
them; ../relay_common holds the shared part). What differs is how the blocking SDK meets the event loop:
nothing blocking runs on it. Decoding an upload runs on a thread (``asyncio.to_thread``); borrowing a
session, sending the audio and waiting for each frame run on the stream's own worker thread
(``avatarsdk.aio.ThreadedIterator``); when the client goes away, the server cancels the response and the
iterator closes the stream on that thread, which gives the session back and interrupts the request.
FastAPI takes the same code: return the ``StreamingResponse`` from a FastAPI route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Callable, Dict, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "relay_common"))  # shared with the other relays

import relaying
import uvicorn
from guard import (
    Authorize,
    Guard,
    Guarded,
    Rejected,
    check_content_type,
    client_of,
    error_body,
    http_code,
    refuse_open_bind,
)
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
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from avatarsdk import AvatarSDKError, PoolTimeoutError, SessionPool, ThreadedIterator, is_wav

if TYPE_CHECKING:
    from avatarsdk.testing import FakeAvatarService

logger = logging.getLogger("starlette_relay")


def rejection(status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def create_app(
    pool: Optional[SessionPool] = None,
    service: Optional[FakeAvatarService] = None,
    *,
    authorize: Optional[Authorize] = None,
) -> Starlette:
    """The relay app. Without a ``pool``, one is made from the environment (``AVATARSDK_LOCAL=1``: the
    built-in stand-in) and closed at the app's shutdown."""
    owned = pool is None
    if pool is None:
        pool, service = make_pool(os.environ.get("AVATARSDK_LOCAL") == "1")
    the_pool, stand_in = pool, service
    guard = Guard.from_environment(service is not None, authorize)
    if not guard.checks_access and service is None:
        logger.warning("no RELAY_TOKEN: serving the real avatar service to loopback clients only")
    page = (Path(relaying.__file__).parent / "templates" / "index.html").read_text(encoding="utf-8")
    clip = speech_like_clip()

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def read_audio(request: Request) -> Tuple[bytes, str]:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with request.form(max_part_size=MAX_UPLOAD) as form:
                file = form.get("audio")
                if file is None or isinstance(file, str):
                    raise BadAudio("a form upload needs a file field named 'audio'")
                upload = (file.filename or "upload", await file.read())
            return await asyncio.to_thread(utterance, b"", upload, clip)
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > MAX_UPLOAD:
                raise Rejected(413, http_code(413), f"the body is larger than {MAX_UPLOAD} bytes")
        check_content_type(request.headers.get("content-type"), bytes(body), is_wav(bytes(body)))
        return await asyncio.to_thread(utterance, bytes(body), None, clip)

    async def speak(request: Request) -> Response:
        began = time.monotonic()
        client = client_of(request.client)
        try:
            guard.check(request.headers.get("authorization"), client)
            leave = guard.enter(client)
        except Rejected as exc:
            return rejection(exc.status, exc.code, str(exc))
        try:
            return await open_stream(request, began, leave)
        except BaseException:
            leave()
            raise

    async def open_stream(request: Request, began: float, leave: Callable[[], None]) -> Response:
        try:
            pcm, source = await read_audio(request)
            # Borrowing and sending block: they run on the stream's worker thread, as its frames do.
            events = await ThreadedIterator.open(lambda: Guarded(EventStream.open(the_pool, pcm, source, began), leave))
        except Rejected as exc:
            leave()
            return rejection(exc.status, exc.code, str(exc))
        except BadAudio as exc:
            leave()
            return rejection(exc.status, "bad_audio", str(exc))
        except PoolTimeoutError as exc:
            leave()
            return rejection(503, "busy", str(exc), {"Retry-After": "1"})
        except AvatarSDKError as exc:
            leave()
            logger.warning("cannot start a session: %s", exc)
            return rejection(502, exc.code.value, str(exc))
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    async def stats(request: Request) -> Response:
        return JSONResponse(pool_stats(the_pool, stand_in))

    async def debug_request(request: Request) -> Response:
        if stand_in is None:
            return rejection(404, "not_found", "only with the built-in stand-in")
        req_id = request.path_params["req_id"]
        record = stand_in_record(stand_in, req_id)
        if record is None:
            return rejection(404, "not_found", f"the stand-in saw no request {req_id}")
        return JSONResponse(record)

    async def http_error(request: Request, exc: Exception) -> Response:  # 404, 405: the one JSON error shape
        assert isinstance(exc, HTTPException)
        return rejection(exc.status_code, http_code(exc.status_code), str(exc.detail))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if owned:  # made here: closed at the server's shutdown, waiting up to 5 s for streams in flight
            await asyncio.to_thread(the_pool.close, 5)
            if stand_in is not None:
                stand_in.close()

    routes = [
        Route("/", index),
        Route("/speak", speak, methods=["GET", "POST"]),
        Route("/stats", stats),
        Route("/debug/requests/{req_id}", debug_request),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--local", action="store_true", help="use the built-in stand-in service")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
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
        guard = Guard.from_environment(local)
        pool, service = make_pool(local, max_size=args.max_size, min_idle=args.min_idle, region=args.region)
    except KeyError as exc:
        print(f"error: set {exc.args[0]} (or use --local)", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        refusal = refuse_open_bind(args.host, local, guard)
        if refusal is not None:
            print(f"error: {refusal}", file=sys.stderr)
            return 2
        app = create_app(pool, service)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        where = service_name(service, args.region)
        print(f"relay: http://{args.host}:{args.port}/ (avatar service: {where})", flush=True)
        # SIGTERM or Ctrl-C: uvicorn finishes the responses in flight (5 s at most), then raises the signal
        # again for the handler it found: this one, so that the pool is closed and the exit status is 0.
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        try:
            server.run()
        except KeyboardInterrupt:
            pass
    finally:
        pool.close(timeout=5)
        if service is not None:
            service.close()
    print("relay: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
