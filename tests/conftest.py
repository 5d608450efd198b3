"""Shared fixtures: a fresh stand-in service per test, callback recorders, and a thread-leak guard."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
import time
import types
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import settings as hypothesis_settings

from avatarsdk import (
    AvatarSDKError,
    AvatarSDKErrorCode,
    AvatarSession,
    ReconnectPolicy,
    SessionConfig,
    new_avatar_session,
)
from avatarsdk.testing import FakeAvatarService

try:  # the audio extra: Ogg Opus encoding and compressed formats; tests that need it skip without it
    import av  # noqa: F401

    HAVE_PYAV = True
except ImportError:
    HAVE_PYAV = False
needs_pyav = pytest.mark.skipif(not HAVE_PYAV, reason='needs PyAV: pip install "avatarsdk[audio]"')

# CI (.ci/run sets CI) replays the same examples on every run, so that a gate never fails on an example drawn for
# the first time; runs elsewhere draw new examples each time (tests/test_properties.py prints how to replay one).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


# What a close frame from the server means (docs/GUIDE.md "Errors"): close code, the error reported, whether retryable.
CLOSE_CODE_ERRORS: Tuple[Tuple[int, AvatarSDKErrorCode, bool], ...] = (
    (1011, AvatarSDKErrorCode.connectionClosed, True),
    (4001, AvatarSDKErrorCode.creditsExhausted, False),
    (4002, AvatarSDKErrorCode.sessionDurationExceeded, True),
    (4003, AvatarSDKErrorCode.concurrencyLimit, False),
    (4010, AvatarSDKErrorCode.sessionTokenInvalid, False),
    (4503, AvatarSDKErrorCode.upstreamError, True),
    (1008, AvatarSDKErrorCode.connectionClosed, False),
)

# Reconnects with no waiting between attempts, for tests.
FAST_RECONNECT = ReconnectPolicy(initial_delay=0.0, max_delay=0.05, jitter=0.0, max_attempts=3)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves an ``avatarsdk-*`` thread running (after a bounded join)."""
    before = set(threading.enumerate())
    yield
    leaked = []
    for thread in threading.enumerate():
        if thread in before or not thread.name.startswith("avatarsdk-"):
            continue
        thread.join(5)
        if thread.is_alive():
            leaked.append(thread.name)
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def service() -> Iterator[FakeAvatarService]:
    with FakeAvatarService() as svc:
        yield svc


class Recorder:
    """Collects what a session's callbacks receive; waits on conditions instead of sleeping."""

    def __init__(self) -> None:
        self.frames: List[bytes] = []
        self.lasts: List[bool] = []
        self.errors: List[AvatarSDKError] = []
        self.closes = 0
        self.threads: List[str] = []
        self.events: List[str] = []  # "frame", "error:<code>", "close", in the order delivered
        self._cond = threading.Condition()

    # callbacks
    def transport_frames(self, frame: bytes, last: bool) -> None:
        with self._cond:
            self.frames.append(frame)
            self.lasts.append(last)
            self.threads.append(threading.current_thread().name)
            self.events.append("frame")
            self._cond.notify_all()

    def on_error(self, err: AvatarSDKError) -> None:
        with self._cond:
            self.errors.append(err)
            self.threads.append(threading.current_thread().name)
            self.events.append(f"error:{err.code.value}")
            self._cond.notify_all()

    def on_close(self) -> None:
        with self._cond:
            self.closes += 1
            self.threads.append(threading.current_thread().name)
            self.events.append("close")
            self._cond.notify_all()

    def callbacks(self) -> Dict[str, Any]:
        return {"transport_frames": self.transport_frames, "on_error": self.on_error, "on_close": self.on_close}

    # waiting
    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}; events so far: {self.events}")
                self._cond.wait(remaining)

    def wait_frames(self, count: int, timeout: float = 5.0) -> None:
        self.wait_for(lambda: len(self.frames) >= count, timeout, f"{count} frames")

    def wait_last(self, count: int = 1, timeout: float = 5.0) -> None:
        self.wait_for(lambda: sum(self.lasts) >= count, timeout, f"{count} last frames")

    def wait_error(self, count: int = 1, timeout: float = 5.0) -> AvatarSDKError:
        self.wait_for(lambda: len(self.errors) >= count, timeout, f"{count} errors")
        return self.errors[count - 1]

    def wait_closed(self, timeout: float = 5.0) -> None:
        self.wait_for(lambda: self.closes >= 1, timeout, "on_close")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_session(service: FakeAvatarService, recorder: Recorder) -> Iterator[Callable[..., AvatarSession]]:
    """Build sessions against the fake service with the recorder's callbacks; closes them after the test."""
    made: List[AvatarSession] = []

    def make(**overrides: Any) -> AvatarSession:
        kwargs = service.session_kwargs(**recorder.callbacks())
        kwargs.update(overrides)
        session = new_avatar_session(**kwargs)
        made.append(session)
        return session

    yield make
    for session in made:
        session.close()


def pcm(seconds: float, sample_rate: int = 16000) -> bytes:
    """Silence as PCM s16le mono."""
    return b"\x00\x00" * int(seconds * sample_rate)


def started(make_session: Callable[..., AvatarSession], **overrides: Any) -> AvatarSession:
    session = make_session(**overrides)
    session.init()
    session.start()
    return session


def unused_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15.0, interval: float = 0.002) -> Any:
    """Re-check ``predicate`` until it returns something true (returned); ``timeout`` is only an upper bound. For
    conditions nothing notifies (the SDK's public state); wait on a notification wherever there is one."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def failing_runtime(exc: BaseException) -> Any:
    """A stand-in for a generated protobuf module whose parser raises ``exc`` (runtimes differ in what they
    raise)."""

    class Message:
        def ParseFromString(self, data: bytes) -> None:
            raise exc

    return types.SimpleNamespace(Message=Message)


def tcp_buffer_limit(kind: str) -> int:
    """The largest ``"rmem"`` (receive) or ``"wmem"`` (send) buffer the kernel gives a TCP socket; 32 MiB where
    it cannot be read."""
    try:
        with open(f"/proc/sys/net/ipv4/tcp_{kind}") as limits:
            return int(limits.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 32 << 20


def loopback_buffering() -> int:
    """The most bytes the kernel may buffer on one loopback TCP connection (receive plus send)."""
    return tcp_buffer_limit("rmem") + tcp_buffer_limit("wmem")


def valid_config(**changes: Any) -> SessionConfig:
    """A valid configuration (PCM, 16 kHz, the v2 ingress), with ``changes``."""
    fields: Dict[str, Any] = {
        "avatar_id": "avatar-1",
        "api_key": "sk-live-1",
        "app_id": "app-1",
        "expire_at": datetime.now(timezone.utc) + timedelta(hours=1),
        "console_endpoint_url": "https://console.example",
        "ingress_endpoint_url": "https://ingress.example/v2/driveningress",
    }
    fields.update(changes)
    return SessionConfig(**fields)


WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_for(head: bytes) -> str:
    """The ``Sec-WebSocket-Accept`` that answers the upgrade request ``head``."""
    key = next(
        line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key")
    )
    return base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest()).decode()


def switching(head: bytes, extra: str = "") -> bytes:
    """A ``101 Switching Protocols`` answer to the upgrade request ``head`` (``extra``: more header lines)."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_for(head)}\r\n{extra}\r\n"
    ).encode()


Answer = Callable[[bytes], List[bytes]]  # a request's head -> the writes that answer it


class RawServer:
    """A loopback TCP server for what the stand-in cannot do: for each connection (one at a time) it reads the
    request head, writes what ``answer`` gives, then reads until the client closes (``drain``) or holds the
    connection without reading until ``close()``. ``rcvbuf``: a small receive buffer, so that a client sending
    to a server that does not read blocks soon."""

    def __init__(self, answer: Answer, *, drain: bool = True, rcvbuf: Optional[int] = None) -> None:
        self.answer = answer
        self.drain = drain
        self.requests: List[bytes] = []
        self._listener = socket.socket()
        if rcvbuf is not None:  # before listen(): the accepted sockets inherit it
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-raw-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with client:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = client.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                if not head:
                    continue  # closed without a request: a connection opened ahead and never used
                self.requests.append(head)
                try:
                    for write in self.answer(head):
                        client.sendall(write)
                    if self.drain:
                        while client.recv(4096):
                            pass
                    else:
                        self._stop.wait(60)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() alone would not)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(5)


def optional(value: Optional[Any]) -> Any:
    assert value is not None
    return value


def in_forked_child(work: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """Run ``work`` in a child made by ``os.fork()`` and return its JSON report (``{"error": ...}`` if it
    raised); the child never returns to the test framework. Asserts the child exited cleanly."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() with threads running
        pid = os.fork()
    if pid == 0:
        try:
            report = work()
        except BaseException as exc:
            report = {"error": repr(exc)}
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as reader:
        report = json.loads(reader.read())
    assert status == 0 and "error" not in report, report
    return report
