"""Many concurrent utterances through one SessionPool, then a summary table.

    python samples/connection_pool.py --local       # built-in stand-in service (AVATARSDK_LOCAL=1 works too)
    python samples/connection_pool.py               # real service: set AVATARSDK_API_KEY, AVATARSDK_APP_ID,
        AVATARSDK_AVATAR_ID, AVATARSDK_CONSOLE_URL and AVATARSDK_INGRESS_URL
    python samples/connection_pool.py --region us-west    # the region's URLs instead of the URL variables
        (also AVATARSDK_REGION; a URL variable set still wins)

Each worker thread plays the part of a web request handler: it takes a session from the pool, streams one
utterance (a generated tone of --seconds) and iterates over its frames as they arrive, the way a relay would
forward them to its client. At most --max-size sessions exist at once, however many utterances run.
No session is kept warm (min_idle 0): every connected second is billed (1 credit per started 6 s of each
session), so the pool connects sessions when utterances need them, closes an idle one --max-idle-time seconds
after it was returned, and the summary ends with the session-seconds it was connected.
With --dispatch-threads N the sessions' callbacks run on a SharedDispatcher of N threads (for pools of
hundreds of sessions) instead of a thread per session.
Exit status: 0 when every utterance got its frames, 1 otherwise, 2 for missing credentials.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, NamedTuple, Optional

from avatarsdk import AvatarSDKError, SessionPool, SharedDispatcher

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--local", action="store_true", help="use the built-in stand-in service")
parser.add_argument(
    "--region",
    default=os.environ.get("AVATARSDK_REGION"),
    help="us-west, ap-northeast, cn-beijing, spatialreal or auto, instead of the URL variables",
)
parser.add_argument("--utterances", type=int, default=16, help="how many utterances to send (16)")
parser.add_argument("--concurrency", type=int, default=8, help="worker threads sending at once (8)")
parser.add_argument("--max-size", type=int, default=4, help="the pool's max_size (4)")
parser.add_argument("--seconds", type=float, default=1.0, help="audio per utterance, in seconds (1.0)")
parser.add_argument(
    "--max-idle-time", type=float, default=30.0, help="seconds an idle session is kept after it was returned (30)"
)
parser.add_argument(
    "--dispatch-threads", type=int, default=0, help="callbacks on a SharedDispatcher of N threads (0: one per session)"
)
args = parser.parse_args()
if min(args.utterances, args.concurrency, args.max_size) < 1 or args.seconds <= 0 or args.dispatch_threads < 0:
    parser.error("--utterances, --concurrency, --max-size and --seconds must be positive, --dispatch-threads >= 0")
if args.max_idle_time < 0:
    parser.error("--max-idle-time must be 0 or more")

service = None
if args.local or os.environ.get("AVATARSDK_LOCAL") == "1":
    from avatarsdk.testing import FakeAvatarService  # the "testing" extra

    service = FakeAvatarService(frame_interval=0.04).start()  # 25 frames per second, like the service
    settings: Dict[str, str] = service.credentials()
else:
    names = ["api_key", "app_id", "avatar_id", "console_endpoint_url", "ingress_endpoint_url"]
    variables = ["AVATARSDK_" + v for v in ("API_KEY", "APP_ID", "AVATAR_ID", "CONSOLE_URL", "INGRESS_URL")]
    needed = [v for v in variables if not (args.region and v.endswith("_URL"))]  # a region gives the URLs
    missing = [v for v in needed if not os.environ.get(v)]
    if missing:
        print(f"error: set {', '.join(missing)} (or use --local, or --region for the URLs)", file=sys.stderr)
        sys.exit(2)
    settings = {name: os.environ[var] for name, var in zip(names, variables) if os.environ.get(var)}
    if args.region:
        settings["region"] = args.region

rate = 16000
samples = int(args.seconds * rate)
pcm = struct.pack(f"<{samples}h", *(int(6000 * math.sin(i * 0.0864)) for i in range(samples)))


class Row(NamedTuple):
    number: int
    req_id: str
    frames: int
    size: int
    wait: Optional[float]  # seconds in pool.stream(): borrowing a session (maybe waiting) and sending the audio
    first_frame: Optional[float]  # seconds from the audio sent to the first frame
    total: float  # seconds from asking the pool to the last frame
    error: Optional[str]


def utterance(number: int) -> Row:
    began = time.monotonic()
    req_id, frames, size, wait, first = "-", 0, 0, None, None
    try:
        stream = pool.stream(pcm, timeout=60, frame_timeout=10)  # borrowed and sent here; returned at the end
        wait = time.monotonic() - began
        for frame in stream:
            if first is None:
                first = time.monotonic() - began - wait
            req_id, frames, size = frame.req_id, frames + 1, size + len(frame.data)
    except AvatarSDKError as err:
        return Row(number, req_id, frames, size, wait, first, time.monotonic() - began, str(err))
    return Row(number, req_id, frames, size, wait, first, time.monotonic() - began, None)


def ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


started = time.monotonic()
dispatcher = SharedDispatcher(args.dispatch_threads) if args.dispatch_threads else None
with SessionPool(
    **settings,
    max_size=args.max_size,
    max_idle_time=args.max_idle_time,
    on_error=lambda err: print(f"session error: {err}", file=sys.stderr),
    dispatcher=dispatcher,
) as pool:
    with ThreadPoolExecutor(args.concurrency, thread_name_prefix="utterance") as workers:
        rows: List[Row] = list(workers.map(utterance, range(1, args.utterances + 1)))
    elapsed = time.monotonic() - started
stats = pool.stats()  # closed: every session's connected time is complete
if dispatcher is not None:
    dispatcher.close()
if service is not None:
    service.close()

header = ("#", "req_id", "frames", "bytes", "wait", "first frame", "total", "")
table = [header] + [
    (str(r.number), r.req_id, str(r.frames), f"{r.size:,}", ms(r.wait), ms(r.first_frame), ms(r.total), r.error or "")
    for r in rows
]
widths = [max(len(line[i]) for line in table) for i in range(len(header))]
right = (0, 2, 3, 4, 5, 6)  # numbers are right-aligned
for line in table:
    cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))]
    print("  ".join(cells).rstrip())
ok = [r for r in rows if r.error is None and r.frames > 0]
print(
    f"{len(ok)} of {len(rows)} utterances, {sum(r.frames for r in ok)} frames in {elapsed:.2f} s:"
    f" {len(rows) / elapsed:.1f} utterances/s"
)
print(
    f"pool: max_size {args.max_size}, created {stats.created}, discarded {stats.discarded}, waits {stats.waits},"
    f" timeouts {stats.timeouts}, failed {stats.failed}, refused {stats.refused}"
)
# Each session is billed ceil(its seconds / 6), at least 1: the least the pool's sessions can have cost.
credits = max(stats.created, math.ceil(stats.connected_seconds / 6))
print(
    f"connected: {stats.connected_seconds:.1f} session-seconds, at least {credits} credit{'s' * (credits != 1)}"
    " (1 per started 6 s of each session)"
)
sys.exit(0 if len(ok) == len(rows) else 1)
