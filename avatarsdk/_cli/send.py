"""``avatarsdk send FILE...``: one session, one request per file (``AvatarSession.open_request()``), a progress
line or bar per file, a summary table at the end, and ``--out DIR`` to save each request's frames."""

from __future__ import annotations

import argparse
import os
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, TextIO, Tuple
from urllib.parse import urlsplit

from .. import (
    AvatarRequest,
    AvatarSDKError,
    AvatarSDKErrorCode,
    AvatarSession,
    FrameWriter,
    RequestTimeoutError,
    chunk_pcm,
    load_audio,
    new_avatar_session,
)
from .._validation import PCM_SAMPLE_RATES
from .common import (
    EXIT_OK,
    EXIT_SERVICE,
    HINTS,
    SESSION_FIELDS,
    UsageError,
    add_credentials,
    credentials,
    error_line,
    ms,
    say,
)

FRAME_SECONDS = 0.04  # the service sends 25 animation frames per second of audio


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


# --------------------------------------------------------------------------------------- progress


class _Progress(Protocol):
    def start(self, req: _Request, chunk_ms: int) -> None: ...
    def frame(self) -> None: ...
    def finish(self, req: _Request) -> None: ...


class _PlainProgress:
    """A line when a file starts and one when its last frame arrives."""

    def __init__(self, out: TextIO, count: int) -> None:
        self._out = out
        self._count = count
        self._number = 0

    def start(self, req: _Request, chunk_ms: int) -> None:
        self._number += 1
        say(
            self._out,
            f"[{self._number}/{self._count}] {req.path}: {req.seconds:.2f} s of audio in chunks of {chunk_ms} ms",
        )

    def frame(self) -> None:
        pass

    def finish(self, req: _Request) -> None:
        state = "done" if req.ended else "incomplete"
        say(
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


# ------------------------------------------------------------------------------------------- send


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``avatarsdk send FILE...``: one session, one request per file; a summary table at the end."""
    out_dir = _check_args(args)
    requests = []
    for path in args.files:
        try:
            pcm = load_audio(path, sample_rate=args.sample_rate)
        except (ValueError, ImportError) as exc:
            raise UsageError(str(exc)) from exc
        requests.append(_Request(path, pcm, len(pcm) / 2 / args.sample_rate, keep_frames=out_dir is not None))

    with ExitStack() as stack:
        found, local = credentials(args, SESSION_FIELDS, stack)
        ingress = found.get("ingress_endpoint_url")
        where = urlsplit(ingress).netloc if ingress else f"region {found.get('region')}"
        where = "built-in stand-in service" if local else where
        say(out, f"avatarsdk send: {len(requests)} file(s) to {where}")
        status, failure = _send_all(args, found, requests, out)
    _print_table(requests, out)
    if out_dir is not None:
        _save_frames(requests, out_dir, out)
    if failure is not None:
        say(err, failure)
    return status


def _check_args(args: argparse.Namespace) -> Optional[Path]:
    """Check the arguments but the files' contents; return ``--out``'s directory, if given."""
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
    return out_dir


class _Errors:
    """The session's ``on_error`` (on its dispatcher thread): keeps what it reports and closes the request
    being followed, so that its frames are no longer waited for (the run stops at the first error)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reported: List[AvatarSDKError] = []
        self._following: Optional[AvatarRequest] = None

    def __call__(self, error: AvatarSDKError) -> None:
        with self._lock:
            self._reported.append(error)
            request = self._following
        if request is not None:
            request.close()

    @property
    def first(self) -> Optional[AvatarSDKError]:
        with self._lock:
            return self._reported[0] if self._reported else None

    def follow(self, request: Optional[AvatarRequest]) -> bool:
        """Close ``request`` on the next error (``None``: none); ``False`` if an error came already."""
        with self._lock:
            self._following = request
            return not self._reported


def _send_all(
    args: argparse.Namespace, found: Dict[str, str], requests: List[_Request], out: TextIO
) -> Tuple[int, Optional[str]]:
    """Run the session; return the exit status and the error line, if any (the session's first error, which
    ``on_error`` reports, before what a request lacked)."""
    errors = _Errors()
    try:
        session = new_avatar_session(
            avatar_id=found["avatar_id"],
            api_key=found["api_key"],
            app_id=found["app_id"],
            console_endpoint_url=found.get("console_endpoint_url", ""),
            ingress_endpoint_url=found.get("ingress_endpoint_url", ""),
            region=found.get("region"),
            sample_rate=args.sample_rate,
            on_error=errors,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    progress = _progress(out, len(requests))
    try:
        session.init()
        connection_id = session.start()
        say(out, f"connected: connection id {connection_id}")
        for req in requests:
            failure = _send_file(session, req, args, progress, errors)
            first = errors.first
            if first is not None:
                return EXIT_SERVICE, error_line(first)
            if failure is not None:
                return EXIT_SERVICE, failure
    except AvatarSDKError as exc:
        return EXIT_SERVICE, error_line(errors.first or exc)
    finally:
        session.close()
    return EXIT_OK, None


def _send_file(
    session: AvatarSession, req: _Request, args: argparse.Namespace, progress: _Progress, errors: _Errors
) -> Optional[str]:
    """Send one file as one request and take its frames; return the error line if its last frame did not
    come (``--timeout`` seconds after the request opened, or the session ended first)."""
    progress.start(req, args.chunk_ms)
    req.started = time.perf_counter()
    timed_out = False
    with session.open_request(frame_timeout=None, deadline=args.timeout) as request:
        for chunk, end in chunk_pcm(req.pcm, sample_rate=args.sample_rate, chunk_ms=args.chunk_ms):
            request.send(chunk, end=end)
            req.req_id = request.req_id
        try:
            timed_out = errors.follow(request) and _take_frames(request, req, progress)
        finally:
            errors.follow(None)
    progress.finish(req)
    if timed_out:
        return (
            f"error: timeout: no last frame for {req.path} (request {req.req_id}) within"
            f" {args.timeout:g} s (hint: raise --timeout, or run with --verbose)"
        )
    if not req.ended:
        closed = AvatarSDKErrorCode.connectionClosed
        return f"error: {closed.value}: the service ended the session during {req.path} (hint: {HINTS[closed]})"
    return None


def _take_frames(request: AvatarRequest, req: _Request, progress: _Progress) -> bool:
    """Take the request's frames until its last; return whether ``--timeout`` passed first."""
    try:
        for frame in request:
            req.add(frame.data, frame.last, time.perf_counter())
            progress.frame()
    except RequestTimeoutError:
        return True
    except (AvatarSDKError, ValueError):  # the session ended first, or on_error closed the request
        return False
    return False


def _print_table(requests: List[_Request], out: TextIO) -> None:
    headers = ("file", "req_id", "audio", "frames", "bytes", "first frame", "duration")
    rows = []
    for req in requests:
        if not req.req_id:
            continue
        first = ms(req.first_at - req.started) if req.first_at is not None else "-"
        total = ms(req.last_at - req.started) if req.last_at is not None and req.ended else "-"
        rows.append((req.path, req.req_id, f"{req.seconds:.2f} s", str(req.frames), f"{req.size:,}", first, total))
    if not rows:
        return
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    left = (True, True, False, False, False, False, False)
    lines = [""]
    for row in (headers, *rows):
        cells = [cell.ljust(w) if is_left else cell.rjust(w) for cell, w, is_left in zip(row, widths, left)]
        lines.append("  ".join(cells).rstrip())
    say(out, *lines)


def _save_frames(requests: List[_Request], out_dir: Path, out: TextIO) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for req in requests:
        if not req.req_id:
            continue
        target = out_dir / f"{Path(req.path).stem}.{req.req_id}.frames"
        with FrameWriter(target) as writer:
            for frame, last in req.saved:
                writer.write(frame, last)
        say(out, f"saved {writer.frames} frames to {target}")


# ----------------------------------------------------------------------------------------- parser


NAME = "send"
HELP = "send audio files to the service (one request per file) and report what came back"
DESCRIPTION = (
    "For each file: load it (WAV; MP3/OGG/FLAC/M4A with the audio extra), send it in chunks as "
    "one request, wait for its last animation frame. One session for all files."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``send``'s arguments."""
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files")
    parser.add_argument(
        "--sample-rate",
        type=int,
        default=16000,
        choices=PCM_SAMPLE_RATES,
        metavar="HZ",
        help="session sample rate; files are converted to it (default 16000)",
    )
    parser.add_argument("--chunk-ms", type=int, default=20, metavar="MS", help="audio per send_audio (default 20)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="wait for each request's last frame (default 30)"
    )
    parser.add_argument("--out", metavar="DIR", help="save each request's frames to DIR/<file>.<req_id>.frames")
    add_credentials(parser, SESSION_FIELDS)
