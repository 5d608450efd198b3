"""``python -m avatarsdk demo``: the five steps against the built-in stand-in, or the real service."""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, TextIO

from .avatar_session import new_avatar_session
from .errors import AvatarSDKError

#: Environment variables that point the demo (and the samples) at the real service.
ENV_VARS = {
    "api_key": "AVATARSDK_API_KEY",
    "app_id": "AVATARSDK_APP_ID",
    "avatar_id": "AVATARSDK_AVATAR_ID",
    "console_endpoint_url": "AVATARSDK_CONSOLE_URL",
    "ingress_endpoint_url": "AVATARSDK_INGRESS_URL",
}


def tone(seconds: float, sample_rate: int = 16000, frequency: float = 220.0) -> bytes:
    """``seconds`` of a quiet sine tone as PCM s16le mono."""
    count = int(seconds * sample_rate)
    step = 2 * math.pi * frequency / sample_rate
    return struct.pack(f"<{count}h", *(int(6000 * math.sin(i * step)) for i in range(count)))


def credentials_from_env(environ: Optional[Dict[str, str]] = None) -> Optional[Dict[str, str]]:
    """The real service's settings from ``AVATARSDK_*`` variables; ``None`` when none is set.

    Raises:
        ValueError: some but not all of the variables are set.
    """
    env = os.environ if environ is None else environ
    found = {field: env[var] for field, var in ENV_VARS.items() if env.get(var)}
    if not found:
        return None
    missing = [var for field, var in ENV_VARS.items() if field not in found]
    if missing:
        raise ValueError(f"set all of the AVATARSDK_* variables or none; missing: {', '.join(missing)}")
    return found


@dataclass
class _Request:
    req_id: str
    sent_at: float
    frames: int = 0
    size: int = 0
    first_at: Optional[float] = None
    last_at: Optional[float] = None
    done: threading.Event = field(default_factory=threading.Event)


def run(seconds: float, chunk_ms: int, utterances: int, local: bool, out: TextIO) -> int:
    """Run the demo; return the process exit status."""
    if seconds <= 0 or chunk_ms <= 0 or utterances <= 0:
        print("error: --seconds, --chunk-ms and --utterances must be positive", file=out)
        return 2
    try:
        creds = None if local else credentials_from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=out)
        return 2
    kwargs: Dict[str, Any]
    with ExitStack() as stack:
        if creds is None:
            try:
                from .testing import FakeAvatarService  # noqa: PLC0415 - optional extra
            except ImportError:
                print(
                    'error: the built-in stand-in needs the testing extra: pip install "avatarsdk[testing]"', file=out
                )
                return 2
            service = stack.enter_context(FakeAvatarService())
            kwargs = service.session_kwargs()
            print("avatarsdk demo: built-in stand-in service (no credentials needed)", file=out)
        else:
            kwargs = dict(creds, expire_at=datetime.now(timezone.utc) + timedelta(minutes=15))
            print("avatarsdk demo: real service (credentials from AVATARSDK_* variables)", file=out)
        print(f"  console  {kwargs['console_endpoint_url']}", file=out)
        print(f"  ingress  {kwargs['ingress_endpoint_url']}", file=out)
        return _five_steps(kwargs, seconds, chunk_ms, utterances, out)


def _five_steps(kwargs: Dict[str, Any], seconds: float, chunk_ms: int, utterances: int, out: TextIO) -> int:
    requests: Dict[str, _Request] = {}
    lock = threading.Lock()
    errors: List[AvatarSDKError] = []
    current: List[_Request] = []

    def on_frame(frame: bytes, last: bool) -> None:
        now = time.perf_counter()
        with lock:
            req = current[-1]
            req.frames += 1
            req.size += len(frame)
            req.first_at = req.first_at or now
            req.last_at = now
        if last:
            req.done.set()

    def on_error(err: AvatarSDKError) -> None:
        errors.append(err)
        print(f"  on_error {err}", file=out)
        for req in requests.values():
            req.done.set()

    closed = threading.Event()
    session = new_avatar_session(
        **kwargs,
        transport_frames=on_frame,
        on_error=on_error,
        on_close=closed.set,
    )
    print(f"1. create   avatar {session.config.avatar_id}, {session.config.sample_rate} Hz PCM", file=out)
    try:
        started = time.perf_counter()
        session.init()
        expires = session.config.expire_at.astimezone(timezone.utc) if session.config.expire_at else None
        print(
            f"2. init     session token obtained in {_ms(time.perf_counter() - started)}"
            f" (valid until {expires:%Y-%m-%d %H:%M:%S} UTC; the token itself is never printed)",
            file=out,
        )
        started = time.perf_counter()
        connection_id = session.start()
        print(f"3. start    connection id {connection_id} ({_ms(time.perf_counter() - started)})", file=out)
        pcm = tone(seconds, session.config.sample_rate)
        chunk = max(2, session.config.sample_rate * chunk_ms // 1000 * 2)
        pieces = [pcm[i : i + chunk] for i in range(0, len(pcm), chunk)]
        for n in range(utterances):
            req: Optional[_Request] = None
            for i, piece in enumerate(pieces):
                if req is None:
                    req = _Request(req_id="", sent_at=time.perf_counter())
                    with lock:
                        current.append(req)
                req.req_id = session.send_audio(piece, end=i == len(pieces) - 1)
            assert req is not None
            requests[req.req_id] = req
            if not req.done.wait(max(30.0, seconds * 10)):
                print(f"  request {req.req_id}: no last frame within the wait", file=out)
            print(
                f"4. send     request {req.req_id} ({n + 1}/{utterances}): {seconds:.2f} s of audio in"
                f" {len(pieces)} chunks of {chunk_ms} ms",
                file=out,
            )
            first = _ms(req.first_at - req.sent_at) if req.first_at else "-"
            last = _ms(req.last_at - req.sent_at) if req.last_at else "-"
            print(
                f"            frames received: {req.frames} ({req.size:,} bytes); first frame after {first},"
                f" last after {last}",
                file=out,
            )
    except AvatarSDKError as err:
        print(f"error: {err}", file=out)
        return 1
    except ValueError as err:
        print(f"error: {err}", file=out)
        return 2
    finally:
        session.close()
    print(f"5. close    session closed (on_close called: {closed.is_set()})", file=out)
    return 1 if errors else 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo",
        help="run the five steps (create, init, start, send_audio, close) and print what happened",
        description="Runs against the built-in stand-in service unless AVATARSDK_API_KEY, AVATARSDK_APP_ID, "
        "AVATARSDK_AVATAR_ID, AVATARSDK_CONSOLE_URL and AVATARSDK_INGRESS_URL are all set.",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per utterance (default 2)")
    parser.add_argument("--chunk-ms", type=int, default=100, help="milliseconds of audio per send (default 100)")
    parser.add_argument("--utterances", type=int, default=2, help="requests to send (default 2)")
    parser.add_argument("--local", action="store_true", help="use the built-in stand-in even if credentials are set")
    parser.set_defaults(func=lambda args: run(args.seconds, args.chunk_ms, args.utterances, args.local, sys.stdout))
