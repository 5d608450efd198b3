"""One client running one workload, in a fresh process: ``python -m benchmarks.client CLIENT WORKLOAD PARAMS``.

CLIENT is ``bare`` (a hand-written websocket-client loop, no SDK), ``avatarkit`` (the official asyncio SDK)
or ``avatarsdk``; WORKLOAD is ``throughput``, ``latency``, ``start`` or ``audio`` (every client), or ``idle``
or ``scale`` (avatarsdk only); PARAMS is a JSON object built by ``run.py``. The result is printed as one
line, ``RESULT {json}``. Only the client's own library is imported, so the process's CPU time and memory are
that client's alone.

Every client hands each animation frame to the same :meth:`Collector.on_frame` (the SDKs as their
``transport_frames`` callback; the bare loop after ``Message.FromString``), so the work per frame outside
the client is identical.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

from .stats import median, percentile
from .wire import check_frame_times_layout, frame_times, sdk_module, ws_frame_header

Params = Dict[str, Any]
Result = Dict[str, Any]

API_KEY = "bench-api-key"
APP_ID = "bench-app"
AVATAR_ID = "bench-avatar"
SAMPLE_RATE = 16000
TRIGGER_PCM = bytes(640)  # 20 ms of 16 kHz silence, sent with end=True
BARE_REQ_ID = "20250101000000_benchbenchbe"  # the service's req_id format (a bare client makes its own)

perf_counter = time.perf_counter
process_time = time.process_time
monotonic_ns = time.monotonic_ns


class Collector:
    """What every client's frame handler does: count frames, time the last one, optionally record latency."""

    __slots__ = ("count", "done", "end_cpu", "end_wall", "lags", "latencies")

    def __init__(self) -> None:
        self.done: Callable[[], None] = _nothing
        self.reset(latency=False)

    def reset(self, latency: bool) -> None:
        self.count = 0
        self.end_wall = 0.0
        self.end_cpu = 0.0
        self.latencies: Optional[List[int]] = [] if latency else None
        self.lags: List[int] = []

    def on_frame(self, frame: bytes, last: bool) -> None:
        latencies = self.latencies
        if latencies is not None:
            now = monotonic_ns()
            if not latencies:
                check_frame_times_layout(frame)
            scheduled, sent = frame_times(frame)
            latencies.append(now - sent)
            self.lags.append(sent - scheduled)  # the server's own lateness, to show it is not the bottleneck
        self.count += 1
        if last:
            self.end_wall = perf_counter()
            self.end_cpu = process_time()
            self.done()

    def throughput(self, expected: int, wall0: float, cpu0: float) -> Result:
        _check_count(self.count, expected)
        wall, cpu = self.end_wall - wall0, self.end_cpu - cpu0
        return {
            "frames": self.count,
            "wall_s": wall,
            "fps": self.count / wall,
            "cpu_s": cpu,
            "cpu_per_1000": cpu / self.count * 1000,
        }

    def latency(self, expected: int) -> Result:
        _check_count(self.count, expected)
        assert self.latencies is not None
        ms = [ns / 1e6 for ns in self.latencies]
        return {
            "samples": len(ms),
            "p50_ms": percentile(ms, 50),
            "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99),
            "max_ms": max(ms),
            "server_lag_max_ms": max(self.lags) / 1e6,
        }


def _nothing() -> None:
    pass


def _check_count(count: int, expected: int) -> None:
    if count != expected:
        raise RuntimeError(f"received {count} frames, expected {expected}")


def _audio_result(chunks: int, chunk_ms: int, collector: Collector, wall0: float, cpu0: float) -> Result:
    wall, cpu = collector.end_wall - wall0, collector.end_cpu - cpu0
    audio_s = chunks * chunk_ms / 1000
    return {
        "chunks": chunks,
        "audio_s": audio_s,
        "wall_s": wall,
        "realtime_factor": audio_s / wall,
        "cpu_s": cpu,
        "cpu_per_1000": cpu / chunks * 1000,
    }


def _start_result(samples: List[float]) -> Result:
    ms = [s * 1000 for s in samples]
    return {"samples_ms": ms, "median_ms": median(ms), "min_ms": min(ms)}


def _sdk_kwargs(p: Params) -> Dict[str, Any]:
    return {
        "avatar_id": AVATAR_ID,
        "api_key": API_KEY,
        "app_id": APP_ID,
        "expire_at": datetime.now(timezone.utc) + timedelta(hours=1),
        "console_endpoint_url": p["console_url"],
        "ingress_endpoint_url": p["ingress_url"],
    }


def _chunks(p: Params) -> Tuple[int, bytes]:
    chunk_ms = int(p["chunk_ms"])
    count = max(1, round(float(p["audio_seconds"]) * 1000 / chunk_ms))
    return count, bytes(SAMPLE_RATE * 2 * chunk_ms // 1000)


# ------------------------------------------------------------------------------------------- bare


def _bare_proto() -> ModuleType:
    """avatarsdk's generated protobuf module, loaded from its file without importing the SDK itself."""
    return sdk_module(os.path.join("_proto", "ingress_v2_pb2.py"), "bench_ingress_v2_pb2")


class Bare:
    """The hand-written loop: websocket-client and the generated protobuf classes, nothing else."""

    def __init__(self, p: Params) -> None:
        import websocket  # noqa: PLC0415 - each client process imports only its own library

        self.websocket = websocket
        self.pb = _bare_proto()
        self.p = p
        base = p["ingress_url"].replace("http://", "ws://", 1).rstrip("/")
        self.url = f"{base}/websocket?id={AVATAR_ID}"
        pb = self.pb
        self.configure = pb.Message(
            type=pb.MESSAGE_CLIENT_CONFIGURE_SESSION,
            client_configure_session=pb.ClientConfigureSession(sample_rate=SAMPLE_RATE),
        ).SerializeToString()

    def token(self) -> str:
        request = urllib.request.Request(
            self.p["console_url"].rstrip("/") + "/session-tokens",
            data=json.dumps({"appId": APP_ID, "expireAt": int(time.time()) + 3600}).encode(),  # as the SDK sends it
            headers={"X-Api-Key": API_KEY, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.loads(response.read())["sessionToken"])

    def connect(self, token: str, timeout: Optional[float] = None) -> Any:
        ws = self.websocket.create_connection(
            self.url, header=[f"X-App-ID: {APP_ID}", f"X-Session-Key: {token}"], timeout=timeout
        )
        ws.send_binary(self.configure)
        reply = self.pb.Message.FromString(ws.recv())
        if reply.type != self.pb.MESSAGE_SERVER_CONFIRM_SESSION or not reply.server_confirm_session.connection_id:
            raise RuntimeError(f"handshake failed: {reply}")
        return ws

    def audio(self, pcm: bytes, end: bool) -> bytes:
        pb = self.pb
        return pb.Message(
            type=pb.MESSAGE_CLIENT_AUDIO_INPUT,
            client_audio_input=pb.ClientAudioInput(req_id=BARE_REQ_ID, audio=pcm, end=end),
        ).SerializeToString()

    def receive(self, ws: Any, on_frame: Callable[[bytes, bool], None]) -> None:
        """``recv()`` and parse until the frame with ``end``."""
        recv = ws.recv
        parse = self.pb.Message.FromString
        animation = self.pb.MESSAGE_SERVER_RESPONSE_ANIMATION
        while True:
            data = recv()
            msg = parse(data)
            if msg.type == animation:
                last = msg.server_response_animation.end
                on_frame(data, last)
                if last:
                    return


def bare_stream(p: Params, latency: bool) -> Result:
    bare = Bare(p)
    ws = bare.connect(bare.token())
    collector = Collector()
    if p["warmup"]:
        ws.send_binary(bare.audio(TRIGGER_PCM, True))
        bare.receive(ws, collector.on_frame)
    collector.reset(latency)
    cpu0, wall0 = process_time(), perf_counter()
    ws.send_binary(bare.audio(TRIGGER_PCM, True))
    bare.receive(ws, collector.on_frame)
    ws.close()
    return collector.latency(p["frames"]) if latency else collector.throughput(p["frames"], wall0, cpu0)


def bare_start(p: Params) -> Result:
    """connect + handshake as the issue's baseline has it (no timeout), and, alternately, with the finite
    connect timeout every SDK call has (avatarsdk's default, 10 s) for reference."""
    bare = Bare(p)
    samples: List[float] = []
    with_timeout: List[float] = []
    for i in range(p["iterations"] + 1):  # the first is a warm-up
        for timeout, into in ((None, samples), (10.0, with_timeout)):
            token = bare.token()
            wall0 = perf_counter()
            ws = bare.connect(token, timeout)
            wall1 = perf_counter()
            ws.close()
            if i:
                into.append(wall1 - wall0)
    result = _start_result(samples)
    result["median_timeout_ms"] = median(s * 1000 for s in with_timeout)
    return result


def bare_audio(p: Params) -> Result:
    bare = Bare(p)
    ws = bare.connect(bare.token())
    collector = Collector()
    count, pcm = _chunks(p)
    send = ws.send_binary
    cpu0, wall0 = process_time(), perf_counter()
    for i in range(count):
        send(bare.audio(pcm, i == count - 1))
    bare.receive(ws, collector.on_frame)
    ws.close()
    return _audio_result(count, p["chunk_ms"], collector, wall0, cpu0)


def raw_throughput(p: Params) -> Result:
    """The server's ceiling, not a client: websocket-client for the handshake, then ``recv_into`` counting bytes.

    Every frame of a burst has the same length, so the bytes expected are known; nothing is parsed.
    """
    bare = Bare(p)
    ws = bare.connect(bare.token())
    sock = ws.sock
    frame_bytes = p["frame_size"] + len(ws_frame_header(p["frame_size"]))
    buf = bytearray(1 << 20)

    def drain(frames: int) -> None:
        want = frames * frame_bytes
        while want > 0:
            got = sock.recv_into(buf)
            if not got:
                raise EOFError("the server closed the connection")
            want -= got
        if want:
            raise RuntimeError("received more bytes than the burst holds")

    if p["warmup"]:
        ws.send_binary(bare.audio(TRIGGER_PCM, True))
        drain(p["warmup"])
    cpu0, wall0 = process_time(), perf_counter()
    ws.send_binary(bare.audio(TRIGGER_PCM, True))
    drain(p["frames"])
    wall, cpu = perf_counter() - wall0, process_time() - cpu0
    ws.close()
    frames = p["frames"]
    return {"frames": frames, "wall_s": wall, "fps": frames / wall, "cpu_s": cpu, "cpu_per_1000": cpu / frames * 1000}


# -------------------------------------------------------------------------------------- avatarkit


def avatarkit_stream(p: Params, latency: bool) -> Result:
    from avatarkit import new_avatar_session  # noqa: PLC0415 - each client process imports only its own library

    async def run() -> Result:
        done = asyncio.Event()
        collector = Collector()
        collector.done = done.set
        session = new_avatar_session(**_sdk_kwargs(p), transport_frames=collector.on_frame)
        await session.init()
        await session.start()
        if p["warmup"]:
            await session.send_audio(TRIGGER_PCM, end=True)
            await asyncio.wait_for(done.wait(), p["timeout"])
            done.clear()
        collector.reset(latency)
        cpu0, wall0 = process_time(), perf_counter()
        await session.send_audio(TRIGGER_PCM, end=True)
        await asyncio.wait_for(done.wait(), p["timeout"])
        await session.close()
        return collector.latency(p["frames"]) if latency else collector.throughput(p["frames"], wall0, cpu0)

    return asyncio.run(run())


def avatarkit_start(p: Params) -> Result:
    from avatarkit import new_avatar_session  # noqa: PLC0415 - each client process imports only its own library

    async def run() -> Result:
        samples = []
        for i in range(p["iterations"] + 1):
            session = new_avatar_session(**_sdk_kwargs(p))
            await session.init()
            wall0 = perf_counter()
            await session.start()
            wall1 = perf_counter()
            await session.close()
            if i:
                samples.append(wall1 - wall0)
        return _start_result(samples)

    return asyncio.run(run())


def avatarkit_audio(p: Params) -> Result:
    from avatarkit import new_avatar_session  # noqa: PLC0415 - each client process imports only its own library

    async def run() -> Result:
        done = asyncio.Event()
        collector = Collector()
        collector.done = done.set
        session = new_avatar_session(**_sdk_kwargs(p), transport_frames=collector.on_frame)
        await session.init()
        await session.start()
        count, pcm = _chunks(p)
        send_audio = session.send_audio
        cpu0, wall0 = process_time(), perf_counter()
        for i in range(count):
            await send_audio(pcm, end=i == count - 1)
        await asyncio.wait_for(done.wait(), p["timeout"])
        await session.close()
        return _audio_result(count, p["chunk_ms"], collector, wall0, cpu0)

    return asyncio.run(run())


# -------------------------------------------------------------------------------------- avatarsdk


def avatarsdk_stream(p: Params, latency: bool) -> Result:
    from avatarsdk import new_avatar_session  # noqa: PLC0415 - each client process imports only its own library

    done = threading.Event()
    collector = Collector()
    collector.done = done.set
    session = new_avatar_session(**_sdk_kwargs(p), transport_frames=collector.on_frame)
    session.init()
    session.start()
    if p["warmup"]:
        session.send_audio(TRIGGER_PCM, end=True)
        _wait(done, p["timeout"])
        done.clear()
    collector.reset(latency)
    cpu0, wall0 = process_time(), perf_counter()
    session.send_audio(TRIGGER_PCM, end=True)
    _wait(done, p["timeout"])
    session.close()
    return collector.latency(p["frames"]) if latency else collector.throughput(p["frames"], wall0, cpu0)


def avatarsdk_start(p: Params) -> Result:
    from avatarsdk import new_avatar_session  # noqa: PLC0415 - each client process imports only its own library

    samples = []
    for i in range(p["iterations"] + 1):
        session = new_avatar_session(**_sdk_kwargs(p))
        session.init()
        wall0 = perf_counter()
        session.start()
        wall1 = perf_counter()
        session.close()
        if i:
            samples.append(wall1 - wall0)
    return _start_result(samples)


def avatarsdk_audio(p: Params) -> Result:
    from avatarsdk import new_avatar_session  # noqa: PLC0415 - each client process imports only its own library

    done = threading.Event()
    collector = Collector()
    collector.done = done.set
    session = new_avatar_session(**_sdk_kwargs(p), transport_frames=collector.on_frame)
    session.init()
    session.start()
    count, pcm = _chunks(p)
    send_audio = session.send_audio
    cpu0, wall0 = process_time(), perf_counter()
    for i in range(count):
        send_audio(pcm, end=i == count - 1)
    _wait(done, p["timeout"])
    session.close()
    return _audio_result(count, p["chunk_ms"], collector, wall0, cpu0)


def _wait(event: threading.Event, timeout: float) -> None:
    if not event.wait(timeout):
        raise TimeoutError(f"no last frame within {timeout}s")


def _process_usage() -> Tuple[int, int]:
    """(RSS bytes, OS threads) of this process."""
    import psutil  # noqa: PLC0415 - only the scale tests need it

    proc = psutil.Process()
    return int(proc.memory_info().rss), int(proc.num_threads())


def _context_switches() -> int:
    """Voluntary and involuntary context switches of all this process's threads so far (Linux; else 0)."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/status", encoding="ascii") as f:
                for line in f:
                    if "ctxt_switches:" in line:  # voluntary_ and nonvoluntary_
                        total += int(line.split()[-1])
        except OSError:
            continue
    return total


def avatarsdk_idle(p: Params) -> Result:
    """``sessions`` started, idle sessions in one process: RSS and OS threads added per session."""
    from avatarsdk import new_avatar_session  # noqa: PLC0415 - each client process imports only its own library

    warm = new_avatar_session(**_sdk_kwargs(p))  # first use: lazy imports, pools, one thread pair come and go
    warm.init()
    warm.start()
    warm.close()
    gc.collect()
    time.sleep(0.1)
    rss0, threads0 = _process_usage()
    sessions = []
    for _ in range(p["sessions"]):
        session = new_avatar_session(**_sdk_kwargs(p))
        session.init()
        session.start()
        sessions.append(session)
    time.sleep(float(p["settle_s"]))
    gc.collect()
    rss1, threads1 = _process_usage()
    for session in sessions:
        session.close()
    count = len(sessions)
    return {
        "sessions": count,
        "threads_per_session": (threads1 - threads0) / count,
        "rss_kib_per_session": (rss1 - rss0) / 1024 / count,
        "threads_before": threads0,
        "rss_mib_before": rss0 / 2**20,
    }


class _ScaleCollector:
    __slots__ = ("count", "delays", "finished", "server_lags")

    def __init__(self, finished: Callable[[], None]) -> None:
        self.count = 0
        self.delays: List[int] = []  # callback - server send: the client's own delay
        self.server_lags: List[int] = []  # server send - schedule: the server's lateness
        self.finished = finished

    def on_frame(self, frame: bytes, last: bool) -> None:
        now = monotonic_ns()
        if not self.delays:
            check_frame_times_layout(frame)
        scheduled, sent = frame_times(frame)
        self.delays.append(now - sent)
        self.server_lags.append(sent - scheduled)
        self.count += 1
        if last:
            self.finished()


def avatarsdk_scale(p: Params) -> Result:
    """``sessions`` sessions in one process, each receiving a paced stream: do they keep up with real time?

    Sessions start one after another; then each sends its trigger, the triggers spread evenly over one frame
    interval (independent users are not in phase; ``aligned`` sends them back to back instead), and the server
    starts each stream ``delay_us`` after its trigger. A frame's delay
    is callback time - the server's send time (the client's own falling behind); the server's lateness (send
    time - the frame's slot) is reported apart, and both add up to the lag behind the stream's schedule.
    """
    from avatarsdk import SharedDispatcher, new_avatar_session  # noqa: PLC0415 - each client imports only its own

    # dispatch_threads > 0: every session's callbacks on one SharedDispatcher; 0: a dispatcher thread per session.
    threads = int(p["dispatch_threads"])
    dispatcher = SharedDispatcher(threads) if threads else None

    frames = int(p["frames"])
    interval = p["interval_us"] / 1e6
    all_done = threading.Event()
    finished_lock = threading.Lock()
    progress = {"finished": 0, "target": -1}
    end: Dict[str, Any] = {}

    def one_finished() -> None:
        with finished_lock:
            progress["finished"] += 1
            if progress["finished"] == progress["target"]:
                # Measured here, on a thread that is running: with ~1,000 busy threads the main thread can wait
                # seconds for the GIL after a sleep or wait, so its clock readings would come late.
                end.update(wall=perf_counter(), cpu=process_time(), times=os.times(), switches=_context_switches())
                all_done.set()

    rss0, threads0 = _process_usage()
    started: List[Tuple[Any, _ScaleCollector]] = []
    failures: List[str] = []
    wall0 = perf_counter()
    for _ in range(int(p["sessions"])):
        collector = _ScaleCollector(one_finished)
        session = new_avatar_session(
            **_sdk_kwargs(p), transport_frames=collector.on_frame, connect_timeout=30.0, dispatcher=dispatcher
        )
        try:
            session.init()
            session.start()
        except Exception as exc:  # noqa: BLE001 - counted and reported
            failures.append(f"{type(exc).__name__}: {exc}")
            session.close()
            continue
        started.append((session, collector))
    start_wall = perf_counter() - wall0
    _, threads1 = _process_usage()
    with finished_lock:
        progress["target"] = len(started)
    # The server starts each stream ``delay_us`` after its trigger, so that every trigger is out (in the phase
    # the loop below gives it) before the first frame: sending triggers never competes with streams.
    start_delay = p["delay_us"] / 1e6
    switches0, times0, cpu0 = _context_switches(), os.times(), process_time()
    trigger0 = perf_counter()
    base = time.monotonic()
    for i, (session, _) in enumerate(started):
        if not p["aligned"]:
            pause = base + i * interval / len(started) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        session.send_audio(TRIGGER_PCM, end=True)
    trigger_wall = perf_counter() - trigger0
    stream_s = (frames - 1) * interval
    completed = all_done.wait(start_delay + stream_s + interval + float(p["grace_s"]))
    if not completed:
        end.update(wall=perf_counter(), cpu=process_time(), times=os.times(), switches=_context_switches())
    # From the first stream's first slot to the last frame's callback; CPU from before the triggers (the
    # second before the first slot is idle).
    wall = end["wall"] - (trigger0 + start_delay)
    cpu = end["cpu"] - cpu0
    times1, switches1 = end["times"], end["switches"]
    rss2, threads2 = _process_usage()
    close0 = perf_counter()
    for session, _ in started:
        session.close()
    if dispatcher is not None:
        dispatcher.close()
    close_wall = perf_counter() - close0

    collectors = [collector for _, collector in started]
    delays = [ns / 1e6 for c in collectors for ns in c.delays]
    server_lags = [ns / 1e6 for c in collectors for ns in c.server_lags]
    schedule_lags = [(d + s) / 1e6 for c in collectors for d, s in zip(c.delays, c.server_lags)]
    final = [c.delays[-1] / 1e6 if c.count == frames else math.inf for c in collectors] or [math.inf]
    per_second: Dict[int, List[float]] = {}  # frame k is due k * interval after its stream's first frame
    for c in collectors:
        for k, ns in enumerate(c.delays):
            per_second.setdefault(int(k * interval), []).append(ns / 1e6)
    return {
        "sessions": int(p["sessions"]),
        "dispatch_threads": threads,
        "started": len(started),
        "failures": failures[:5],
        "failed": len(failures),
        "start_s": start_wall,
        "start_ms_per_session": start_wall / int(p["sessions"]) * 1000,
        "trigger_s": trigger_wall,
        "stream_delay_s": start_delay,
        "frames_expected": frames * len(started),
        "frames_received": sum(c.count for c in collectors),
        "completed": completed,
        "stream_s": stream_s,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_util": cpu / wall,
        "cpu_user_s": times1.user - times0.user,
        "cpu_system_s": times1.system - times0.system,
        "context_switches_per_frame": (switches1 - switches0) / max(1, sum(c.count for c in collectors)),
        "worst_final_delay_ms": max(final),
        "delay_p50_ms": percentile(delays, 50),
        "delay_p99_ms": percentile(delays, 99),
        "delay_max_ms": max(delays, default=math.nan),
        "delay_p99_ms_by_second": [percentile(per_second[k], 99) for k in sorted(per_second)],
        "schedule_lag_p99_ms": percentile(schedule_lags, 99),
        "schedule_lag_max_ms": max(schedule_lags, default=math.nan),
        "server_late_p99_ms": percentile(server_lags, 99),
        "server_late_max_ms": max(server_lags, default=math.nan),
        "threads_per_session": (threads1 - threads0) / max(1, len(started)),
        "rss_kib_per_session": (rss2 - rss0) / 1024 / max(1, len(started)),
        "threads_peak": max(threads1, threads2),
        "close_s": close_wall,
    }


# ------------------------------------------------------------------------------------------- main

WORKLOADS: Dict[Tuple[str, str], Callable[[Params], Result]] = {
    ("raw", "throughput"): raw_throughput,
    ("bare", "throughput"): lambda p: bare_stream(p, latency=False),
    ("bare", "latency"): lambda p: bare_stream(p, latency=True),
    ("bare", "start"): bare_start,
    ("bare", "audio"): bare_audio,
    ("avatarkit", "throughput"): lambda p: avatarkit_stream(p, latency=False),
    ("avatarkit", "latency"): lambda p: avatarkit_stream(p, latency=True),
    ("avatarkit", "start"): avatarkit_start,
    ("avatarkit", "audio"): avatarkit_audio,
    ("avatarsdk", "throughput"): lambda p: avatarsdk_stream(p, latency=False),
    ("avatarsdk", "latency"): lambda p: avatarsdk_stream(p, latency=True),
    ("avatarsdk", "start"): avatarsdk_start,
    ("avatarsdk", "audio"): avatarsdk_audio,
    ("avatarsdk", "idle"): avatarsdk_idle,
    ("avatarsdk", "scale"): avatarsdk_scale,
    ("avatarsdk", "scale-own"): avatarsdk_scale,
}


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or (args[0], args[1]) not in WORKLOADS:
        names = ", ".join(f"{c} {w}" for c, w in WORKLOADS)
        raise SystemExit(f"usage: python -m benchmarks.client CLIENT WORKLOAD PARAMS_JSON  ({names})")
    client, workload, raw = args
    params: Params = json.loads(raw)
    if params.get("cpu") is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(params["cpu"])})
    result = WORKLOADS[(client, workload)](params)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
