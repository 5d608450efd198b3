"""The relay's framework-free part: the pool, the audio a request brings, and the event stream it answers.

Both samples/flask_relay and samples/django_relay import this file (and serve templates/index.html beside it);
each framework only wires it to its requests and responses.

The response is a stream of Server-Sent Events (``text/event-stream``), one event per frame, written as
the frame arrives::

    event: start
    data: {"source": "clip", "sample_rate": 16000, "audio_ms": 2000, "expected_frames": 50, "audio": "<base64>"}

    event: frame
    data: {"seq": 1, "req_id": "...", "last": false, "data": "<base64 of the frame's exact bytes>"}

    event: end
    data: {"req_id": "...", "frames": 50, "bytes": 60000, "wait_ms": 1.2, "first_frame_ms": 3.4, "total_ms": 2012.5}

``audio`` is the PCM s16le mono the avatar speaks (the client plays it in step with the frames);
``expected_frames`` is one per 40 ms of it, the service's rate. A failure after the stream began is an
``event: error`` with ``{"code", "message"}``, and no ``end``. Times are the server's, in milliseconds:
``wait_ms`` to borrow a session and send the audio, ``first_frame_ms`` from then to the first frame,
``total_ms`` from the request to the last frame.

Why SSE rather than length-prefixed binary records over chunked HTTP: a browser reads it with
``EventSource`` (for ``GET``) or a few lines over ``fetch()`` (for ``POST``), any HTTP client reads it line
by line, each frame carries its ``req_id``/``last``/``seq`` beside it, the audio travels in the same
response, and proxies pass it through unbuffered (``X-Accel-Buffering: no``). The cost is base64, a third
more bytes than binary, which frames of about a kilobyte at 25 a second can afford; a client that needs
every byte can take ``frame.data`` as binary records instead (see docs/GUIDE.md, "Pull style").

When the client goes away, the WSGI server closes the response (:meth:`EventStream.close`): closing the
frame iterator gives the session back to the pool and interrupts the request, so the service stops
animating it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import math
import os
import struct
import time
from typing import TYPE_CHECKING, Any, Dict, Generator, Iterator, Optional, Tuple

from avatarsdk import AvatarSDKError, Frame, SessionPool, is_wav, iter_audio

if TYPE_CHECKING:
    from avatarsdk.testing import FakeAvatarService

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # the pool's sessions take PCM s16le mono at this rate
FRAME_MS = 40  # the service sends one animation frame per 40 ms of audio
MAX_SECONDS = 60  # the longest utterance accepted
MAX_UPLOAD = 32 * 1024 * 1024  # bytes of request body accepted (a minute of 48 kHz stereo float WAV fits)
BORROW_TIMEOUT = 10.0  # seconds a request waits for a free session before it is answered 503
FRAME_TIMEOUT = 10.0  # seconds the relay waits for each frame
CREDENTIALS = {  # SessionPool keyword: environment variable
    "api_key": "AVATARSDK_API_KEY",
    "app_id": "AVATARSDK_APP_ID",
    "avatar_id": "AVATARSDK_AVATAR_ID",
    "console_endpoint_url": "AVATARSDK_CONSOLE_URL",
    "ingress_endpoint_url": "AVATARSDK_INGRESS_URL",
}
REGION_VARIABLE = "AVATARSDK_REGION"  # a region (us-west, ap-northeast, cn-beijing, spatialreal, auto) for the URLs


def make_pool(
    local: bool, *, max_size: int = 4, min_idle: int = 0, region: Optional[str] = None
) -> Tuple[SessionPool, Optional[FakeAvatarService]]:
    """The pool, against the built-in stand-in (``local``: started here, 25 frames a second like the
    service) or the service the ``AVATARSDK_*`` variables name; ``region`` (default: ``AVATARSDK_REGION``)
    gives the URLs whose variables are not set.

    Raises:
        KeyError: credential variables are not set (the message lists them).
        ValueError: an unknown region (the message lists the known ones).
    """
    service = None
    region = region or os.environ.get(REGION_VARIABLE) or None
    if local:
        from avatarsdk.testing import FakeAvatarService  # noqa: PLC0415 - the "testing" extra, for local runs only

        service = FakeAvatarService(frame_interval=FRAME_MS / 1000).start()
        settings = service.credentials()
        region = None
    else:
        needed = [var for var in CREDENTIALS.values() if not (region and var.endswith("_URL"))]
        missing = [var for var in needed if not os.environ.get(var)]
        if missing:
            raise KeyError(", ".join(missing) + ("" if region else f" (or {REGION_VARIABLE} for the URLs)"))
        settings = {name: os.environ[var] for name, var in CREDENTIALS.items() if os.environ.get(var)}
    pool = SessionPool(
        region=region,
        **settings,
        max_size=max_size,
        min_idle=min_idle,
        borrow_timeout=BORROW_TIMEOUT,
        sample_rate=SAMPLE_RATE,
        on_error=lambda err: logger.warning("avatar session: %s", err),
    )
    return pool, service


def service_name(service: Optional[FakeAvatarService], region: Optional[str] = None) -> str:
    """Which avatar service the pool uses, for the start-up line."""
    if service is not None:
        return "the built-in stand-in"
    region = region or os.environ.get(REGION_VARIABLE)
    return os.environ.get("AVATARSDK_INGRESS_URL") or f"region {region}"


def pool_stats(pool: SessionPool, service: Optional[FakeAvatarService]) -> Dict[str, Any]:
    """``pool.stats()`` with ``max_size``, and whether the stand-in is in use (``local``)."""
    return {**dataclasses.asdict(pool.stats()), "max_size": pool.max_size, "local": service is not None}


# ------------------------------------------------------------------------------------------ audio


class BadAudio(ValueError):
    """The request's audio cannot be used; answer with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def speech_like_clip(seconds: float = 2.0) -> bytes:
    """PCM s16le mono that sounds vaguely like a voice: a gliding 140 Hz buzz, four syllables a second."""
    samples = []
    phase = 0.0
    for i in range(int(seconds * SAMPLE_RATE)):
        t = i / SAMPLE_RATE
        phase += 2 * math.pi * (140 + 25 * math.sin(2 * math.pi * 0.7 * t)) / SAMPLE_RATE  # intonation
        voice = sum(math.sin(k * phase) / k for k in range(1, 6))  # a few harmonics
        syllables = max(0.0, math.sin(4 * math.pi * t)) ** 0.6
        samples.append(int(5000 * syllables * voice))
    return struct.pack(f"<{len(samples)}h", *samples)


def utterance(body: bytes, upload: Optional[Tuple[str, bytes]], clip: bytes) -> Tuple[bytes, str]:
    """A request's audio as PCM s16le mono at ``SAMPLE_RATE``, and where it came from.

    Args:
        body: The request body when it is not a form: a WAV file (any rate, channels and sample format
            ``iter_audio`` reads), raw PCM s16le mono at ``SAMPLE_RATE``, or nothing for ``clip``.
        upload: ``(file name, bytes)`` of a form's ``audio`` file: anything ``iter_audio`` reads (WAV; MP3,
            OGG, FLAC, ... with the ``audio`` extra).

    Raises:
        BadAudio: unreadable (400), a compressed format without PyAV (415), or too long (413).
    """
    if upload is not None:
        pcm, source = _decode(upload[1], upload[0] or "upload"), "upload"
    elif not body:
        return clip, "clip"
    elif is_wav(body):
        pcm, source = _decode(body, "WAV body"), "wav"
    elif len(body) % 2:
        raise BadAudio(f"raw PCM must be s16le (an even number of bytes), got {len(body)} bytes")
    else:
        pcm, source = body, "pcm"
    if not pcm:
        raise BadAudio("the audio is empty")
    if len(pcm) > MAX_SECONDS * SAMPLE_RATE * 2:
        raise BadAudio(f"the audio is longer than {MAX_SECONDS} s", 413)
    return pcm, source


def _decode(data: bytes, name: str) -> bytes:
    """Decode with FFmpeg when PyAV is installed (mostly outside the GIL: other requests' streams go on), else
    in pure Python; stop a second past ``MAX_SECONDS`` (too long either way)."""
    pcm = bytearray()
    try:
        with iter_audio(data, sample_rate=SAMPLE_RATE, chunk_ms=1000) as audio:
            for chunk, _ in audio:
                pcm += chunk
                if len(pcm) > MAX_SECONDS * SAMPLE_RATE * 2:
                    break
        return bytes(pcm)
    except ValueError as exc:
        raise BadAudio(f"{name}: {exc}") from exc
    except ImportError as exc:  # a compressed format, and PyAV (the audio extra) is not installed
        raise BadAudio(f"{name}: {exc}", 415) from exc


# ------------------------------------------------------------------------------------ the stream


def sse(event: str, data: Dict[str, Any]) -> bytes:
    """One Server-Sent Event: the JSON ``data`` on a single ``data:`` line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class EventStream:
    """A response body: the request's frames as Server-Sent Events, each written when it arrives.

    Make it in the view with :meth:`open`: that borrows a session and sends the audio, so a busy pool
    (:class:`~avatarsdk.PoolTimeoutError`) or a failed start (:class:`~avatarsdk.AvatarSDKError`) raises
    there, where the view can still answer with an error status.

    The WSGI server calls :meth:`close` when the response ends or the client goes away, even before the
    first event: closing the frame iterator gives the session back to the pool and, if frames were still
    to come, interrupts the request.
    """

    def __init__(self, frames: Generator[Frame, None, None], start: Dict[str, Any], began: float) -> None:
        self._frames = frames
        self._events = self._generate(start, began, time.monotonic())

    @classmethod
    def open(cls, pool: SessionPool, pcm: bytes, source: str, began: float) -> EventStream:
        """Borrow a session, send ``pcm``, and return the stream of its frames (``began``: the request's
        ``time.monotonic()``, for the summary's times)."""
        seconds = len(pcm) / 2 / SAMPLE_RATE
        # pool.stream() returns a generator; closing it is how the session goes back early.
        frames = pool.stream(pcm, frame_timeout=FRAME_TIMEOUT, deadline=seconds + 30)
        start = {
            "source": source,
            "sample_rate": SAMPLE_RATE,
            "audio_ms": round(seconds * 1000),
            "expected_frames": max(1, round(seconds * 1000 / FRAME_MS)),
            "audio": base64.b64encode(pcm).decode("ascii"),
        }
        return cls(frames, start, began)

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        self._events.close()
        self._frames.close()

    def _generate(self, start: Dict[str, Any], began: float, sent: float) -> Generator[bytes, None, None]:
        yield sse("start", start)
        count = size = 0
        req_id, first = "", None
        try:
            for frame in self._frames:
                count += 1
                size += len(frame.data)
                req_id = frame.req_id
                if first is None:
                    first = time.monotonic()
                data = base64.b64encode(frame.data).decode("ascii")
                yield sse("frame", {"seq": count, "req_id": req_id, "last": frame.last, "data": data})
        except AvatarSDKError as exc:  # raised after the frames before it; the pool drops the session
            logger.warning("request %s failed after %d frames: %s", req_id or "?", count, exc)
            yield sse("error", {"code": exc.code.value, "message": str(exc)})
            return
        yield sse(
            "end",
            {
                "req_id": req_id,
                "frames": count,
                "bytes": size,
                "wait_ms": round((sent - began) * 1000, 1),
                "first_frame_ms": None if first is None else round((first - sent) * 1000, 1),
                "total_ms": round((time.monotonic() - began) * 1000, 1),
            },
        )


# ---------------------------------------------------------------------------------- local runs


def stand_in_record(service: FakeAvatarService, req_id: str) -> Optional[Dict[str, Any]]:
    """What the built-in stand-in received and sent for ``req_id`` (``None``: it saw no such request), for
    a test in another process to compare with what the relay delivered."""
    found = service.find_request(req_id)
    if found is None:
        return None
    conn, received = found
    return {
        "req_id": req_id,
        "connection_id": conn.connection_id,
        "ended": received.ended,
        "interrupted": received.interrupted,
        "audio_bytes": len(received.audio),
        "audio_sha256": hashlib.sha256(bytes(received.audio)).hexdigest(),
        "frames": [base64.b64encode(f).decode("ascii") for f in conn.sent_frames(req_id)],
    }
