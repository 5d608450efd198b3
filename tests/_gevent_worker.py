"""Run by tests/test_gevent.py in a subprocess: the SDK under gevent's monkey-patching, against the stand-in
the test runs (its credentials in argv[1] as JSON). Prints one JSON line: what each part got, and the worst
stall of a greenlet that ticks every 5 ms (how long the hub was kept from switching)."""

from gevent import monkey

monkey.patch_all()  # first, as gunicorn's gevent worker does

import json  # noqa: E402 - after the patching
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, List  # noqa: E402

import gevent  # noqa: E402

from avatarsdk import SessionPool, SharedDispatcher, new_avatar_session  # noqa: E402

STREAMS = 24  # concurrent utterances through the pool
MAX_SIZE = 8
SESSIONS = 6  # sessions of their own, on one shared dispatcher
RATE = 16000


def pcm(seconds: float) -> bytes:
    return b"".join(((i * 37) % 20000 - 10000).to_bytes(2, "little", signed=True) for i in range(int(seconds * RATE)))


def main() -> None:
    credentials: Dict[str, str] = json.loads(sys.argv[1])
    ticking = {"on": True, "worst": 0.0, "ticks": 0}

    def ticker() -> None:
        last = time.monotonic()
        while ticking["on"]:
            gevent.sleep(0.005)
            now = time.monotonic()
            ticking["worst"] = max(ticking["worst"], now - last - 0.005)
            ticking["ticks"] += 1
            last = now

    tick = gevent.spawn(ticker)
    result: Dict[str, Any] = {}
    audio = pcm(0.4)  # 10 frames
    with SessionPool(**credentials, max_size=MAX_SIZE, sample_rate=RATE) as pool:
        streams = [gevent.spawn(lambda: [f.last for f in pool.stream(audio)]) for _ in range(STREAMS)]
        gevent.joinall(streams, timeout=60, raise_error=True)
        result["streams"] = [len(g.value) if g.value else 0 for g in streams]
        result["pool"] = {"created": pool.stats().created, "failed": pool.stats().failed}

    dispatcher = SharedDispatcher(threads=2)
    got: List[List[bool]] = [[] for _ in range(SESSIONS)]
    sessions = []
    for n in range(SESSIONS):
        session = new_avatar_session(
            **credentials,
            sample_rate=RATE,
            dispatcher=dispatcher,
            transport_frames=lambda data, last, n=n: got[n].append(last),
        )
        sessions.append(session)

    def run(session: Any) -> None:
        session.init()
        session.start()
        session.send_audio(audio, end=True)

    gevent.joinall([gevent.spawn(run, s) for s in sessions], timeout=60, raise_error=True)
    deadline = time.monotonic() + 30
    while not all(g and g[-1] for g in got) and time.monotonic() < deadline:
        gevent.sleep(0.01)
    for session in sessions:
        session.close()
    dispatcher.close()
    result["sessions"] = [len(g) for g in got]
    ticking["on"] = False
    tick.join()
    result["worst_stall"] = ticking["worst"]
    result["ticks"] = ticking["ticks"]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
