"""``avatarsdk send``'s progress display: what one file's request is (:class:`FileRequest`), and a tqdm bar per
file on a terminal or plain lines elsewhere. ``sent`` runs on the thread that decodes and sends the file, every
other method on the command's main thread; a lock keeps their lines apart."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, List, Optional, Protocol, TextIO, Tuple

from .common import say

FRAME_SECONDS = 0.04  # the service sends 25 animation frames per second of audio
QUARTER_LINES_FROM = 10.0  # plain output: a line per quarter of the audio sent, for files at least this long


@dataclass
class FileRequest:
    """One file's request and what came back for it. ``sent`` (seconds of audio sent) is written by the
    sending thread and read by the main thread."""

    path: str
    seconds: Optional[float]  # from the file's header, until all of it is sent
    source: str
    decoder: str
    keep_frames: bool
    req_id: str = ""
    sent: float = 0.0
    all_sent: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0
    frames: int = 0
    size: int = 0
    first_at: Optional[float] = None
    last_at: Optional[float] = None
    ended: bool = False
    saved: List[Tuple[bytes, bool]] = field(default_factory=list)

    @property
    def expected_frames(self) -> Optional[int]:
        return None if self.seconds is None else max(1, round(self.seconds / FRAME_SECONDS))

    def add(self, frame: bytes, last: bool, now: float) -> None:
        self.frames += 1
        self.size += len(frame)
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.ended = self.ended or last
        if self.keep_frames:
            self.saved.append((frame, last))


class Progress(Protocol):
    def start(self, req: FileRequest, chunk_ms: int) -> None: ...
    def sent(self, req: FileRequest) -> None: ...
    def frame(self, req: FileRequest) -> None: ...
    def finish(self, req: FileRequest) -> None: ...


def _audio(req: FileRequest) -> str:
    length = "audio of unknown length" if req.seconds is None else f"{req.seconds:.2f} s of audio"
    decoder = "FFmpeg" if req.decoder == "ffmpeg" else "pure Python"
    return f"{length} ({req.source}; decoded by {decoder} while it is sent)"


class PlainProgress:
    """A line when a file starts, one per quarter of a long file's audio sent, and one when its last frame
    arrives."""

    def __init__(self, out: TextIO, count: int) -> None:
        self._out = out
        self._count = count
        self._number = 0
        self._quarter = 0
        self._lock = threading.Lock()

    def start(self, req: FileRequest, chunk_ms: int) -> None:
        self._number += 1
        self._quarter = 0
        say(self._out, f"[{self._number}/{self._count}] {req.path}: {_audio(req)}, in chunks of {chunk_ms} ms")

    def sent(self, req: FileRequest) -> None:
        if req.seconds is None or req.seconds < QUARTER_LINES_FROM:
            return
        quarter = min(4, int(req.sent / req.seconds * 4))
        if quarter > self._quarter:
            self._quarter = quarter
            with self._lock:
                say(
                    self._out,
                    f"[{self._number}/{self._count}] {req.path}: {req.sent:.1f} of {req.seconds:.1f} s sent, "
                    f"{req.frames} frames back",
                )

    def frame(self, req: FileRequest) -> None:
        pass

    def finish(self, req: FileRequest) -> None:
        state = "done" if req.ended else "incomplete"
        with self._lock:
            say(
                self._out,
                f"[{self._number}/{self._count}] {req.path}: request {req.req_id or '-'} {state}, {req.frames} frames",
            )


class BarProgress:
    """A tqdm bar per file: frames received out of those expected for its audio (25 per second), and the
    audio sent so far."""

    def __init__(self, out: TextIO, count: int, tqdm: Any) -> None:
        self._out = out
        self._count = count
        self._tqdm = tqdm
        self._number = 0
        self._shown = -1
        self._bar: Any = None

    def start(self, req: FileRequest, chunk_ms: int) -> None:
        self._number += 1
        self._shown = -1
        self._bar = self._tqdm(
            total=req.expected_frames,
            desc=f"[{self._number}/{self._count}] {os.path.basename(req.path)}",
            unit="frame",
            file=self._out,
            leave=True,
            dynamic_ncols=True,
        )

    def sent(self, req: FileRequest) -> None:
        bar = self._bar
        if bar is not None and int(req.sent) != self._shown:
            self._shown = int(req.sent)
            bar.set_postfix_str(f"{self._shown} s sent")  # tqdm's own lock orders the refreshes

    def frame(self, req: FileRequest) -> None:
        bar = self._bar
        if bar is not None:
            bar.update(1)

    def finish(self, req: FileRequest) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            if req.ended:
                bar.total = bar.n  # the service decides the count; a finished request is 100 %
            bar.set_postfix_str("", refresh=False)
            bar.close()


def progress(out: TextIO, count: int) -> Progress:
    """A tqdm bar when ``out`` is a terminal and tqdm (extra ``cli``) is installed, else plain lines."""
    if out.isatty():
        try:
            from tqdm import tqdm  # noqa: PLC0415 - optional extra
        except ImportError:
            pass
        else:
            return BarProgress(out, count, tqdm)
    return PlainProgress(out, count)
