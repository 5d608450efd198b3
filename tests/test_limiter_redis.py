"""RedisLimiter against a real Redis server that these tests start (Debian's ``redis-server``), with sessions in
several processes (tests/_limiter_worker.py) against the stand-in: the limit holds across processes, a killed
process's slots come back within the lease, waiters are served in arrival order, and the errors."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
import redis
from conftest import Recorder, in_forked_child, started, unused_port, wait_until
from redis.backoff import NoBackoff
from redis.retry import Retry

from avatarsdk import AvatarSDKErrorCode, AvatarSession, Limiter, RedisLimiter, SessionTokenError
from avatarsdk.testing import FakeAvatarService

REDIS_SERVER = shutil.which("redis-server")
# redis-py 6 and later retry a failed command 3 times with backoff by default; these tests want the failure at once.
NO_RETRY = Retry(NoBackoff(), 0)
PERSIST_NOTHING = ("--save", "", "--appendonly", "no")
ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_limiter_worker.py"

# Skipped only off CI: under CI (.ci/run installs redis-server) a missing binary fails the tests that need it.
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None and not os.environ.get("CI"),
    reason="needs Debian's redis-server (apt-get install redis-server; .ci/run installs it)",
)


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port, in a temporary folder, persisting nothing."""

    def __init__(self, folder: Path, *extra: str) -> None:
        self.folder = folder
        self.extra = extra
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None, "redis-server is not installed (CI: .ci/run must install it)"
        for _ in range(3):  # another process may take the free port first: try another
            self.port = unused_port()
            args = [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *self.extra,
            ]
            log = open(self.folder / f"redis-{self.port}.log", "wb")  # noqa: SIM115 - the server writes it
            self.process = subprocess.Popen(args, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            if wait_until(self._up_or_exited, "redis-server to answer", timeout=15) == "up":
                return self
        raise AssertionError(f"redis-server did not start: {self._log()}")

    def _up_or_exited(self) -> str:
        assert self.process is not None
        if self.process.poll() is not None:
            return "exited"
        try:
            redis.Redis(port=self.port, socket_connect_timeout=1, retry=NO_RETRY).ping()
        except redis.AuthenticationError:
            return "up"
        except redis.ConnectionError:
            return ""
        return "up"

    def _log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.folder.glob("redis-*.log"))

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=2, socket_timeout=5, retry=NO_RETRY, **kwargs)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def name() -> str:
    """A limit of its own for each test (the server is shared by the module)."""
    return f"test-{uuid.uuid4().hex[:8]}"


def spawn(spec: Dict[str, Any]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process: subprocess.Popen[str]) -> Any:
    """The worker's last line, once it exited cleanly."""
    out, err = process.communicate(timeout=90)
    assert process.returncode == 0, err
    lines = out.splitlines()
    return json.loads(lines[-1]) if lines else None


def spec_for(server: RedisServer, name: str, **changes: Any) -> Dict[str, Any]:
    return dict({"redis_port": server.port, "name": name, "limit": 1, "lease": 5.0}, **changes)


# ------------------------------------------------------------------------------------------ one process


def test_the_limit_is_shared_by_every_limiter_of_the_same_name(redis_server: RedisServer, name: str) -> None:
    one = RedisLimiter(redis_server.client(), 2, name=name)
    other = RedisLimiter(redis_server.client(), 2, name=name)  # as another process would
    elsewhere = RedisLimiter(redis_server.client(), 2, name=name + "-other")
    assert isinstance(one, Limiter)
    assert repr(one) == f"RedisLimiter(name={name!r}, limit=2)"
    assert (one.limit, one.name, one.lease) == (2, name, 30.0)
    first, second = one.acquire(0), other.acquire(0)
    assert first is not None and second is not None and first != second
    assert other.acquire(0) is None
    apart = elsewhere.acquire(0)
    assert apart is not None
    assert (one.in_use(), one.held(), other.held(), one.waiting()) == (2, 1, 1, 0)
    one.release(first)
    one.release(first)  # again: ignored
    one.release(second)  # not this limiter's: ignored
    assert one.in_use() == 1
    third = other.acquire(0)
    assert third is not None
    for limiter, slot in ((other, second), (other, third), (elsewhere, apart)):
        limiter.release(slot)


def test_held_slots_are_renewed_by_one_thread_that_ends_when_none_is_held(redis_server: RedisServer, name: str) -> None:
    holder = RedisLimiter(redis_server.client(), 1, name=name, lease=0.5)
    other = RedisLimiter(redis_server.client(), 1, name=name, lease=0.5)
    slot = holder.acquire(0)
    renewers = [t for t in threading.enumerate() if t.name.startswith("avatarsdk-limiter-")]
    assert len(renewers) == 1
    assert other.acquire(1.6) is None  # three leases long: renewed all along
    holder.release(slot)
    renewers[0].join(5)
    assert not renewers[0].is_alive()
    again = other.acquire(0)
    assert again is not None
    other.release(again)


def test_a_lease_that_ran_out_counts_again_and_is_warned_about(
    redis_server: RedisServer, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_server.client()
    limiter = RedisLimiter(client, 1, name=name, lease=0.5)
    with caplog.at_level(logging.WARNING, logger="avatarsdk"):
        slot = limiter.acquire(0)
        client.zrem(f"avatarsdk:limiter:{{{name}}}:slots", str(slot))  # as if the process had paused too long
        assert limiter.in_use() == 0
        wait_until(lambda: limiter.in_use() == 1, "the renewal to put the lease back", timeout=5)
        wait_until(lambda: any("had run out" in r.getMessage() for r in caplog.records), "the warning", timeout=5)
    limiter.release(slot)


def test_a_client_that_decodes_responses_works_too(redis_server: RedisServer, name: str) -> None:
    limiter = RedisLimiter(redis_server.client(decode_responses=True), 1, name=name)
    slot = limiter.acquire(0)
    assert limiter.acquire(0.05) is None
    limiter.release(slot)
    assert limiter.in_use() == 0


def test_the_arguments_are_checked(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with pytest.raises(TypeError, match=r"^redis: expected a redis.Redis client, got str$"):
        RedisLimiter("redis://localhost", 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^limit: expected at least 1 concurrent session, got 0$"):
        RedisLimiter(client, 0)
    with pytest.raises(ValueError, match=r"^name: expected no braces"):
        RedisLimiter(client, 2, name="{plan}")
    with pytest.raises(ValueError, match=r"^name: expected a non-empty string"):
        RedisLimiter(client, 2, name=" ")
    with pytest.raises(ValueError, match=r"^lease: expected 0.5 to 86400 seconds, got 0.1$"):
        RedisLimiter(client, 2, lease=0.1)
    with pytest.raises(TypeError, match=r"^lease: expected seconds as a number, got NoneType$"):
        RedisLimiter(client, 2, lease=None)  # type: ignore[arg-type]


def test_redis_unreachable_is_a_retryable_connection_failure() -> None:
    limiter = RedisLimiter(redis.Redis(port=unused_port(), retry=NO_RETRY), 2, name="down")
    with pytest.raises(SessionTokenError) as caught:
        limiter.acquire(1)
    err = caught.value
    assert (err.code, err.retryable, err.phase) == (AvatarSDKErrorCode.connectionFailed, True, "session_token")
    assert err.message.startswith("limiter RedisLimiter(name='down', limit=2): Redis is unreachable (ConnectionError")


def test_a_refused_password_is_not_worth_retrying_and_never_shown(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--requirepass", "right-secret").start()
    try:
        limiter = RedisLimiter(server.client(password="wrong-secret"), 2, name="auth")
        with pytest.raises(SessionTokenError) as caught:
            limiter.acquire(1)
    finally:
        server.stop()
    err = caught.value
    assert (err.code, err.retryable) == (AvatarSDKErrorCode.connectionFailed, False)
    assert "Redis refused a command (AuthenticationError" in err.message
    assert "secret" not in err.message and "secret" not in repr(err)


def test_a_forked_child_holds_none_of_its_parents_slots(redis_server: RedisServer, name: str) -> None:
    limiter = RedisLimiter(redis_server.client(), 1, name=name)
    slot = limiter.acquire(0)

    def child() -> Dict[str, Any]:
        held = limiter.held()
        limiter.release(slot)  # the parent's: not given back from here
        return {"held": held, "took": limiter.acquire(0) is not None}

    assert in_forked_child(child) == {"held": 0, "took": False}
    assert (limiter.in_use(), limiter.held()) == (1, 1)
    limiter.release(slot)


def test_redis_lost_while_a_session_holds_a_slot(
    tmp_path: Path,
    make_session: Callable[..., AvatarSession],
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer(tmp_path).start()
    try:
        session = started(make_session, limiter=RedisLimiter(server.client(), 1, name="lost"))
    finally:
        server.stop()
    with caplog.at_level(logging.WARNING, logger="avatarsdk"):
        session.close()  # the slot cannot be given back: its lease runs out by itself
    assert recorder.closes == 1
    assert any("could not give slot" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------- several processes


def test_sessions_in_several_processes_never_exceed_the_limit(
    service: FakeAvatarService, redis_server: RedisServer, name: str
) -> None:
    service.frame_interval = 0.01  # each utterance takes a while: without the limiter, sessions overlap
    spec = spec_for(redis_server, name, limit=2, mode="sessions", threads=3, sessions=2)
    workers = [spawn(dict(spec, credentials=service.credentials())) for _ in range(3)]
    reports = [finish(worker) for worker in workers]
    assert reports == [{"done": 6, "errors": []}] * 3
    assert len(service.connections) == 18
    assert service.max_open_connections == 2  # the limit, reached and never passed
    assert RedisLimiter(redis_server.client(), 2, name=name).in_use() == 0


def test_a_killed_process_gives_its_slots_back_within_the_lease(
    service: FakeAvatarService, redis_server: RedisServer, name: str
) -> None:
    lease = 1.0
    limiter = RedisLimiter(redis_server.client(), 2, name=name, lease=lease)
    worker = spawn(
        spec_for(redis_server, name, limit=2, lease=lease, mode="hold", count=2, credentials=service.credentials())
    )
    line = worker.stdout.readline() if worker.stdout else ""
    if not line:
        worker.wait(30)
        raise AssertionError(worker.stderr.read() if worker.stderr else "the worker ended")
    assert json.loads(line) == "holding"
    assert (limiter.in_use(), service.open_connections) == (2, 2)
    worker.kill()  # SIGKILL: no close(), no release, no more renewals
    killed = time.monotonic()
    worker.communicate(timeout=30)
    service.wait_for_open_connections(0)  # the kernel closed its sockets: the service sees the sessions end
    slots = [limiter.acquire(lease + 1.5), limiter.acquire(lease + 1.5)]
    assert None not in slots, f"the killed process's slots did not come back within {lease + 1.5}s"
    assert time.monotonic() - killed < lease + 1.5
    for slot in slots:
        limiter.release(slot)


def test_waiters_in_several_processes_are_served_in_arrival_order(redis_server: RedisServer, name: str) -> None:
    client = redis_server.client()
    limiter = RedisLimiter(client, 1, name=name)
    slot = limiter.acquire(0)
    order_key = f"order-{name}"
    workers: List[subprocess.Popen[str]] = []
    for i in range(4):
        workers.append(spawn(spec_for(redis_server, name, mode="wait", label=f"w{i}", order_key=order_key)))
        wait_until(lambda i=i: limiter.waiting() == i + 1, f"worker {i} to queue")  # type: ignore[misc]
    limiter.release(slot)
    for worker in workers:
        finish(worker)
    assert client.lrange(order_key, 0, -1) == [b"w0", b"w1", b"w2", b"w3"]
    assert (limiter.in_use(), limiter.waiting()) == (0, 0)


def test_a_session_in_another_process_times_out_with_concurrency_limit(
    service: FakeAvatarService, redis_server: RedisServer, name: str
) -> None:
    limiter = RedisLimiter(redis_server.client(), 1, name=name)
    slot = limiter.acquire(0)
    report = finish(
        spawn(spec_for(redis_server, name, mode="try", limiter_timeout=0.3, credentials=service.credentials()))
    )
    assert report["code"] == "concurrencyLimit" and report["retryable"] and report["phase"] == "session_token"
    assert f"no slot of RedisLimiter(name={name!r}, limit=1) came free within 0.3s" in report["message"]
    assert service.token_requests == []  # no token was asked for
    assert (limiter.in_use(), limiter.waiting()) == (1, 0)
    limiter.release(slot)


def test_a_session_in_another_process_with_redis_down_fails_clearly(service: FakeAvatarService) -> None:
    spec = {"redis_port": unused_port(), "name": "down", "limit": 2, "lease": 5.0, "mode": "try"}
    report = finish(spawn(dict(spec, limiter_timeout=5, credentials=service.credentials())))
    assert report["code"] == "connectionFailed" and report["retryable"] and report["phase"] == "session_token"
    assert "RedisLimiter(name='down', limit=2): Redis is unreachable" in report["message"]
    assert service.token_requests == []
