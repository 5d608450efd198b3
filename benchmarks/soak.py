"""The soak benchmark: ``python -m benchmarks soak`` (``--help`` lists the options; CI does not run it).

``--sessions`` avatarsdk sessions (20) in this process each receive ``--fps`` animation frames a second (25)
from the benchmark server (``server.py``, in its own process) for ``--duration`` seconds (60). Every session
keeps sending utterances of 16 kHz PCM in real time, ``--chunk-ms`` of audio per ``send_audio()``, the
last chunk of each with ``end=True``; the server answers each utterance with a paced stream as long as the
utterance (``--utterance`` seconds), which plays while the next utterance's audio goes out, so the frames
never stop. One driver thread sends every session's audio.

This process's RSS, threads and open file descriptors are sampled before any session (baseline), at the
start (``--warmup`` seconds after every session has its first frame), every ``--interval`` seconds, at the
end, and once every session is closed. Every frame is checked on arrival: its connection (the session's
own), its request (one this session sent, not already ended) and its slot in the request's stream (the
server stamps each frame with its slot: no slot may be skipped or repeated); each request must end with
all of its frames. Callback lag (callback time - the server's send time) goes into a histogram, and the
server's own counters (``GET /bench/stats``) show what it sent.

Exit status 1 if a frame was lost, misrouted or out of order, an error reached ``on_error`` (or a send or a
start failed), the threads or fds differ between start and end, or they are not back to the baseline after
``close()``. RSS growth is reported, not judged.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import math
import os
import resource
import sys
import threading
import time
import urllib.request
from array import array
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from .client import API_KEY, APP_ID, AVATAR_ID, SAMPLE_RATE
from .run import ServerProcess, _table, machine_info
from .wire import MESSAGE_SERVER_RESPONSE_ANIMATION, SCHEDULED_FIELD, SENT_FIELD, parse_fields

monotonic_ns = time.monotonic_ns

LAG_BUCKET_NS = 50_000  # callback lag histogram: 50 us buckets
LAG_BUCKETS = 20_000  # up to 1 s; later frames share the last bucket (their maximum is kept exactly)
DRAIN_GRACE_S = 5.0  # after the last utterance's stream is due to end
SETTLE_S = 0.5  # after close(), before the last sample (threads leave the OS's list a little after join)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks soak",
        description="Soak avatarsdk: N sessions streaming paced frames for a while; RSS, threads and fds at"
        " start and end, every frame checked.",
    )
    parser.add_argument("--sessions", type=int, default=20, help="sessions in this process (20)")
    parser.add_argument("--fps", type=float, default=25.0, help="frames per second per session (25)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds from the start to the end sample (60)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (10)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of streaming before the start sample (5)")
    parser.add_argument("--utterance", type=float, default=2.0, help="seconds of audio per utterance (2)")
    parser.add_argument("--chunk-ms", type=int, default=100, help="milliseconds of audio per send_audio() (100)")
    parser.add_argument("--frame-size", type=int, default=1200, help="bytes per animation frame (1200)")
    parser.add_argument(
        "--dispatch-threads",
        type=int,
        default=0,
        help="run the callbacks on a SharedDispatcher of N threads (0: a thread per session, the default)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the samples and counters to FILE as JSON")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.chunk_ms < 1 or args.dispatch_threads < 0:
        parser.error("--sessions and --chunk-ms must be at least 1, --dispatch-threads at least 0")
    if min(args.fps, args.duration, args.interval, args.utterance) <= 0 or args.warmup < 0:
        parser.error("--fps, --duration, --interval and --utterance must be above 0, --warmup at least 0")
    if args.frame_size < 128:
        parser.error("--frame-size must be at least 128")
    args.frames_per_utterance = max(1, round(args.utterance * args.fps))
    args.utterance = args.frames_per_utterance / args.fps  # the audio lasts exactly as long as its frames
    return args


# ------------------------------------------------------------------------------------ process usage


@dataclass
class Sample:
    label: str
    t: Optional[float]  # seconds since the start sample
    rss_kib: int
    threads_py: int  # threading.active_count()
    threads_os: int  # /proc/self/status Threads
    fds: int  # entries of /proc/self/fd (-1: not available)
    frames: int  # frames received so far, all sessions
    lag_max_ms: float  # longest callback lag since the previous sample
    gc_ms: float  # the gc.collect() before the sample (it holds the GIL: callbacks wait meanwhile)
    objects: int  # objects the garbage collector tracks, after it ran


def _proc_status() -> Dict[str, int]:
    """VmRSS (KiB) and Threads of /proc/self/status (empty where there is no /proc)."""
    found: Dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "Threads"):
                    found[name] = int(value.split()[0])
    except OSError:
        pass
    return found


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))  # the listing's own fd included, every time alike
    except OSError:
        return -1


def take_sample(label: str, t: Optional[float], frames: int, lag_max_ms: float) -> Sample:
    gc0 = time.perf_counter()
    gc.collect()
    gc_ms = (time.perf_counter() - gc0) * 1000
    status = _proc_status()
    rss = status.get("VmRSS")
    if rss is None:  # no /proc: the peak RSS is the best there is (KiB on Linux, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = peak // 1024 if sys.platform == "darwin" else peak
    return Sample(
        label=label,
        t=t,
        rss_kib=rss,
        threads_py=threading.active_count(),
        threads_os=status.get("Threads", -1),
        fds=_open_fds(),
        frames=frames,
        lag_max_ms=lag_max_ms,
        gc_ms=gc_ms,
        objects=len(gc.get_objects()),
    )


# ------------------------------------------------------------------------------------------ frames


def parse_frame(frame: bytes) -> Tuple[bytes, bytes, int, int]:
    """``(connection_id, req_id, scheduled_ns, sent_ns)`` of a paced benchmark frame (``wire.animation_frame``)."""
    envelope = parse_fields(frame)
    animation = envelope.get(6)
    if envelope.get(1) != MESSAGE_SERVER_RESPONSE_ANIMATION or not isinstance(animation, bytes):
        raise ValueError("not an animation frame")
    fields = parse_fields(animation)
    connection_id, req_id = fields.get(1, b""), fields.get(2, b"")
    scheduled, sent = fields.get(SCHEDULED_FIELD, 0), fields.get(SENT_FIELD, 0)
    if not (isinstance(connection_id, bytes) and isinstance(req_id, bytes) and req_id):
        raise ValueError("no req_id")
    if not (isinstance(scheduled, int) and isinstance(sent, int) and sent):
        raise ValueError("no send time")
    return connection_id, req_id, scheduled, sent


class Tracker:
    """One session's callbacks (on its dispatcher thread) and counters. Nothing here grows with the run's
    length: requests are forgotten once ended (the last few are remembered to catch late frames), lags go to
    a fixed histogram."""

    __slots__ = (
        "closes",
        "completed",
        "connection_id",
        "disorder",
        "ended",
        "error_count",
        "errors",
        "extra",
        "first_frame",
        "gaps",
        "interval_ns",
        "lag",
        "lag_max",
        "malformed",
        "misrouted",
        "open",
        "per_request",
        "received",
        "short",
        "triggers",
        "valid",
        "window_max",
    )

    def __init__(self, per_request: int, interval_ns: int) -> None:
        self.per_request = per_request
        self.interval_ns = interval_ns
        self.connection_id = b""
        self.open: Dict[bytes, List[int]] = {}  # req_id -> [frames, last slot]
        self.ended: Deque[bytes] = deque(maxlen=16)
        self.received = 0  # every frame delivered
        self.valid = 0  # frames in their place: own connection, open request, a later slot
        self.completed = 0  # requests whose last frame came after all the others
        self.short = 0  # requests that ended with frames missing
        self.extra = 0  # requests that ended with more frames than sent
        self.gaps = 0  # slots skipped within a request's stream
        self.disorder = 0  # a slot at or before the previous one, or a frame after its request's last
        self.misrouted = 0  # another connection's frame
        self.malformed = 0
        self.triggers = 0  # end=True chunks sent (the driver thread writes it)
        self.error_count = 0
        self.errors: List[str] = []  # the first few
        self.closes = 0
        self.lag = array("q", bytes(8 * (LAG_BUCKETS + 1)))
        self.lag_max = 0
        self.window_max = 0  # reset by each sample
        self.first_frame = threading.Event()

    def on_frame(self, frame: bytes, last: bool) -> None:
        now = monotonic_ns()
        self.received += 1
        try:
            connection_id, req_id, slot, sent = parse_frame(frame)
        except (IndexError, ValueError):
            self.malformed += 1
            return
        lag = max(0, now - sent)
        self.lag[min(lag // LAG_BUCKET_NS, LAG_BUCKETS)] += 1
        self.lag_max = max(self.lag_max, lag)
        self.window_max = max(self.window_max, lag)
        if not self.first_frame.is_set():
            self.first_frame.set()
        if connection_id != self.connection_id:
            self.misrouted += 1
            return
        state = self.open.get(req_id)
        if state is None:
            if req_id in self.ended:
                self.disorder += 1
                return
            state = self.open[req_id] = [1, slot]
        else:
            step = slot - state[1]
            if step <= 0:
                self.disorder += 1
                return
            self.gaps += round(step / self.interval_ns) - 1
            state[0] += 1
            state[1] = slot
        self.valid += 1
        if last:
            del self.open[req_id]
            self.ended.append(req_id)
            if state[0] == self.per_request:
                self.completed += 1
            elif state[0] < self.per_request:
                self.short += 1
            else:
                self.extra += 1

    def on_error(self, error: BaseException) -> None:
        self.error_count += 1
        if len(self.errors) < 3:
            self.errors.append(f"{type(error).__name__}: {error}")

    def on_close(self) -> None:
        self.closes += 1

    def take_window_max(self) -> int:
        value, self.window_max = self.window_max, 0
        return value


def lag_percentiles(trackers: Sequence[Tracker], qs: Sequence[float]) -> List[float]:
    """The ``qs``-th percentiles of every session's callback lag, in ms (the upper edge of a bucket)."""
    merged = [sum(column) for column in zip(*(t.lag for t in trackers))]
    total = sum(merged)
    worst = max(t.lag_max for t in trackers) / 1e6
    result: List[float] = []
    for q in qs:
        rank, seen, value = max(1, math.ceil(total * q / 100)), 0, math.nan
        for bucket, count in enumerate(merged):
            seen += count
            if seen >= rank:
                value = worst if bucket == LAG_BUCKETS else min(worst, (bucket + 1) * LAG_BUCKET_NS / 1e6)
                break
        result.append(value)
    return result


# ------------------------------------------------------------------------------------------ driver


class Driver:
    """One thread sending every session's audio in real time: utterance ``k`` of session ``i`` starts at
    ``t0 + offset_i + k * utterance``, each chunk goes out when its audio would be complete, and the last
    one carries ``end=True`` (the server's trigger). Sessions are offset across one frame interval so their
    streams are not in phase. After :meth:`stop` each session finishes its utterance and starts no other."""

    def __init__(self, sessions: Sequence[Any], trackers: Sequence[Tracker], args: argparse.Namespace) -> None:
        self.sessions = sessions
        self.trackers = trackers
        samples = round(SAMPLE_RATE * args.utterance)
        step = max(1, SAMPLE_RATE * args.chunk_ms // 1000)
        bounds = [*range(0, samples, step), samples]
        self.chunks = [bytes(2 * (b - a)) for a, b in zip(bounds, bounds[1:])]
        self.due = [b / SAMPLE_RATE for b in bounds[1:]]  # seconds after the utterance's start
        self.utterance = args.utterance
        self.offset = 1 / args.fps / len(sessions)
        self.failures: List[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-driver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        t0 = time.monotonic() + 0.05
        chunks, due, last = self.chunks, self.due, len(self.chunks) - 1
        # (send time, session, chunk index, the utterance's start)
        heap: List[Tuple[float, int, int, float]] = []
        for i in range(len(self.sessions)):
            start = t0 + i * self.offset
            heap.append((start + due[0], i, 0, start))
        heapq.heapify(heap)
        while heap:
            when, i, j, start = heapq.heappop(heap)
            pause = when - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                self.sessions[i].send_audio(chunks[j], end=j == last)
            except Exception as exc:  # noqa: BLE001 - counted and reported; this session sends no more
                self.failures.append(f"session {i + 1}: send_audio: {type(exc).__name__}: {exc}")
                continue
            if j < last:
                heapq.heappush(heap, (start + due[j + 1], i, j + 1, start))
                continue
            self.trackers[i].triggers += 1
            if not self._stop.is_set():
                start += self.utterance
                heapq.heappush(heap, (start + due[0], i, 0, start))


# ------------------------------------------------------------------------------------------- soak


def _server_stats(server: ServerProcess) -> Dict[str, int]:
    with urllib.request.urlopen(f"{server.base_url}/bench/stats", timeout=10) as response:
        return {k: int(v) for k, v in json.loads(response.read()).items()}


def _new_session(server: ServerProcess, url: str, tracker: Tracker, dispatcher: Any = None) -> Any:
    from avatarsdk import new_avatar_session  # noqa: PLC0415 - imported once the server is up, like client.py

    return new_avatar_session(
        avatar_id=AVATAR_ID,
        api_key=API_KEY,
        app_id=APP_ID,
        expire_at=datetime.now(timezone.utc) + timedelta(hours=1),
        console_endpoint_url=f"{server.base_url}/console",
        ingress_endpoint_url=url,
        transport_frames=tracker.on_frame,
        on_error=tracker.on_error,
        on_close=tracker.on_close,
        dispatcher=dispatcher,
    )


def _start_sessions(
    server: ServerProcess, url: str, trackers: Sequence[Tracker], into: List[Any], dispatcher: Any
) -> None:
    for tracker in trackers:
        session = _new_session(server, url, tracker, dispatcher)
        into.append(session)
        session.init()
        tracker.connection_id = session.start().encode()


def _close_sessions(sessions: List[Any]) -> bool:
    """Close every session (in order) and forget them; whether each had ended."""
    for session in sessions:
        session.close()
    closed = all(session.closed for session in sessions)
    sessions.clear()
    return closed


def _progress(started: float, text: str) -> None:
    print(f"[{time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)


def _sample_text(s: Sample) -> str:
    return (
        f"{s.label}: RSS {s.rss_kib / 1024:.1f} MiB, threads {s.threads_py}/{s.threads_os}, fds {s.fds},"
        f" objects {s.objects:,}, frames {s.frames:,}"
    )


def soak(args: argparse.Namespace, server: ServerProcess, started: float) -> Dict[str, Any]:
    interval_ns = round(1e9 / args.fps)
    per_request = args.frames_per_utterance
    url = server.ingress_url("paced", frames=per_request, size=args.frame_size, interval_us=interval_ns // 1000)

    # A first session loads what the SDK loads lazily (and fills its pools) before the baseline.
    warm_tracker = Tracker(3, interval_ns)
    warm = _new_session(server, server.ingress_url("paced", frames=3, size=args.frame_size), warm_tracker)
    warm.init()
    warm_tracker.connection_id = warm.start().encode()
    warm.send_audio(bytes(640), end=True)
    if not warm_tracker.first_frame.wait(10):
        raise RuntimeError("the warm-up session received no frame")
    time.sleep(0.2)
    warm.close()
    del warm
    time.sleep(SETTLE_S)
    samples = [take_sample("baseline", None, 0, math.nan)]
    _progress(started, _sample_text(samples[0]))
    stats0 = _server_stats(server)

    trackers = [Tracker(per_request, interval_ns) for _ in range(args.sessions)]
    dispatcher = None
    if args.dispatch_threads:
        from avatarsdk import SharedDispatcher  # noqa: PLC0415 - imported once the server is up, like client.py

        dispatcher = SharedDispatcher(args.dispatch_threads)
    sessions: List[Any] = []
    failures: List[str] = []
    driver: Optional[Driver] = None
    result: Dict[str, Any] = {}

    def frames() -> int:
        return sum(t.received for t in trackers)

    def window_lag_ms() -> float:
        return max(t.take_window_max() for t in trackers) / 1e6

    try:
        wall0 = time.perf_counter()
        _start_sessions(server, url, trackers, sessions, dispatcher)
        result["start_s"] = time.perf_counter() - wall0
        driver = Driver(sessions, trackers, args)
        driver.start()
        first_wait = args.utterance + 10.0
        for i, tracker in enumerate(trackers):
            if not tracker.first_frame.wait(max(0.0, first_wait - (time.perf_counter() - wall0))):
                failures.append(f"session {i + 1}: no frame within {first_wait:g} s of the first utterance")
        _progress(started, f"{args.sessions} sessions started in {result['start_s']:.2f} s and streaming")
        time.sleep(args.warmup)
        window_lag_ms()  # the start sample's window begins here
        t0 = time.monotonic()
        cpu0, times0, server_cpu0 = time.process_time(), os.times(), server.cpu_seconds()
        samples.append(take_sample("start", 0.0, frames(), math.nan))
        _progress(started, _sample_text(samples[-1]))
        marks = [k * args.interval for k in range(1, math.ceil(args.duration / args.interval))] + [args.duration]
        for mark in marks:
            pause = t0 + mark - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            label = "end" if mark == args.duration else f"t={mark:g}s"
            samples.append(take_sample(label, time.monotonic() - t0, frames(), window_lag_ms()))
            _progress(started, _sample_text(samples[-1]))
        elapsed = time.monotonic() - t0
        cpu1, times1, server_cpu1 = time.process_time(), os.times(), server.cpu_seconds()
        result.update(
            soak_s=elapsed,
            cpu_util=(cpu1 - cpu0) / elapsed,
            cpu_user_s=times1.user - times0.user,
            cpu_system_s=times1.system - times0.system,
            server_cpu_util=(server_cpu1 - server_cpu0) / elapsed,
        )

        # Drain: utterances in progress finish, their streams play out.
        driver.stop()
        deadline = time.monotonic() + 2 * args.utterance + DRAIN_GRACE_S
        if not driver.join(max(0.0, deadline - time.monotonic())):
            failures.append("the driver thread did not finish its last utterances")
        while time.monotonic() < deadline:
            if all(t.completed + t.short + t.extra >= t.triggers and not t.open for t in trackers):
                break
            time.sleep(0.05)
        stats1 = _server_stats(server)
    finally:
        if driver is not None:
            driver.stop()
        close0 = time.perf_counter()
        all_closed = _close_sessions(sessions)
        if dispatcher is not None:
            dispatcher.close()
        result["close_s"] = time.perf_counter() - close0
        if driver is not None:
            driver.join(args.utterance + 1)
            driver.sessions = ()
    time.sleep(SETTLE_S)
    samples.append(take_sample("after close", None, frames(), window_lag_ms()))
    _progress(started, _sample_text(samples[-1]))

    triggers = sum(t.triggers for t in trackers)
    expected = triggers * per_request
    valid = sum(t.valid for t in trackers)
    result.update(
        sessions=args.sessions,
        dispatch_threads=args.dispatch_threads,
        samples=[asdict(s) for s in samples],
        triggers=triggers,
        frames_expected=expected,
        frames_received=frames(),
        frames_valid=valid,
        frames_lost=max(0, expected - valid),
        gaps=sum(t.gaps for t in trackers),
        out_of_order=sum(t.disorder for t in trackers),
        misrouted=sum(t.misrouted for t in trackers),
        malformed=sum(t.malformed for t in trackers),
        requests_completed=sum(t.completed for t in trackers),
        requests_short=sum(t.short for t in trackers),
        requests_extra=sum(t.extra for t in trackers),
        requests_open=sum(len(t.open) for t in trackers),
        frames_per_session_min=min(t.received for t in trackers),
        frames_per_session_max=max(t.received for t in trackers),
        server_streams=stats1["streams"] - stats0["streams"],
        server_frames_sent=stats1["frames_sent"] - stats0["frames_sent"],
        server_frames_unsent=stats1["frames_unsent"] - stats0["frames_unsent"],
        lag_max_ms=max(t.lag_max for t in trackers) / 1e6,
        errors=sum(t.error_count for t in trackers),
        error_samples=[e for t in trackers for e in t.errors][:5],
        send_failures=(driver.failures if driver is not None else [])[:5],
        send_failure_count=len(driver.failures) if driver is not None else 0,
        failures=failures,
        on_close_calls=sum(t.closes for t in trackers),
        all_closed=all_closed,
    )
    result["lag_p50_ms"], result["lag_p99_ms"], result["lag_p999_ms"] = lag_percentiles(trackers, (50, 99, 99.9))
    return result


# ----------------------------------------------------------------------------------------- report


def _growth(a: int, b: int) -> str:
    return f"{(b - a) / 1024:+.1f} MiB ({(b - a) / a * 100:+.1f}%)" if a > 0 else "n/a"


def verdict(r: Dict[str, Any]) -> Tuple[bool, List[str]]:
    """Whether the run passes, and what failed."""
    by = {s["label"]: s for s in r["samples"]}
    base, start, end, after = by["baseline"], by["start"], by["end"], by["after close"]
    problems: List[str] = []
    for key, name in (("threads_py", "Python threads"), ("threads_os", "OS threads"), ("fds", "fds")):
        if start[key] != end[key]:
            problems.append(f"{name} {start[key]} at start, {end[key]} at end")
        if after[key] != base[key]:
            problems.append(f"{name} {after[key]} after close, {base[key]} at baseline (leaked)")
    if r["frames_lost"]:
        problems.append(f"{r['frames_lost']:,} frames lost")
    for key, name in (
        ("out_of_order", "frames out of order"),
        ("misrouted", "frames of another connection"),
        ("malformed", "unreadable frames"),
        ("gaps", "slots skipped"),
        ("requests_short", "requests ended with frames missing"),
        ("requests_extra", "requests ended with extra frames"),
        ("requests_open", "requests never ended"),
        ("errors", "errors on on_error"),
        ("send_failure_count", "failed sends"),
    ):
        if r[key]:
            problems.append(f"{r[key]:,} {name}")
    problems += r["failures"]
    if r["on_close_calls"] != r["sessions"] or not r["all_closed"]:
        problems.append(f"on_close ran {r['on_close_calls']} times for {r['sessions']} sessions")
    return not problems, problems


def report(args: argparse.Namespace, r: Dict[str, Any], info: Dict[str, str], elapsed: float) -> bool:
    out: List[str] = ["avatarsdk soak benchmark", "=" * 24]
    for key, value in info.items():
        out.append(f"{key + ':':24}{value}")
    out.append(
        f"{'run:':24}{args.sessions} sessions x {args.fps:g} fps for {args.duration:g} s (after {args.warmup:g} s of"
        f" warm-up); utterances of {args.utterance:g} s ({args.frames_per_utterance} frames of {args.frame_size} B),"
        f" sent in {args.chunk_ms} ms chunks in real time; samples every {args.interval:g} s; callbacks on"
        + (
            f" a SharedDispatcher of {args.dispatch_threads} threads"
            if args.dispatch_threads
            else " a thread per session"
        )
    )
    out.append("")
    samples = r["samples"]
    start = next(s for s in samples if s["label"] == "start")
    rows: List[List[str]] = []
    previous: Optional[Dict[str, Any]] = None
    for s in samples:
        streaming = s["t"] is not None
        rate = "-"
        if streaming and previous is not None and previous["t"] is not None and s["t"] > previous["t"]:
            rate = f"{(s['frames'] - previous['frames']) / (s['t'] - previous['t']):,.1f}"
        rows.append(
            [
                s["label"],
                "-" if s["t"] is None else f"{s['t']:.1f}",
                f"{s['rss_kib'] / 1024:.1f}",
                f"{(s['rss_kib'] - start['rss_kib']) / 1024:+.2f}",
                str(s["threads_py"]),
                str(s["threads_os"]),
                str(s["fds"]),
                f"{s['frames']:,}",
                rate,
                "-" if math.isnan(s["lag_max_ms"]) or not streaming else f"{s['lag_max_ms']:.1f}",
                f"{s['objects']:,}",
                f"{s['gc_ms']:.1f}",
            ]
        )
        previous = s
    out.append(
        _table(
            [
                "sample",
                "t (s)",
                "RSS MiB",
                "vs start",
                "threads",
                "OS threads",
                "fds",
                "frames recv",
                "frames/s",
                "max lag ms",
                "objects",
                "gc ms",
            ],
            rows,
        )
    )
    out.append(
        f"(frames/s: all sessions over the preceding interval, {args.sessions * args.fps:,.0f} meant; max lag: the"
        " longest callback lag in it; objects: tracked by the garbage collector; gc ms: the gc.collect() before the"
        " sample, which callbacks wait for)"
    )
    out.append("")
    by = {s["label"]: s for s in samples}
    base, end, after = by["baseline"], by["end"], by["after close"]
    lines = [
        ("RSS start -> end", f"{start['rss_kib'] / 1024:.1f} -> {end['rss_kib'] / 1024:.1f} MiB, "
         + _growth(start["rss_kib"], end["rss_kib"])),
        ("RSS baseline -> after close", f"{base['rss_kib'] / 1024:.1f} -> {after['rss_kib'] / 1024:.1f} MiB, "
         + _growth(base["rss_kib"], after["rss_kib"])),
        ("threads (Python/OS)", f"baseline {base['threads_py']}/{base['threads_os']}, start"
         f" {start['threads_py']}/{start['threads_os']}, end {end['threads_py']}/{end['threads_os']}, after close"
         f" {after['threads_py']}/{after['threads_os']}"),
        ("open fds", f"baseline {base['fds']}, start {start['fds']}, end {end['fds']}, after close {after['fds']}"),
        ("frames", f"{r['frames_valid']:,} received in order of {r['frames_expected']:,} expected"
         f" ({r['triggers']:,} utterances x {args.frames_per_utterance}); server sent {r['server_frames_sent']:,}"
         f" in {r['server_streams']:,} streams ({r['server_frames_unsent']:,} unsent)"),
        ("frames lost / out of order", f"{r['frames_lost']:,} lost, {r['gaps']:,} slots skipped,"
         f" {r['out_of_order']:,} out of order, {r['misrouted']:,} misrouted, {r['malformed']:,} unreadable"),
        ("requests", f"{r['requests_completed']:,} complete, {r['requests_short']:,} short,"
         f" {r['requests_extra']:,} with extra frames, {r['requests_open']:,} never ended"),
        ("frames per session", f"{r['frames_per_session_min']:,} - {r['frames_per_session_max']:,}"),
        ("callback lag p50/p99/p99.9/max", f"{r['lag_p50_ms']:.2f} / {r['lag_p99_ms']:.2f} /"
         f" {r['lag_p999_ms']:.2f} / {r['lag_max_ms']:.2f} ms (callback time - server send time)"),
        ("CPU while soaking", f"client {r['cpu_util'] * 100:.1f}% of one core (user {r['cpu_user_s']:.2f} s, system"
         f" {r['cpu_system_s']:.2f} s), server {r['server_cpu_util'] * 100:.1f}%"),
        ("start / close", f"{args.sessions} sessions started in {r['start_s']:.2f} s, closed in {r['close_s']:.2f} s;"
         f" on_close {r['on_close_calls']}/{args.sessions}"),
        ("errors", f"{r['errors']} on on_error, {r['send_failure_count']} failed sends"),
    ]  # fmt: skip
    out += [f"{name + ':':32}{value}" for name, value in lines]
    for text in r["error_samples"] + r["send_failures"] + r["failures"]:
        out.append(f"error: {text}")
    ok, problems = verdict(r)
    out.append("")
    summary = (
        f"RSS {_growth(start['rss_kib'], end['rss_kib'])} start->end;"
        f" threads {start['threads_os']}->{end['threads_os']}, after close {after['threads_os']}"
        f" (baseline {base['threads_os']}); fds {start['fds']}->{end['fds']}, after close {after['fds']}"
        f" (baseline {base['fds']}); {r['frames_lost']:,} of {r['frames_expected']:,} frames lost;"
        f" {r['errors'] + r['send_failure_count']} errors"
    )
    out.append(f"verdict: {'PASS' if ok else 'FAIL'}: {summary}")
    for problem in problems:
        out.append(f"  FAIL: {problem}")
    out.append(f"total time {elapsed:.1f} s.")
    print("\n".join(out), flush=True)
    return ok


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    info = machine_info()
    server = ServerProcess(None)
    try:
        result = soak(args, server, started)
    finally:
        server.close()
    elapsed = time.perf_counter() - started
    ok = report(args, result, info, elapsed)
    if args.json:
        document = {"machine": info, "config": vars(args), "result": result, "pass": ok, "elapsed_s": elapsed}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
