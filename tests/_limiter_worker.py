"""A process of its own for tests/test_limiter_redis.py: sessions (or bare slots) under one RedisLimiter.

    python tests/_limiter_worker.py '<json spec>'

The spec's ``mode``:

* ``sessions``: ``threads`` threads each run ``sessions`` sessions (init, start, one utterance, close) against the
  stand-in at ``credentials``; prints ``{"done": n, "errors": [...]}``.
* ``hold``: starts ``count`` sessions, prints ``holding``, and keeps them until stdin closes (or a kill).
* ``wait``: takes a slot (waiting up to 30 s), appends ``label`` to the Redis list ``order_key``, gives it back.
* ``try``: one session's ``init()`` with ``limiter_timeout``; prints the error's code, retryable, phase and message.

Every line printed is JSON (``hold``'s first line is ``"holding"``); the exit status is 0 unless the worker failed.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from avatarsdk import AvatarSDKError, AvatarSession, RedisLimiter, new_avatar_session


def say(value: Any) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def session(spec: Dict[str, Any], limiter: RedisLimiter, **options: Any) -> AvatarSession:
    expire_at = datetime.now(timezone.utc) + timedelta(hours=1)
    return new_avatar_session(**spec["credentials"], expire_at=expire_at, limiter=limiter, **options)


def run_sessions(spec: Dict[str, Any], limiter: RedisLimiter) -> None:
    done: List[int] = []
    errors: List[str] = []
    audio = b"\x00\x00" * 3200  # 0.2 s at 16 kHz

    def work() -> None:
        for _ in range(spec["sessions"]):
            try:
                with session(spec, limiter) as s:
                    if not s.collect(audio, frame_timeout=30):
                        raise AssertionError("no frames")
                done.append(1)
            except Exception as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(spec["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    say({"done": len(done), "errors": errors})


def hold(spec: Dict[str, Any], limiter: RedisLimiter) -> None:
    sessions = [session(spec, limiter) for _ in range(spec["count"])]
    for s in sessions:
        s.init()
        s.start()
    say("holding")
    sys.stdin.read()  # until the test closes stdin, or kills this process
    for s in sessions:
        s.close()


def wait(spec: Dict[str, Any], limiter: RedisLimiter, client: redis.Redis) -> None:
    slot = limiter.acquire(30)
    if slot is None:
        raise SystemExit("no slot within 30 s")
    client.rpush(spec["order_key"], spec["label"])
    limiter.release(slot)


def try_once(spec: Dict[str, Any], limiter: RedisLimiter) -> None:
    s = session(spec, limiter, limiter_timeout=spec["limiter_timeout"])
    try:
        s.init()
    except AvatarSDKError as err:
        say({"code": err.code.value, "retryable": err.retryable, "phase": err.phase, "message": err.message})
    else:
        say({"code": None})
    finally:
        s.close()


def main() -> None:
    spec = json.loads(sys.argv[1])
    client = redis.Redis(
        port=spec["redis_port"], socket_connect_timeout=2, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )
    limiter = RedisLimiter(client, spec["limit"], name=spec["name"], lease=spec["lease"])
    mode = spec["mode"]
    if mode == "sessions":
        run_sessions(spec, limiter)
    elif mode == "hold":
        hold(spec, limiter)
    elif mode == "wait":
        wait(spec, limiter, client)
    elif mode == "try":
        try_once(spec, limiter)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
