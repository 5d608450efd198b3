"""``avatarsdk demo`` (also ``python -m avatarsdk demo``): the five steps (create, init, start, send_audio,
close) with frames on the ``transport_frames`` callback, printed step by step, against the built-in stand-in
or, when every ``AVATARSDK_*`` variable is set (and neither ``--local`` nor ``AVATARSDK_LOCAL=1`` is given), the
real service. Its output (errors included) goes to stdout, a line at a time.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, TextIO

from .. import AvatarSDKError, AvatarSession, new_avatar_session
from .common import (
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_USAGE,
    LOCAL_ENV,
    OutputError,
    UsageError,
    credentials_from_env,
    fake_service,
    ms,
    say,
    tls_options,
)
from .interrupt import Interrupt


def tone(seconds: float, sample_rate: int = 16000, frequency: float = 220.0) -> bytes:
    """``seconds`` of a quiet sine tone as PCM s16le mono."""
    count = int(seconds * sample_rate)
    step = 2 * math.pi * frequency / sample_rate
    return struct.pack(f"<{count}h", *(int(6000 * math.sin(i * step)) for i in range(count)))


@dataclass
class _Request:
    req_id: str
    sent_at: float
    frames: int = 0
    size: int = 0
    first_at: Optional[float] = None
    last_at: Optional[float] = None
    done: threading.Event = field(default_factory=threading.Event)


class _Callbacks:
    """The session's callbacks (on its dispatcher thread): frames counted for the request being sent, errors
    printed and kept, the close noted."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._current: List[_Request] = []
        self.sent: Dict[str, _Request] = {}  # requests whose audio is all sent, by id
        self.errors: List[AvatarSDKError] = []
        self.closed = threading.Event()

    def begin(self) -> _Request:
        """A new request, before its first chunk is sent: the frames that follow are its own."""
        req = _Request(req_id="", sent_at=time.perf_counter())
        with self._lock:
            self._current.append(req)
        return req

    def on_frame(self, frame: bytes, last: bool) -> None:
        now = time.perf_counter()
        with self._lock:
            req = self._current[-1]
            req.frames += 1
            req.size += len(frame)
            req.first_at = req.first_at or now
            req.last_at = now
        if last:
            req.done.set()

    def on_error(self, err: AvatarSDKError) -> None:
        self.errors.append(err)
        try:
            say(self._out, f"  on_error {err}")
        except OutputError:  # the command's thread finds out on its next line
            pass
        self._no_more_frames()

    def on_close(self) -> None:
        self.closed.set()
        self._no_more_frames()  # close() from Ctrl-C: no last frame is coming

    def _no_more_frames(self) -> None:
        for req in self.sent.values():
            req.done.set()


def run(args: argparse.Namespace, out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
    """Run the demo; return the process exit status."""
    seconds, chunk_ms, utterances = args.seconds, args.chunk_ms, args.utterances
    if seconds <= 0 or chunk_ms <= 0 or utterances <= 0:
        say(out, "error: --seconds, --chunk-ms and --utterances must be positive")
        return EXIT_USAGE
    local = args.local or os.environ.get(LOCAL_ENV, "") == "1"
    try:
        network = tls_options(args, err)
        creds = None if local else credentials_from_env()
    except (UsageError, ValueError) as exc:
        say(out, f"error: {exc}")
        return EXIT_USAGE
    kwargs: Dict[str, Any]
    with ExitStack() as stack:
        if creds is None:
            try:
                service = stack.enter_context(fake_service())
            except UsageError as exc:
                say(out, f"error: {exc}")
                return EXIT_USAGE
            kwargs = service.session_kwargs()
            say(out, "avatarsdk demo: built-in stand-in service (no credentials needed)")
        else:
            kwargs = dict(creds, expire_at=datetime.now(timezone.utc) + timedelta(minutes=15), **network)
            say(out, "avatarsdk demo: real service (credentials from AVATARSDK_* variables)")
        for label, name in (
            ("region ", "region"),
            ("console", "console_endpoint_url"),
            ("ingress", "ingress_endpoint_url"),
        ):
            if kwargs.get(name):
                say(out, f"  {label}  {kwargs[name]}")
        return _five_steps(kwargs, out, interrupt, seconds=seconds, chunk_ms=chunk_ms, utterances=utterances)


def _five_steps(
    kwargs: Dict[str, Any], out: TextIO, interrupt: Interrupt, *, seconds: float, chunk_ms: int, utterances: int
) -> int:
    calls = _Callbacks(out)
    session = new_avatar_session(
        **kwargs, transport_frames=calls.on_frame, on_error=calls.on_error, on_close=calls.on_close
    )
    say(out, f"1. create   avatar {session.config.avatar_id}, {session.config.sample_rate} Hz PCM")
    with interrupt.stopping(session.close):  # Ctrl-C: its waits end at once (on_close)
        return _steps(session, calls, out, seconds=seconds, chunk_ms=chunk_ms, utterances=utterances)


def _steps(
    session: AvatarSession, calls: _Callbacks, out: TextIO, *, seconds: float, chunk_ms: int, utterances: int
) -> int:
    """Steps 2 to 5 (1, create, is done)."""
    try:
        _connect(session, out)
        pcm = tone(seconds, session.config.sample_rate)
        chunk = max(2, session.config.sample_rate * chunk_ms // 1000 * 2)
        pieces = [pcm[i : i + chunk] for i in range(0, len(pcm), chunk)]
        for n in range(utterances):
            req = _send(session, calls, pieces, max(30.0, seconds * 10), out)
            say(
                out,
                f"4. send     request {req.req_id} ({n + 1}/{utterances}): {seconds:.2f} s of audio in"
                f" {len(pieces)} chunks of {chunk_ms} ms",
            )
            first = ms(req.first_at - req.sent_at) if req.first_at else "-"
            last = ms(req.last_at - req.sent_at) if req.last_at else "-"
            say(
                out,
                f"            frames received: {req.frames} ({req.size:,} bytes); first frame after {first},"
                f" last after {last}",
            )
    except AvatarSDKError as err:
        say(out, f"error: {err}")
        return EXIT_SERVICE
    except ValueError as err:
        say(out, f"error: {err}")
        return EXIT_USAGE
    finally:
        session.close()
    say(out, f"5. close    session closed (on_close called: {calls.closed.is_set()})")
    return EXIT_SERVICE if calls.errors else EXIT_OK


def _connect(session: AvatarSession, out: TextIO) -> None:
    """Steps 2 and 3: ``init()`` (the session token) and ``start()`` (the connection)."""
    started = time.perf_counter()
    session.init()
    expires = session.config.expire_at.astimezone(timezone.utc) if session.config.expire_at else None
    say(
        out,
        f"2. init     session token obtained in {ms(time.perf_counter() - started)}"
        f" (valid until {expires:%Y-%m-%d %H:%M:%S} UTC; the token itself is never printed)",
    )
    started = time.perf_counter()
    connection_id = session.start()
    say(out, f"3. start    connection id {connection_id} ({ms(time.perf_counter() - started)})")


def _send(session: AvatarSession, calls: _Callbacks, pieces: List[bytes], wait: float, out: TextIO) -> _Request:
    """Send one utterance with ``send_audio()``, ``end=True`` on its last piece; wait for its last frame."""
    req: Optional[_Request] = None
    for i, piece in enumerate(pieces):
        if req is None:
            req = calls.begin()
        req.req_id = session.send_audio(piece, end=i == len(pieces) - 1)
    assert req is not None
    calls.sent[req.req_id] = req
    if calls.closed.is_set():  # closed before on_close could see it (Ctrl-C)
        req.done.set()
    if not req.done.wait(wait):
        say(out, f"  request {req.req_id}: no last frame within the wait")
    return req


NAME = "demo"
HELP = "run the five steps (create, init, start, send_audio, close) and print what happened"
DESCRIPTION = (
    "Runs against the built-in stand-in service unless AVATARSDK_API_KEY, AVATARSDK_APP_ID, AVATARSDK_AVATAR_ID, "
    "AVATARSDK_CONSOLE_URL and AVATARSDK_INGRESS_URL are all set (and neither --local nor AVATARSDK_LOCAL=1 is "
    "given). Against the real service, the session is billed for the seconds it is connected (a few)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``demo``'s arguments."""
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per utterance (default 2)")
    parser.add_argument("--chunk-ms", type=int, default=100, help="milliseconds of audio per send (default 100)")
    parser.add_argument("--utterances", type=int, default=2, help="requests to send (default 2)")
