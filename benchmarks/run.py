"""The avatarsdk performance benchmark: ``python -m benchmarks`` (``--help`` lists the sizes).

Starts the benchmark server (``server.py``) in its own process, then runs each workload for the bare
websocket-client loop, avatarkit 0.1.7 and avatarsdk, each run in a fresh client process (``client.py``),
the clients' order rotating from one repetition to the next, and prints one table, the targets with their
measured ratios and PASS/FAIL, and the machine's details.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from google.protobuf.internal import api_implementation

from .stats import median

try:
    import psutil
except ImportError:  # pragma: no cover - the message says what to do
    raise SystemExit('the benchmark needs its extra: python3 -m pip install -e ".[bench]"') from None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = ("bare", "avatarkit", "avatarsdk")
COMPARATIVE = ("throughput", "latency", "start", "audio")
# avatarsdk only. scale: the sessions' callbacks on one SharedDispatcher (the documented setup for hundreds of
# sessions in a process, and the target's); scale-own: the same with a dispatcher thread per session (the default).
SCALE = ("idle", "scale", "scale-own")
WORKLOADS = COMPARATIVE + SCALE
LATENCY_WARMUP = 200  # frames of a burst before the paced stream (warms every code path once)
END_LAG_LIMIT_MS = 200.0
SCALE_DELAY_US = 1_000_000  # scale test: streams start 1 s after their trigger, once every trigger is out

Result = Dict[str, Any]

# Sizes of the default run (about 85 s on 2 cores) and of --quick (a smoke test of a few seconds).
DEFAULTS: Dict[str, Any] = {
    "frames": 20000,
    "frame_size": 1200,
    "warmup": 1000,
    "reps": 5,
    "paced_seconds": 4.0,
    "fps": 25.0,
    "start_iterations": 10,
    "audio_seconds": 60.0,
    "chunk_ms": 20,
    "idle_sessions": 50,
    "sessions": 500,
    "stream_seconds": 3.0,
    "dispatch_threads": 2,
}
QUICK: Dict[str, Any] = {
    "frames": 2000,
    "warmup": 200,
    "reps": 1,
    "paced_seconds": 0.4,
    "start_iterations": 3,
    "audio_seconds": 5.0,
    "idle_sessions": 10,
    "sessions": 20,
    "stream_seconds": 1.0,
}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark avatarsdk against avatarkit 0.1.7 and a bare websocket-client loop.",
    )
    size = parser.add_argument_group("sizes (defaults: the full run; --quick: a smoke test)")
    size.add_argument("--frames", type=int, help=f"frames per unpaced burst ({DEFAULTS['frames']})")
    size.add_argument("--frame-size", type=int, help=f"bytes per animation frame ({DEFAULTS['frame_size']})")
    size.add_argument(
        "--warmup", type=int, help=f"frames of the warm-up burst before each measured one ({DEFAULTS['warmup']})"
    )
    size.add_argument("--reps", type=int, help=f"repetitions of each comparative workload ({DEFAULTS['reps']})")
    size.add_argument(
        "--paced-seconds", type=float, help=f"length of the paced latency stream ({DEFAULTS['paced_seconds']})"
    )
    size.add_argument("--fps", type=float, help=f"frame rate of paced streams ({DEFAULTS['fps']:g})")
    size.add_argument(
        "--start-iterations", type=int, help=f"start() calls per client process ({DEFAULTS['start_iterations']})"
    )
    size.add_argument("--audio-seconds", type=float, help=f"seconds of 16 kHz PCM sent ({DEFAULTS['audio_seconds']:g})")
    size.add_argument("--chunk-ms", type=int, help=f"milliseconds of audio per send_audio() ({DEFAULTS['chunk_ms']})")
    size.add_argument(
        "--idle-sessions", type=int, help=f"idle sessions in the memory/threads test ({DEFAULTS['idle_sessions']})"
    )
    size.add_argument("--sessions", type=int, help=f"streaming sessions in the scale test ({DEFAULTS['sessions']})")
    size.add_argument(
        "--stream-seconds", type=float, help=f"length of each scale-test stream ({DEFAULTS['stream_seconds']:g})"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition: a smoke test")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help="comma-separated subset of bare,avatarkit,avatarsdk"
    )
    parser.add_argument(
        "--dispatch-threads",
        type=int,
        default=DEFAULTS["dispatch_threads"],
        help=f"scale test: threads of the SharedDispatcher ({DEFAULTS['dispatch_threads']})",
    )
    parser.add_argument("--aligned", action="store_true", help="scale test: all triggers at once (worst case)")
    parser.add_argument("--pin", action="store_true", help="pin the server to CPU 0 and the clients to CPU 1")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a client run may take (60)")
    parser.add_argument("--json", metavar="FILE", help="also write every measurement to FILE as JSON")
    parser.add_argument("--check", action="store_true", help="exit with status 1 unless every target holds")
    args = parser.parse_args(argv)
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, QUICK.get(name, value) if args.quick else value)
    args.workloads = _subset(parser, "--workloads", args.workloads, WORKLOADS)
    args.clients = _subset(parser, "--clients", args.clients, CLIENTS)
    counts = ("reps", "frames", "sessions", "idle_sessions", "start_iterations", "chunk_ms", "dispatch_threads")
    if any(getattr(args, name) < 1 for name in counts):
        parser.error("--" + ", --".join(n.replace("_", "-") for n in counts) + " must be at least 1")
    if args.frame_size < 128 or args.fps <= 0 or args.paced_seconds <= 0 or args.stream_seconds <= 0:
        parser.error("--frame-size must be at least 128; --fps, --paced-seconds, --stream-seconds above 0")
    if "avatarkit" in args.clients and importlib.util.find_spec("avatarkit") is None:
        parser.error('avatarkit is not installed: python3 -m pip install -e ".[bench]" (or --clients bare,avatarsdk)')
    return args


def _subset(parser: argparse.ArgumentParser, flag: str, value: str, allowed: Sequence[str]) -> List[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        parser.error(f"{flag}: expected names from {','.join(allowed)}, got {value!r}")
    return [v for v in allowed if v in chosen]


# ------------------------------------------------------------------------------------ processes


class ServerProcess:
    """``benchmarks.server`` in its own process; it exits when we close its standard input."""

    def __init__(self, cpu: Optional[int]) -> None:
        cmd = [sys.executable, "-m", "benchmarks.server", "--port", "0"]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "READY":
            self.close()
            raise RuntimeError(f"the benchmark server did not start (said {line!r})")
        self.base_url = f"http://127.0.0.1:{int(line[1])}"
        self._ps = psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        times = self._ps.cpu_times()
        return float(times.user + times.system)

    def ingress_url(
        self,
        mode: str,
        *,
        frames: int = 1,
        size: int = 1200,
        interval_us: int = 40000,
        warmup: int = 0,
        delay_us: int = 0,
    ) -> str:
        path = f"/bench/mode={mode}/frames={frames}/size={size}/interval_us={interval_us}/warmup={warmup}"
        path += f"/delay_us={delay_us}"
        return f"{self.base_url}{path}/v2/driveningress"

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Run:
    """One client process running one workload."""

    workload: str
    client: str
    rep: int
    result: Optional[Result] = None
    error: Optional[str] = None
    process_s: float = 0.0  # the client process's whole life, imports included
    server_cpu_s: float = 0.0  # CPU the server used meanwhile


def run_client(
    server: ServerProcess, *, client: str, workload: str, rep: int, params: Dict[str, Any], timeout: float
) -> Run:
    run = Run(workload, client, rep)
    cmd = [sys.executable, "-m", "benchmarks.client", client, workload, json.dumps(params)]
    cpu0, wall0 = server.cpu_seconds(), time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        run.error = f"timed out after {timeout:g}s"
    else:
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode == 0 and lines:
            run.result = json.loads(lines[-1][len("RESULT ") :])
        else:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            run.error = f"exit {proc.returncode}: {tail}"
    run.process_s = time.perf_counter() - wall0
    run.server_cpu_s = server.cpu_seconds() - cpu0
    return run


# ---------------------------------------------------------------------------------- the workloads


def workload_params(args: argparse.Namespace, server: ServerProcess, workload: str) -> Dict[str, Any]:
    interval_us = round(1e6 / args.fps)
    common: Dict[str, Any] = {
        "console_url": f"{server.base_url}/console",
        "timeout": args.timeout,
        "cpu": 1 if args.pin else None,
    }
    if workload == "throughput":
        url = server.ingress_url("burst", frames=args.frames, size=args.frame_size, warmup=args.warmup)
        return {
            **common,
            "ingress_url": url,
            "frames": args.frames,
            "warmup": args.warmup,
            "frame_size": args.frame_size,
        }
    if workload == "latency":
        frames = max(1, round(args.paced_seconds * args.fps))
        url = server.ingress_url(
            "paced", frames=frames, size=args.frame_size, interval_us=interval_us, warmup=LATENCY_WARMUP
        )
        return {**common, "ingress_url": url, "frames": frames, "warmup": LATENCY_WARMUP}
    if workload in ("start", "audio", "idle"):
        return {
            **common,
            "ingress_url": server.ingress_url("ack", size=args.frame_size),
            "iterations": args.start_iterations,
            "audio_seconds": args.audio_seconds,
            "chunk_ms": args.chunk_ms,
            "sessions": args.idle_sessions,
            "settle_s": 0.3,
        }
    assert workload in ("scale", "scale-own")
    frames = max(1, round(args.stream_seconds * args.fps))
    return {
        **common,
        "ingress_url": server.ingress_url(
            "paced", frames=frames, size=args.frame_size, interval_us=interval_us, delay_us=SCALE_DELAY_US
        ),
        "delay_us": SCALE_DELAY_US,
        "frames": frames,
        "interval_us": interval_us,
        "sessions": args.sessions,
        "dispatch_threads": args.dispatch_threads if workload == "scale" else 0,
        "aligned": args.aligned,
        "grace_s": 5.0,
    }


def _progress(started: float, text: str) -> None:
    print(f"[{time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)


def _brief(run: Run) -> str:
    if run.result is None:
        return f"{run.client} ERROR ({run.error})"
    r = run.result
    if run.workload == "throughput":
        return f"{run.client} {r['fps']:,.0f} f/s {r['cpu_per_1000']:.4f} cpu-s/1k"
    if run.workload == "latency":
        return f"{run.client} p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} ms"
    if run.workload == "start":
        return f"{run.client} {r['median_ms']:.2f} ms"
    if run.workload == "audio":
        return f"{run.client} {r['realtime_factor']:,.0f}x"
    return run.client


def run_all(args: argparse.Namespace, server: ServerProcess, started: float) -> List[Run]:
    runs: List[Run] = []
    clients: List[str] = args.clients
    timeout = args.timeout + 30
    for workload in (w for w in COMPARATIVE if w in args.workloads):
        params = workload_params(args, server, workload)
        if workload == "throughput":  # the server's ceiling: a reader that only counts bytes
            run = run_client(server, client="raw", workload=workload, rep=-1, params=params, timeout=timeout)
            runs.append(run)
            _progress(started, f"server ceiling: {_brief(run)}")
        for rep in range(args.reps):
            order = clients[rep % len(clients) :] + clients[: rep % len(clients)]
            done = [
                run_client(server, client=client, workload=workload, rep=rep, params=params, timeout=timeout)
                for client in order
            ]
            runs += done
            _progress(started, f"{workload} {rep + 1}/{args.reps}: " + "; ".join(_brief(r) for r in done))
    if "avatarsdk" in clients:
        for workload in (w for w in SCALE if w in args.workloads):
            params = workload_params(args, server, workload)
            run = run_client(
                server,
                client="avatarsdk",
                workload=workload,
                rep=0,
                params=params,
                timeout=timeout + args.sessions * 0.05,
            )
            runs.append(run)
            _progress(started, f"{workload}: " + ("done" if run.result else f"ERROR ({run.error})"))
    return runs


# ---------------------------------------------------------------------------------------- report


@dataclass
class Cell:
    values: List[float] = field(default_factory=list)
    errors: int = 0

    @property
    def median(self) -> float:
        return median(self.values) if self.values else math.nan


def collect(runs: List[Run], workload: str, client: str, key: str) -> Cell:
    cell = Cell()
    for run in runs:
        if run.workload == workload and run.client == client:
            if run.result is None:
                cell.errors += 1
            elif key in run.result:
                cell.values.append(float(run.result[key]))
    return cell


def paired(
    runs: List[Run], workload: str, key: str, *, a: str, b: str, op: Callable[[float, float], float]
) -> List[float]:
    """``op(a, b)`` for each repetition in which both clients ran."""
    by_rep: Dict[Tuple[int, str], float] = {
        (r.rep, r.client): float(r.result[key]) for r in runs if r.workload == workload and r.result is not None
    }
    reps = sorted({rep for rep, _ in by_rep})
    return [op(by_rep[rep, a], by_rep[rep, b]) for rep in reps if (rep, a) in by_rep and (rep, b) in by_rep]


ROWS: List[Tuple[str, str, str, str]] = [
    # label, workload, result key, format
    ("Throughput, frames/s (unpaced burst)", "throughput", "fps", "{:,.0f}"),
    ("CPU s per 1,000 frames", "throughput", "cpu_per_1000", "{:.4f}"),
    ("Latency p50, ms (server send -> callback)", "latency", "p50_ms", "{:.3f}"),
    ("Latency p99, ms", "latency", "p99_ms", "{:.3f}"),
    ("start(), ms (token held -> connection id)", "start", "median_ms", "{:.2f}"),
    ("start(), ms, with a 10 s connect timeout", "start", "median_timeout_ms", "{:.2f}"),
    ("Audio send, x real time", "audio", "realtime_factor", "{:,.0f}"),
    ("Audio send, CPU s per 1,000 chunks", "audio", "cpu_per_1000", "{:.4f}"),
]


def _fmt(fmt: str, value: float) -> str:
    return "n/a" if math.isnan(value) else fmt.format(value)


def _cell_text(cell: Cell, fmt: str) -> str:
    if not cell.values:
        return "ERROR" if cell.errors else "-"
    text = _fmt(fmt, cell.median)
    if len(cell.values) > 1:
        text += f" ({_fmt(fmt, min(cell.values))}-{_fmt(fmt, max(cell.values))})"
    if cell.errors:
        text += f" [{cell.errors} failed]"
    return text


def _table(header: Sequence[str], rows: List[List[str]]) -> str:
    widths = [max(len(row[i]) for row in [list(header), *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


@dataclass
class Target:
    name: str
    measured: str
    ok: Optional[bool]  # None: not measured


def _verdict(target: Target) -> str:
    if target.ok is None:
        return "info" if target.name.startswith("  (") else "n/a"
    return "PASS" if target.ok else "FAIL"


def evaluate(runs: List[Run], args: argparse.Namespace) -> List[Target]:
    targets: List[Target] = []

    def ratio(name: str, workload: str, key: str, *, other: str, limit: float, at_least: bool) -> None:
        mine, theirs = collect(runs, workload, "avatarsdk", key), collect(runs, workload, other, key)
        if not mine.values or not theirs.values:
            targets.append(Target(name, "not measured", None))
            return
        value = mine.median / theirs.median
        reps = paired(runs, workload, key, a="avatarsdk", b=other, op=lambda a, b: a / b)
        spread = f" (per rep {min(reps):.2f}-{max(reps):.2f})" if len(reps) > 1 else ""
        ok = value >= limit if at_least else value <= limit
        targets.append(Target(name, f"{value:.2f}x{spread}", ok))

    def delta(name: str, key: str, limit: float) -> None:
        mine, bare = collect(runs, "latency", "avatarsdk", key), collect(runs, "latency", "bare", key)
        if not mine.values or not bare.values:
            targets.append(Target(name, "not measured", None))
            return
        value = mine.median - bare.median
        reps = paired(runs, "latency", key, a="avatarsdk", b="bare", op=lambda a, b: a - b)
        spread = f" (per rep {min(reps):+.3f}-{max(reps):+.3f})" if len(reps) > 1 else ""
        text = f"{value:+.3f} ms ({mine.median:.3f} vs {bare.median:.3f}){spread}"
        targets.append(Target(name, text, value <= limit))

    ratio("Throughput >= 1.0x avatarkit", "throughput", "fps", other="avatarkit", limit=1.0, at_least=True)
    ratio("Throughput >= 1.3x bare loop", "throughput", "fps", other="bare", limit=1.3, at_least=True)
    ratio(
        "CPU s per 1,000 frames <= 1.0x avatarkit",
        "throughput",
        "cpu_per_1000",
        other="avatarkit",
        limit=1.0,
        at_least=False,
    )
    delta("Latency p50 <= bare + 0.5 ms", "p50_ms", 0.5)
    delta("Latency p99 <= bare + 0.5 ms", "p99_ms", 0.5)
    ratio("start() <= 1.2x bare connect + handshake", "start", "median_ms", other="bare", limit=1.2, at_least=False)
    mine, timed = collect(runs, "start", "avatarsdk", "median_ms"), collect(runs, "start", "bare", "median_timeout_ms")
    if mine.values and timed.values:
        targets.append(
            Target(
                "  (reference: start() vs the bare loop with the same 10 s connect timeout)",
                f"{mine.median / timed.median:.2f}x",
                None,
            )
        )

    audio = collect(runs, "audio", "avatarsdk", "realtime_factor")
    if audio.values:
        text = (
            _cell_text(audio, "{:,.0f}").replace(" (", "x (", 1) if len(audio.values) > 1 else f"{audio.median:,.0f}x"
        )
        targets.append(Target("Audio send >= 200x real time", text, audio.median >= 200))
    else:
        targets.append(Target("Audio send >= 200x real time", "not measured", None))

    idle = _single(runs, "idle")
    if idle is not None:
        n = idle["sessions"]
        targets.append(
            Target(
                f"{n} idle sessions: <= 2 threads each",
                f"{idle['threads_per_session']:.2f}",
                idle["threads_per_session"] <= 2,
            )
        )
        targets.append(
            Target(
                f"{n} idle sessions: <= 64 KiB RSS each",
                f"{idle['rss_kib_per_session']:.1f} KiB",
                idle["rss_kib_per_session"] <= 64,
            )
        )
    else:
        targets.append(Target("Idle sessions: <= 2 threads, <= 64 KiB RSS each", "not measured", None))

    scale = _single(runs, "scale")
    fps = f"{args.fps:g}"
    if scale is not None:
        end_delay = _end_delay(scale)
        ok = (
            scale["started"] == scale["sessions"]
            and scale["frames_received"] == scale["frames_expected"]
            and end_delay < END_LAG_LIMIT_MS
        )
        text = (
            f"{scale['started']}/{scale['sessions']} started, {scale['frames_received']:,}/{scale['frames_expected']:,}"
            f" frames, delay at end {end_delay:,.0f} ms"
        )
        label = f"{scale['sessions']} sessions stream at {fps} fps (SharedDispatcher), delay at end < 200 ms"
        targets.append(Target(label, text, ok))
    else:
        targets.append(Target(f"{args.sessions} sessions stream at {fps} fps", "not measured", None))
    return targets


def _scale_rows(args: argparse.Namespace, scale: Optional[Result]) -> List[List[str]]:
    """The table rows of one scale run (none if it did not run)."""
    if scale is None:
        return []
    threads = scale["dispatch_threads"]
    how = f"shared dispatcher, {threads} threads" if threads else "a dispatcher thread per session"
    rows = [[f"{scale['sessions']} sessions ({how})", ""]]
    n = scale["sessions"]
    rows += [
        [
            f"{n} sessions: started (init + start, one by one)",
            f"{scale['started']}/{n} in {scale['start_s']:.2f} s ({scale['start_ms_per_session']:.2f} ms each)",
        ],
        [
            f"{n} sessions: triggers sent over (meant: {1000 / args.fps:g} ms)",
            f"{scale['trigger_s'] * 1000:,.0f} ms (streams start {scale['stream_delay_s']:g} s after theirs)",
        ],
        [
            f"{n} sessions: frames at {args.fps:g} fps for {args.stream_seconds:g} s",
            f"{scale['frames_received']:,}/{scale['frames_expected']:,}, all in {scale['wall_s']:.2f} s",
        ],
        [f"{n} sessions: delay at end (limit {END_LAG_LIMIT_MS:.0f} ms)", f"{_end_delay(scale):,.1f} ms"],
        [
            f"{n} sessions: delay p50 / p99 / max",
            f"{scale['delay_p50_ms']:,.1f} / {scale['delay_p99_ms']:,.1f} / {scale['delay_max_ms']:,.1f} ms",
        ],
        [
            f"{n} sessions: delay p99 per second of stream",
            " ".join(f"{v:,.1f}" for v in scale["delay_p99_ms_by_second"]) + " ms",
        ],
        [
            f"{n} sessions: server lateness p99 / max",
            f"{scale['server_late_p99_ms']:,.1f} / {scale['server_late_max_ms']:,.1f} ms",
        ],
        [
            f"{n} sessions: lag behind schedule p99 / max",
            f"{scale['schedule_lag_p99_ms']:,.1f} / {scale['schedule_lag_max_ms']:,.1f} ms",
        ],
        [
            f"{n} sessions: client CPU while streaming",
            f"{scale['cpu_util'] * 100:.0f}% of one core (user {scale['cpu_user_s']:.2f} s,"
            f" system {scale['cpu_system_s']:.2f} s)",
        ],
        [
            f"{n} sessions: client CPU, context switches per frame",
            f"{scale['cpu_s'] / max(1, scale['frames_received']) * 1e6:,.0f} us,"
            f" {scale['context_switches_per_frame']:.1f}",
        ],
        [
            f"{n} sessions: OS threads, RSS per session",
            f"{scale['threads_per_session']:.2f}, {scale['rss_kib_per_session']:.1f} KiB",
        ],
    ]
    if scale["failures"]:
        rows.append([f"{n} sessions: first failures", "; ".join(scale["failures"])])
    return rows


def _end_delay(scale: Result) -> float:
    """How far behind the client is at the end: the worse of the worst session's last frame and the last
    second's p99 (delay = callback time - server send time)."""
    by_second = scale.get("delay_p99_ms_by_second") or [math.inf]
    return float(max(scale["worst_final_delay_ms"], by_second[-1]))


def _single(runs: List[Run], workload: str) -> Optional[Result]:
    for run in runs:
        if run.workload == workload and run.result is not None:
            return run.result
    return None


def _git_describe() -> str:
    """The commit the benchmarked avatarsdk comes from, and whether its files differ from it (read-only git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--", "avatarsdk", "setup.cfg"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{ROOT} at {commit}" + (" with uncommitted changes" if changes else "")


def machine_info() -> Dict[str, str]:
    info: Dict[str, str] = {}
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["cpu"] = f"{os.cpu_count()} CPUs ({usable} usable){', ' + model if model else ''}"
    info["platform"] = platform.platform()
    info["python"] = f"{platform.python_implementation()} {platform.python_version()}"
    info["avatarsdk source"] = _git_describe()
    for dist in (
        "avatarsdk",
        "avatarkit",
        "websocket-client",
        "websockets",
        "protobuf",
        "aiohttp",
        "requests",
        "psutil",
    ):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = "not installed"
    info["protobuf"] += f" ({api_implementation.Type()} implementation)"
    speedups = importlib.util.find_spec("websockets.speedups") is not None
    info["websockets"] += " (C speedups)" if speedups else " (no C speedups)"
    if importlib.util.find_spec("wsaccel") is not None:
        info["websocket-client"] += " (wsaccel)"
    if hasattr(os, "getloadavg"):
        info["load average at start"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return info


def report(args: argparse.Namespace, runs: List[Run], info: Dict[str, str], elapsed: float) -> List[Target]:
    out: List[str] = []
    out.append("avatarsdk benchmark")
    out.append("=" * 19)
    for key, value in info.items():
        out.append(f"{key + ':':24}{value}")
    interval_ms = 1000 / args.fps
    out.append(
        f"{'sizes:':24}burst {args.frames:,} x {args.frame_size} B frames (after a {args.warmup:,}-frame warm-up);"
        f" paced {args.paced_seconds:g} s at {args.fps:g} fps; {args.start_iterations} start() per process;"
        f" {args.audio_seconds:g} s audio in {args.chunk_ms} ms chunks; {args.reps} repetitions"
    )
    out.append("")
    out.append(f"Median over repetitions (min-max); each cell is {args.reps} fresh client process(es).")
    rows = []
    for label, workload, key, fmt in ROWS:
        if workload not in args.workloads:
            continue
        rows.append(
            [label] + [_cell_text(collect(runs, workload, c, key), fmt) if c in args.clients else "-" for c in CLIENTS]
        )
    if rows:
        out.append(_table(["metric", *CLIENTS], rows))
    out.append("")

    scale_rows: List[List[str]] = []
    idle = _single(runs, "idle")
    if idle is not None:
        n = idle["sessions"]
        scale_rows.append([f"{n} idle sessions: OS threads per session", f"{idle['threads_per_session']:.2f}"])
        scale_rows.append([f"{n} idle sessions: RSS per session", f"{idle['rss_kib_per_session']:.1f} KiB"])
    for workload in ("scale", "scale-own"):
        scale_rows += _scale_rows(args, _single(runs, workload))
    for run in runs:
        if run.workload in SCALE and run.result is None:
            scale_rows.append([f"{run.workload} test", f"ERROR: {run.error}"])
    if scale_rows:
        out.append("avatarsdk at scale (one process; compared with the targets only)")
        out.append(_table(["metric", "avatarsdk"], scale_rows))
        out.append("")

    targets = evaluate(runs, args)
    out.append("Targets (avatarsdk; ratios of the medians above, per-repetition ratios in brackets)")
    out.append(
        _table(
            ["target", "measured", "result"],
            [[t.name, t.measured, _verdict(t)] for t in targets],
        )
    )
    out.append("")
    notes = _notes(runs, args, interval_ms)
    out += notes
    failed = [r for r in runs if r.result is None]
    for run in failed:
        out.append(f"error: {run.workload} rep {run.rep + 1} {run.client}: {run.error}")
    held = sum(1 for t in targets if t.ok)
    measured = sum(1 for t in targets if t.ok is not None)
    out.append(f"{held}/{measured} targets hold; total time {elapsed:.1f} s.")
    print("\n".join(out), flush=True)
    return targets


def _notes(runs: List[Run], args: argparse.Namespace, interval_ms: float) -> List[str]:
    notes = []
    ceiling = next((r.result for r in runs if r.client == "raw" and r.result is not None), None)
    if ceiling is not None:
        fastest = max(collect(runs, "throughput", c, "fps").median for c in CLIENTS if c in args.clients)
        notes.append(
            f"Server ceiling: a reader that only counts bytes gets {ceiling['fps']:,.0f} frames/s from the server,"
            f" {ceiling['fps'] / fastest:.1f}x the fastest client's median."
        )
    scale = _single(runs, "scale")
    if scale is not None and scale["server_late_max_ms"] > 50:
        notes.append(
            f"Warning: in the scale test the server sent frames up to {scale['server_late_max_ms']:,.0f} ms late"
            " (the 2 cores were saturated); the verdict uses the client's own delay, measured from the actual send."
        )
    if scale is not None and scale["trigger_s"] > scale["stream_delay_s"]:
        notes.append(
            f"Note: the scale test's triggers took {scale['trigger_s'] * 1000:,.0f} ms to send, longer than the"
            f" {scale['stream_delay_s']:g} s before the streams start: they overlapped less than intended."
        )
    lags = [r.result["server_lag_max_ms"] for r in runs if r.workload == "latency" and r.result is not None]
    if lags:
        notes.append(
            f"Paced frames left the server at most {max(lags):.2f} ms after their {interval_ms:g} ms slot"
            " (latency is measured from the actual send)."
        )
    return notes


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    info = machine_info()
    if args.pin and not hasattr(os, "sched_setaffinity"):
        print("--pin needs os.sched_setaffinity (Linux); running unpinned", file=sys.stderr)
        args.pin = False
    server = ServerProcess(0 if args.pin else None)
    try:
        runs = run_all(args, server, started)
    finally:
        server.close()
    elapsed = time.perf_counter() - started
    targets = report(args, runs, info, elapsed)
    if args.json:
        document = {
            "machine": info,
            "config": {k: v for k, v in vars(args).items() if k != "json"},
            "runs": [vars(r) for r in runs],
            "targets": [vars(t) for t in targets],
            "elapsed_s": elapsed,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1, default=str)
    if args.check and (any(t.ok is False for t in targets) or any(r.result is None for r in runs)):
        return 1
    return 0
