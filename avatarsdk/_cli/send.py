"""``avatarsdk send FILE...``: one session, one request per file (``AvatarSession.open_request()``), a progress
line or bar per file, a summary table at the end, and ``--out DIR`` to save each request's frames."""

from __future__ import annotations

import argparse
import os
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO, Tuple
from urllib.parse import urlsplit

from .. import (
    AvatarRequest,
    AvatarSDKError,
    AvatarSDKErrorCode,
    AvatarSession,
    FrameWriter,
    RequestTimeoutError,
    iter_audio,
    new_avatar_session,
)
from .._validation import PCM_SAMPLE_RATES
from .common import (
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_USAGE,
    HINTS,
    SESSION_FIELDS,
    OutputError,
    UsageError,
    add_credentials,
    credentials,
    error_line,
    ms,
    say,
    tls_options,
)
from .interrupt import Interrupt
from .progress import FileRequest, Progress, progress


def run(args: argparse.Namespace, out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
    """``avatarsdk send FILE...``: one session, one request per file; a summary table at the end.

    In order: the arguments and files are checked, then the credentials (and TLS options), then each file's
    header (nothing is decoded beyond its first chunk), and only then the session starts; each file is
    decoded while it is sent, one at a time."""
    out_dir = _check_args(args)
    network = tls_options(args, err)
    with ExitStack() as stack:
        found, local = credentials(args, SESSION_FIELDS, stack)
        requests = [_probe(path, args, keep_frames=out_dir is not None) for path in args.files]
        errors = _Errors()
        session = _session(args, found, network, errors)
        ingress = found.get("ingress_endpoint_url")
        where = urlsplit(ingress).netloc if ingress else f"region {found.get('region')}"
        where = "built-in stand-in service" if local else where
        say(out, f"avatarsdk send: {len(requests)} file(s) to {where}")
        with interrupt.stopping(session.close):  # Ctrl-C: its waits for frames end at once
            status, failure = _send_all(session, args, requests, out, errors)
    _print_table(requests, out)
    if out_dir is not None:
        _save_frames(requests, out_dir, out)
    if failure is not None:
        say(err, failure)
    return status


def _check_args(args: argparse.Namespace) -> Optional[Path]:
    """Check the arguments and that each file is a non-empty file; return ``--out``'s directory, if given."""
    if args.chunk_ms <= 0:
        raise UsageError(f"--chunk-ms: expected a positive number of milliseconds, got {args.chunk_ms}")
    if not 0 < args.timeout <= 24 * 3600:
        raise UsageError(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    for path in args.files:
        if os.path.isdir(path):
            raise UsageError(f"{path}: is a directory; give the audio files in it")
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such file")
        if os.path.getsize(path) == 0:
            raise UsageError(f"{path}: the file is empty")
    out_dir: Optional[Path] = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out: {out_dir} is not a directory")
    return out_dir


def _probe(path: str, args: argparse.Namespace, *, keep_frames: bool) -> FileRequest:
    """Read a file's header (and its first chunk) to fail before connecting; the file is opened again to send."""
    try:
        with iter_audio(path, sample_rate=args.sample_rate, chunk_ms=args.chunk_ms) as audio:
            return FileRequest(path, audio.duration, audio.source, audio.decoder, keep_frames)
    except (ValueError, ImportError, OSError) as exc:
        raise UsageError(str(exc)) from exc


def _session(
    args: argparse.Namespace, found: Dict[str, str], network: Dict[str, Any], errors: _Errors
) -> AvatarSession:
    try:
        return new_avatar_session(
            avatar_id=found["avatar_id"],
            api_key=found["api_key"],
            app_id=found["app_id"],
            console_endpoint_url=found.get("console_endpoint_url", ""),
            ingress_endpoint_url=found.get("ingress_endpoint_url", ""),
            region=found.get("region"),
            sample_rate=args.sample_rate,
            on_error=errors,
            **network,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc


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
    session: AvatarSession, args: argparse.Namespace, requests: List[FileRequest], out: TextIO, errors: _Errors
) -> Tuple[int, Optional[str]]:
    """Run the session; return the exit status and the error line, if any (the session's first error, which
    ``on_error`` reports, before what a request lacked)."""
    shown = progress(out, len(requests))
    try:
        session.init()
        connection_id = session.start()
        say(out, f"connected: connection id {connection_id}")
        for req in requests:
            failure = _send_file(session, req, args, shown, errors)
            first = errors.first
            if first is not None:
                return EXIT_SERVICE, error_line(first)
            if failure is not None:
                return failure
    except AvatarSDKError as exc:
        return EXIT_SERVICE, error_line(errors.first or exc)
    finally:
        session.close()
    return EXIT_OK, None


class _Sender:
    """The thread that decodes one file and sends it as the request's chunks while the main thread takes the
    frames. A failure to read the file (``decode_error``) or to send (``send_error``) closes the request, so
    that its frames are no longer waited for; a send refused because the request was closed ends it quietly."""

    def __init__(self, request: AvatarRequest, req: FileRequest, args: argparse.Namespace, shown: Progress) -> None:
        self.decode_error: Optional[Exception] = None
        self.send_error: Optional[AvatarSDKError] = None
        self._request = request
        self._req = req
        self._args = args
        self._shown = shown
        self._thread = threading.Thread(target=self._run, name="avatarsdk-cli-send", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        req, request = self._req, self._request
        try:
            audio = iter_audio(req.path, sample_rate=self._args.sample_rate, chunk_ms=self._args.chunk_ms)
        except (ValueError, ImportError, OSError) as exc:
            self.decode_error = exc
            request.close()
            return
        with audio:
            while True:
                try:
                    chunk, end = next(audio)
                except StopIteration:
                    break
                except (ValueError, OSError) as exc:
                    self.decode_error = exc
                    request.close()
                    return
                try:
                    request.send(chunk, end=end)
                except AvatarSDKError as exc:
                    self.send_error = exc
                    request.close()
                    return
                except ValueError:  # closed by the main thread: a timeout, the session's error, Ctrl-C
                    return
                req.sent = audio.decoded
                self._progress()
        req.seconds = req.sent
        req.all_sent.set()

    def _progress(self) -> None:
        try:
            self._shown.sent(self._req)
        except OutputError:  # the main thread meets it too, and ends the command
            pass

    def join(self) -> None:
        """Wait for the thread (the request is done or closed: its sends end quickly)."""
        self._thread.join(10.0)


def _send_file(
    session: AvatarSession, req: FileRequest, args: argparse.Namespace, shown: Progress, errors: _Errors
) -> Optional[Tuple[int, str]]:
    """Send one file as one request while taking its frames; return the exit status and error line if its
    last frame did not come (no frame for ``--timeout`` seconds, the file could not be read, or the session
    ended first)."""
    shown.start(req, args.chunk_ms)
    req.started = time.perf_counter()
    timed_out = False
    with session.open_request(frame_timeout=args.timeout) as request:
        req.req_id = request.req_id
        sender: Optional[_Sender] = None
        try:
            if errors.follow(request):
                sender = _Sender(request, req, args, shown)
                timed_out = _take_frames(request, req, shown)
        finally:
            errors.follow(None)
            request.close()
            if sender is not None:
                sender.join()
    shown.finish(req)
    if sender is not None and sender.decode_error is not None:
        return EXIT_USAGE, f"error: {sender.decode_error}"
    if sender is not None and sender.send_error is not None and errors.first is None:
        return EXIT_SERVICE, error_line(sender.send_error)
    if timed_out:
        return EXIT_SERVICE, (
            f"error: timeout: no frame for {args.timeout:g} s, so no last frame for {req.path} (request"
            f" {req.req_id}) (hint: raise --timeout, or run with --verbose)"
        )
    if not req.ended and errors.first is None:
        closed = AvatarSDKErrorCode.connectionClosed
        return EXIT_SERVICE, (
            f"error: {closed.value}: the service ended the session during {req.path} (hint: {HINTS[closed]})"
        )
    return None


def _take_frames(request: AvatarRequest, req: FileRequest, shown: Progress) -> bool:
    """Take the request's frames until its last; return whether ``--timeout`` passed first."""
    try:
        for frame in request:
            req.add(frame.data, frame.last, time.perf_counter())
            shown.frame(req)
    except RequestTimeoutError:
        return True
    except (AvatarSDKError, ValueError):  # the session ended first, or on_error (or the sender) closed it
        return False
    return False


def _print_table(requests: List[FileRequest], out: TextIO) -> None:
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


def _save_frames(requests: List[FileRequest], out_dir: Path, out: TextIO) -> None:
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
    "For each file: decode it while sending it in chunks as one request (WAV; MP3/OGG/FLAC/M4A with the "
    "audio extra, whose FFmpeg also decodes WAV faster), and take its animation frames until the last. One "
    "session for all files; it is billed for every second it is connected."
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
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="give up on a request when no frame comes for S seconds (default 30)",
    )
    parser.add_argument("--out", metavar="DIR", help="save each request's frames to DIR/<file>.<req_id>.frames")
    add_credentials(parser, SESSION_FIELDS)
