"""The ``avatarsdk`` command's ``send``, ``serve-local`` and ``token`` subcommands (``demo`` is in _demo.py).

Exit status: 0 on success, 1 when the service (or the network) fails, 2 for a usage error (arguments,
credentials, files), 130 on Ctrl-C. A failure prints one line, ``error: <code>: <message> (hint: ...)``,
on stderr. Secrets (the API key, session tokens) are never printed, except the token by ``token --show``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, TextIO, Tuple
from urllib.parse import urlsplit

from ._demo import ENV_VARS
from ._token import request_session_token
from ._validation import PCM_SAMPLE_RATES, check_text, check_url
from .audio import chunk_pcm, load_audio
from .avatar_session import new_avatar_session
from .errors import AvatarSDKError, AvatarSDKErrorCode
from .framefile import FrameWriter

EXIT_OK, EXIT_SERVICE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Command-line flag of each credential (their environment variables are ``_demo.ENV_VARS``).
FLAGS = {
    "api_key": "--api-key",
    "app_id": "--app-id",
    "avatar_id": "--avatar-id",
    "console_endpoint_url": "--console-url",
    "ingress_endpoint_url": "--ingress-url",
}
LOCAL_ENV = "AVATARSDK_LOCAL"
TOKEN_FIELDS = ("api_key", "console_endpoint_url")
SESSION_FIELDS = tuple(FLAGS)
FRAME_SECONDS = 0.04  # the service sends 25 animation frames per second of audio
MAX_EXPIRES_IN = 24 * 3600
TESTING_HINT = 'the built-in stand-in needs the testing extra: pip install "avatarsdk[testing]"'

_C = AvatarSDKErrorCode
HINTS: Dict[AvatarSDKErrorCode, str] = {
    _C.sessionTokenExpired: "the session token expired; each run gets a new one, so check the machine's clock",
    _C.sessionTokenInvalid: "the service refused the session token; check that the console and ingress URLs "
    "belong to the same deployment",
    _C.appIDUnrecognized: "check --app-id / AVATARSDK_APP_ID",
    _C.appIDMismatch: "the app id does not belong to the API key; check --app-id / AVATARSDK_APP_ID",
    _C.avatarNotFound: "check --avatar-id / AVATARSDK_AVATAR_ID",
    _C.billingRequired: "the account needs billing set up in the console",
    _C.creditsExhausted: "the account is out of credits",
    _C.sessionDurationExceeded: "the session reached its time limit; send fewer files per run",
    _C.concurrencyLimit: "too many sessions at once; end others or try again later",
    _C.unsupportedSampleRate: "this deployment does not take that rate; try --sample-rate 16000",
    _C.invalidEgressConfig: "the egress configuration was refused",
    _C.egressUnavailable: "the service's egress is unavailable; try again later",
    _C.idleTimeout: "the service received no audio for too long",
    _C.upstreamError: "the service had a temporary problem; try again",
    _C.invalidRequest: "the service refused the request; check the credentials and URLs",
    _C.connectionFailed: "could not reach the service; check --console-url / --ingress-url and the network",
    _C.connectionClosed: "the connection was lost; try again",
    _C.protocolError: "the reply was not the avatar service's; check that the URLs point at it",
    _C.serverError: "the service reported an error; try again later",
    _C.unknown: "run with --verbose for details",
}


def _say(stream: TextIO, *lines: str) -> None:
    """Write ``lines`` to ``stream`` and flush (another process may be reading it line by line)."""
    stream.write("".join(line + "\n" for line in lines))
    stream.flush()


class UsageError(Exception):
    """Bad arguments, credentials or input files: exit status 2."""


def error_line(err: AvatarSDKError) -> str:
    """``error: <code>: <message> (hint: ...)`` on one line."""
    hint = HINTS.get(err.code, "")
    if err.http_status in (401, 403) and err.code is _C.invalidRequest:
        hint = "check the API key (--api-key / AVATARSDK_API_KEY) and --console-url / AVATARSDK_CONSOLE_URL"
    text = " ".join(str(err).split())
    return f"error: {text}" + (f" (hint: {hint})" if hint else "")


# ------------------------------------------------------------------------------------ credentials


def _wants_local(args: argparse.Namespace, environ: Dict[str, str]) -> bool:
    """``--local``, or ``AVATARSDK_LOCAL=1`` unless credentials were given as flags."""
    if args.local:
        return True
    given_as_flags = any(getattr(args, name, None) for name in FLAGS)
    return environ.get(LOCAL_ENV, "") == "1" and not given_as_flags


def resolve_credentials(args: argparse.Namespace, fields: Sequence[str], environ: Dict[str, str]) -> Dict[str, str]:
    """Each field from its flag, else its ``AVATARSDK_*`` variable.

    Raises:
        UsageError: some are missing (the message names their variables and flags).
    """
    found = {name: getattr(args, name, None) or environ.get(ENV_VARS[name], "") for name in fields}
    missing = [name for name in fields if not found[name]]
    if missing:
        names = ", ".join(f"{ENV_VARS[name]} ({FLAGS[name]})" for name in missing)
        raise UsageError(f"missing credentials: set {names}, or use --local for the built-in stand-in")
    return found


def _credentials(args: argparse.Namespace, fields: Sequence[str], stack: ExitStack) -> Tuple[Dict[str, str], bool]:
    """The credentials to use, starting the stand-in (closed with ``stack``) for ``--local``."""
    environ = dict(os.environ)
    if not _wants_local(args, environ):
        return resolve_credentials(args, fields, environ), False
    service = stack.enter_context(_fake_service())
    credentials = service.credentials()
    return {name: credentials[name] for name in fields}, True


def _fake_service(port: int = 0, console_port: int = 0) -> Any:
    try:
        from .testing import FakeAvatarService  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise UsageError(TESTING_HINT) from exc
    return FakeAvatarService(port=port, console_port=console_port)


# ------------------------------------------------------------------------------------------- send


@dataclass
class _Request:
    """One file's request and what came back for it."""

    path: str
    pcm: bytes
    seconds: float
    keep_frames: bool
    req_id: str = ""
    started: float = 0.0
    frames: int = 0
    size: int = 0
    first_at: Optional[float] = None
    last_at: Optional[float] = None
    ended: bool = False
    saved: List[Tuple[bytes, bool]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def expected_frames(self) -> int:
        return max(1, round(self.seconds / FRAME_SECONDS))

    def add(self, frame: bytes, last: bool, now: float) -> None:
        self.frames += 1
        self.size += len(frame)
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.ended = self.ended or last
        if self.keep_frames:
            self.saved.append((frame, last))


class _Progress(Protocol):
    def start(self, req: _Request, chunk_ms: int) -> None: ...
    def frame(self) -> None: ...  # on the session's dispatcher thread
    def finish(self, req: _Request) -> None: ...


class _PlainProgress:
    """A line when a file starts and one when its last frame arrives."""

    def __init__(self, out: TextIO, count: int) -> None:
        self._out = out
        self._count = count
        self._number = 0

    def start(self, req: _Request, chunk_ms: int) -> None:
        self._number += 1
        _say(
            self._out,
            f"[{self._number}/{self._count}] {req.path}: {req.seconds:.2f} s of audio in chunks of {chunk_ms} ms",
        )

    def frame(self) -> None:
        pass

    def finish(self, req: _Request) -> None:
        state = "done" if req.ended else "incomplete"
        _say(
            self._out,
            f"[{self._number}/{self._count}] {req.path}: request {req.req_id or '-'} {state}, {req.frames} frames",
        )


class _BarProgress:
    """A tqdm bar per file: frames received out of those expected for its audio (25 per second)."""

    def __init__(self, out: TextIO, count: int, tqdm: Any) -> None:
        self._out = out
        self._count = count
        self._tqdm = tqdm
        self._number = 0
        self._bar: Any = None

    def start(self, req: _Request, chunk_ms: int) -> None:
        self._number += 1
        self._bar = self._tqdm(
            total=req.expected_frames,
            desc=f"[{self._number}/{self._count}] {os.path.basename(req.path)}",
            unit="frame",
            file=self._out,
            leave=True,
            dynamic_ncols=True,
        )

    def frame(self) -> None:
        bar = self._bar
        if bar is not None:
            bar.update(1)

    def finish(self, req: _Request) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            if req.ended:
                bar.total = bar.n  # the service decides the count; a finished request is 100 %
            bar.close()


def _progress(out: TextIO, count: int) -> _Progress:
    """A tqdm bar when ``out`` is a terminal and tqdm (extra ``cli``) is installed, else plain lines."""
    if out.isatty():
        try:
            from tqdm import tqdm  # noqa: PLC0415 - optional extra
        except ImportError:
            pass
        else:
            return _BarProgress(out, count, tqdm)
    return _PlainProgress(out, count)


def run_send(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``avatarsdk send FILE...``: one session, one request per file; a summary table at the end."""
    if args.chunk_ms <= 0:
        raise UsageError(f"--chunk-ms: expected a positive number of milliseconds, got {args.chunk_ms}")
    if not 0 < args.timeout <= 24 * 3600:
        raise UsageError(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    for path in args.files:
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such file")
    out_dir: Optional[Path] = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out: {out_dir} is not a directory")
    requests = []
    for path in args.files:
        try:
            pcm = load_audio(path, sample_rate=args.sample_rate)
        except (ValueError, ImportError) as exc:
            raise UsageError(str(exc)) from exc
        requests.append(_Request(path, pcm, len(pcm) / 2 / args.sample_rate, keep_frames=out_dir is not None))

    with ExitStack() as stack:
        credentials, local = _credentials(args, SESSION_FIELDS, stack)
        where = "built-in stand-in service" if local else urlsplit(credentials["ingress_endpoint_url"]).netloc
        _say(out, f"avatarsdk send: {len(requests)} file(s) to {where}")
        status, failure = _send_all(args, credentials, requests, out)
    _print_table(requests, out)
    if out_dir is not None:
        _save_frames(requests, out_dir, out)
    if failure is not None:
        _say(err, failure)
    return status


def _send_all(
    args: argparse.Namespace, credentials: Dict[str, str], requests: List[_Request], out: TextIO
) -> Tuple[int, Optional[str]]:
    """Run the session; return the exit status and the error line, if any."""
    lock = threading.Lock()
    current: List[_Request] = []
    errors: List[AvatarSDKError] = []
    progress = _progress(out, len(requests))

    def on_frame(frame: bytes, last: bool) -> None:
        now = time.perf_counter()
        with lock:
            req = current[-1] if current else None
            if req is not None:
                req.add(frame, last, now)
        if req is not None:
            progress.frame()
            if last:
                req.done.set()

    def on_error(error: AvatarSDKError) -> None:
        with lock:
            errors.append(error)
            req = current[-1] if current else None
        if req is not None:
            req.done.set()

    def on_close() -> None:
        with lock:
            req = current[-1] if current else None
        if req is not None:
            req.done.set()

    try:
        session = new_avatar_session(
            avatar_id=credentials["avatar_id"],
            api_key=credentials["api_key"],
            app_id=credentials["app_id"],
            console_endpoint_url=credentials["console_endpoint_url"],
            ingress_endpoint_url=credentials["ingress_endpoint_url"],
            expire_at=datetime.now(timezone.utc) + timedelta(hours=1),
            sample_rate=args.sample_rate,
            transport_frames=on_frame,
            on_error=on_error,
            on_close=on_close,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    try:
        try:
            session.init()
            connection_id = session.start()
            _say(out, f"connected: connection id {connection_id}")
            for req in requests:
                with lock:
                    current.append(req)
                progress.start(req, args.chunk_ms)
                req.started = time.perf_counter()
                for chunk, end in chunk_pcm(req.pcm, sample_rate=args.sample_rate, chunk_ms=args.chunk_ms):
                    req.req_id = session.send_audio(chunk, end=end)
                finished = req.done.wait(args.timeout)
                progress.finish(req)
                with lock:
                    failure = errors[0] if errors else None
                if failure is not None:
                    return EXIT_SERVICE, error_line(failure)
                if not finished:
                    return EXIT_SERVICE, (
                        f"error: timeout: no last frame for {req.path} (request {req.req_id}) within"
                        f" {args.timeout:g} s (hint: raise --timeout, or run with --verbose)"
                    )
                if not req.ended:
                    return EXIT_SERVICE, (
                        f"error: {_C.connectionClosed.value}: the service ended the session during {req.path}"
                        f" (hint: {HINTS[_C.connectionClosed]})"
                    )
        except AvatarSDKError as exc:
            with lock:
                first = errors[0] if errors else exc
            return EXIT_SERVICE, error_line(first)
    finally:
        session.close()
    return EXIT_OK, None


def _print_table(requests: List[_Request], out: TextIO) -> None:
    headers = ("file", "req_id", "audio", "frames", "bytes", "first frame", "duration")
    rows = []
    for req in requests:
        if not req.req_id:
            continue
        first = f"{(req.first_at - req.started) * 1000:.1f} ms" if req.first_at is not None else "-"
        total = f"{(req.last_at - req.started) * 1000:.1f} ms" if req.last_at is not None and req.ended else "-"
        rows.append((req.path, req.req_id, f"{req.seconds:.2f} s", str(req.frames), f"{req.size:,}", first, total))
    if not rows:
        return
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    left = (True, True, False, False, False, False, False)
    lines = [""]
    for row in (headers, *rows):
        cells = [cell.ljust(w) if is_left else cell.rjust(w) for cell, w, is_left in zip(row, widths, left)]
        lines.append("  ".join(cells).rstrip())
    _say(out, *lines)


def _save_frames(requests: List[_Request], out_dir: Path, out: TextIO) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for req in requests:
        if not req.req_id:
            continue
        target = out_dir / f"{Path(req.path).stem}.{req.req_id}.frames"
        with FrameWriter(target) as writer:
            for frame, last in req.saved:
                writer.write(frame, last)
        _say(out, f"saved {writer.frames} frames to {target}")


# ------------------------------------------------------------------------------------ serve-local


def run_serve_local(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``avatarsdk serve-local``: run the stand-in until Ctrl-C or SIGTERM, after printing how to reach it."""
    for name, value in (("--port", args.port), ("--console-port", args.console_port)):
        if not 0 <= value <= 65535:
            raise UsageError(f"{name}: expected a port from 0 (any free one) to 65535, got {value}")
    stop = threading.Event()
    restore = _on_signals(stop)
    try:
        try:
            service = _fake_service(port=args.port, console_port=args.console_port).start()
        except OSError as exc:
            raise UsageError(f"cannot listen on 127.0.0.1 ({exc.strerror or exc})") from exc
        with service:
            _say(
                out,
                "avatarsdk stand-in service running (Ctrl-C or SIGTERM stops it)",
                f"  console  {service.console_url}",
                f"  ingress  {service.ingress_url}",
                "credentials (its own test values; paste into a shell to use them):",
                *(f"export {ENV_VARS[name]}={shlex.quote(value)}" for name, value in service.credentials().items()),
                "ready",
            )
            stop.wait()
    finally:
        restore()
    _say(out, "stopped")
    return EXIT_OK


def _on_signals(stop: threading.Event) -> Callable[[], None]:
    """Make SIGINT and SIGTERM set ``stop``; return what undoes it (nothing off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


# ------------------------------------------------------------------------------------------ token


def run_token(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``avatarsdk token``: request a session token and print its expiry (the token only with --show)."""
    if not 0 < args.expires_in <= MAX_EXPIRES_IN:
        raise UsageError(f"--expires-in: expected 1 to {MAX_EXPIRES_IN} seconds (24 h), got {args.expires_in}")
    with ExitStack() as stack:
        credentials, _ = _credentials(args, TOKEN_FIELDS, stack)
        try:
            console = check_url("console_endpoint_url", credentials["console_endpoint_url"], ("http", "https"))
            api_key = check_text("api_key", credentials["api_key"], secret=True, header=True)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from exc
        expire_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=args.expires_in)
        try:
            token = request_session_token(console, api_key=api_key, expire_at=expire_at, timeout=(5.0, 15.0))
        except AvatarSDKError as exc:
            _say(err, error_line(exc))
            return EXIT_SERVICE
    _say(
        out,
        f"session token from {urlsplit(console).netloc}: expires {expire_at:%Y-%m-%d %H:%M:%S} UTC"
        f" (in {args.expires_in} s)",
        token if args.show else "(the token is not shown; --show prints it)",
    )
    return EXIT_OK


# ----------------------------------------------------------------------------------------- parsers


def _add_credentials(parser: argparse.ArgumentParser, fields: Sequence[str]) -> None:
    group = parser.add_argument_group(
        "credentials", "each flag overrides its environment variable; --local uses the built-in stand-in instead"
    )
    for name in fields:
        group.add_argument(FLAGS[name], dest=name, metavar="VALUE", help=f"default: ${ENV_VARS[name]}")
    group.add_argument(
        "--local",
        action="store_true",
        help=f"use the built-in stand-in service (also {LOCAL_ENV}=1; needs the testing extra)",
    )


def _guarded(run: Callable[[argparse.Namespace, TextIO, TextIO], int]) -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        try:
            return run(args, sys.stdout, sys.stderr)
        except UsageError as exc:
            _say(sys.stderr, f"error: {exc}")
            return EXIT_USAGE
        except KeyboardInterrupt:
            _say(sys.stderr, "interrupted")
            return EXIT_INTERRUPTED

    return call


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Register ``send``, ``serve-local`` and ``token`` (``common`` carries ``--verbose``)."""
    send = subparsers.add_parser(
        "send",
        parents=[common],
        help="send audio files to the service (one request per file) and report what came back",
        description="For each file: load it (WAV; MP3/OGG/FLAC/M4A with the audio extra), send it in chunks as "
        "one request, wait for its last animation frame. One session for all files.",
    )
    send.add_argument("files", nargs="+", metavar="FILE", help="audio files")
    send.add_argument(
        "--sample-rate",
        type=int,
        default=16000,
        choices=PCM_SAMPLE_RATES,
        metavar="HZ",
        help="session sample rate; files are converted to it (default 16000)",
    )
    send.add_argument("--chunk-ms", type=int, default=20, metavar="MS", help="audio per send_audio (default 20)")
    send.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="wait for each request's last frame (default 30)"
    )
    send.add_argument("--out", metavar="DIR", help="save each request's frames to DIR/<file>.<req_id>.frames")
    _add_credentials(send, SESSION_FIELDS)
    send.set_defaults(func=_guarded(run_send))

    serve = subparsers.add_parser(
        "serve-local",
        parents=[common],
        help="run the built-in stand-in service and print its URLs and credentials",
        description="Runs avatarsdk.testing.FakeAvatarService (testing extra) until Ctrl-C or SIGTERM.",
    )
    serve.add_argument("--port", type=int, default=0, help="ingress port (default 0: a free one)")
    serve.add_argument("--console-port", type=int, default=0, help="console port (default 0: a free one)")
    serve.set_defaults(func=_guarded(run_serve_local))

    token = subparsers.add_parser(
        "token",
        parents=[common],
        help="request a session token and print when it expires",
        description="Requests a session token from the console API. The token itself is printed only with --show.",
    )
    token.add_argument(
        "--expires-in", type=int, default=3600, metavar="S", help="token lifetime in seconds (default 3600, max 86400)"
    )
    token.add_argument("--show", action="store_true", help="print the token (a secret) on the last line")
    _add_credentials(token, TOKEN_FIELDS)
    token.set_defaults(func=_guarded(run_token))
