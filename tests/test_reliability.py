"""Reliability and security: keepalive, TLS options, proxies, insecure-transport warnings, many open/close
cycles, back-pressure. Faults are injected over real sockets (FaultProxy, a CONNECT proxy, TLS stand-ins)."""

from __future__ import annotations

import gc
import os
import ssl
import threading
import time
import tracemalloc
from typing import Any, Callable, List
from urllib.parse import urlsplit

import pytest
import trustme
import websocket
from _connect_proxy import ConnectProxy
from conftest import Recorder, loopback_buffering, pcm, started, wait_until

import avatarsdk
from avatarsdk import AvatarSDKErrorCode, AvatarSession, InsecureTransportWarning, SessionTokenError, new_avatar_session
from avatarsdk.testing import FakeAvatarService, FaultProxy

MakeSession = Callable[..., AvatarSession]
RECV_BLOCK = 64 * 1024  # the most bytes the reader takes from the socket at once


def avatarsdk_threads() -> List[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("avatarsdk-")]


# ------------------------------------------------------------------------------------------ keepalive


def test_pings_keep_an_idle_connection_alive(service: FakeAvatarService, make_session: MakeSession) -> None:
    with FaultProxy(service.ingress_url) as proxy:
        session = started(make_session, ingress_endpoint_url=proxy.url, ping_interval=0.1, ping_timeout=1.0)
        after_handshake = proxy.bytes_up
        proxy.wait_for(lambda: proxy.bytes_up >= after_handshake + 3 * 15)  # pings (masked, ~15 bytes each)
        frames = session.collect(pcm(0.08))  # still alive and working
        assert len(frames) == 2
        session.close()


def test_a_dead_peer_is_detected_within_interval_plus_timeout(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    with FaultProxy(service.ingress_url) as proxy:
        started(make_session, ingress_endpoint_url=proxy.url, ping_interval=0.3, ping_timeout=0.3)
        proxy.blackhole()  # no FIN, no data: a dead peer
        began = time.monotonic()
        recorder.wait_closed(timeout=5)
        elapsed = time.monotonic() - began
    assert elapsed < 0.3 + 0.3 + 1.0  # interval + timeout, with room for a loaded machine
    err = recorder.errors[0]
    assert (err.code, err.close_code, err.retryable) == (AvatarSDKErrorCode.connectionClosed, 1006, True)
    assert "ping" in err.message
    assert recorder.events[-2:] == ["error:connectionClosed", "close"]


def test_keepalive_off_leaves_a_silent_connection_open(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    with FaultProxy(service.ingress_url) as proxy:
        session = started(make_session, ingress_endpoint_url=proxy.url, ping_interval=None)
        proxy.blackhole()
        with pytest.raises(AssertionError):  # nothing ends it: no keepalive was asked for
            recorder.wait_closed(timeout=1.0)
        proxy.resume()
        session.close()
    assert recorder.errors == []


# ------------------------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_service(
    ca: trustme.CA, *, client_ca: Any = None, hosts: tuple = ("127.0.0.1", "localhost")
) -> FakeAvatarService:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hosts).configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return FakeAvatarService(ssl_context=context)


def test_tls_with_a_custom_ca_bundle(ca: trustme.CA, tmp_path: Any, make_session: MakeSession) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with tls_service(ca) as svc:
        assert svc.ingress_url.startswith("https://")
        session = make_session(**svc.session_kwargs(ca_bundle=str(bundle)))
        session.init()
        session.start()
        assert len(session.collect(pcm(0.12))) == 3
        session.close()


def test_tls_verification_is_on_by_default(ca: trustme.CA, make_session: MakeSession) -> None:
    with tls_service(ca) as svc:
        session = make_session(**svc.session_kwargs(http_retries=0))
        with pytest.raises(SessionTokenError) as info:
            session.init()
    assert info.value.code is AvatarSDKErrorCode.connectionFailed
    assert "SSL" in info.value.message  # the reason's class, e.g. SSLError / SSLCertVerificationError


def test_the_websocket_verifies_too(ca: trustme.CA, tmp_path: Any, make_session: MakeSession) -> None:
    """Token call trusted (custom bundle), WebSocket from a server with an unknown CA: refused."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    other = trustme.CA()
    with tls_service(ca) as console, tls_service(other) as ingress:
        session = make_session(
            **console.session_kwargs(ingress_endpoint_url=ingress.ingress_url, ca_bundle=str(bundle))
        )
        session.init()
        with pytest.raises(Exception) as info:
            session.start()
    err = info.value
    assert getattr(err, "code", None) is AvatarSDKErrorCode.connectionFailed
    assert "certificate verification failed" in str(err)


def test_a_client_certificate_is_presented(ca: trustme.CA, tmp_path: Any, make_session: MakeSession) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    client_ca = trustme.CA()
    client = client_ca.issue_cert("client@example.test")
    pem = tmp_path / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(pem))
    with tls_service(ca, client_ca=client_ca) as svc:
        session = make_session(**svc.session_kwargs(ca_bundle=str(bundle), client_cert=str(pem)))
        session.init()
        session.start()
        assert len(session.collect(pcm(0.04))) == 1
        session.close()
        refused = make_session(**svc.session_kwargs(ca_bundle=str(bundle), http_retries=0))
        with pytest.raises(SessionTokenError):
            refused.init()


def test_tls_options_are_checked_before_any_io(service: FakeAvatarService, make_session: MakeSession) -> None:
    with pytest.raises(ValueError, match="ca_bundle"):
        make_session(ca_bundle="/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="client_cert"):
        make_session(client_cert=("/nonexistent/c.pem", "/nonexistent/k.pem"))
    with pytest.raises(ValueError, match="proxy"):
        make_session(proxy="socks5://127.0.0.1:1080")
    with pytest.warns(InsecureTransportWarning, match="verify_tls=False"):
        make_session(verify_tls=False)
    assert service.token_requests == []


# ---------------------------------------------------------------------------------------------- proxies


def test_an_explicit_proxy_carries_both_connections(ca: trustme.CA, tmp_path: Any, make_session: MakeSession) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with tls_service(ca) as svc, ConnectProxy() as proxy:
        session = make_session(**svc.session_kwargs(ca_bundle=str(bundle), proxy=proxy.url))
        session.init()
        session.start()
        assert len(session.collect(pcm(0.04))) == 1
        session.close()
        ports = {port for _, port in proxy.targets}
        expected = {urlsplit(svc.console_url).port, urlsplit(svc.ingress_url).port}
    assert ports == expected


def test_environment_proxies_are_honoured(
    ca: trustme.CA, tmp_path: Any, make_session: MakeSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY applies to both, as requests and websocket-client users expect (websocket-client exempts
    localhost and 127.0.0.1 by default, so the service is addressed as 127.0.0.2, which the proxy maps back)."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with tls_service(ca, hosts=("127.0.0.2",)) as svc, ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        kwargs = svc.session_kwargs(ca_bundle=str(bundle))
        for key in ("console_endpoint_url", "ingress_endpoint_url"):
            kwargs[key] = kwargs[key].replace("127.0.0.1", "127.0.0.2")
        session = make_session(**kwargs)
        session.init()
        session.start()
        session.close()
        hosts = {host for host, _ in proxy.targets}
    # both connections went through it (the ingress may be reached twice: init() opens it ahead, and start()
    # replaces a connection it finds unusable)
    assert hosts == {"127.0.0.2"} and len(set(proxy.targets)) == 2


def test_loopback_under_an_environment_proxy_as_each_websocket_client_does(
    ca: trustme.CA, tmp_path: Any, make_session: MakeSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTPS_PROXY set and NO_PROXY unset, the token call (requests) goes through the proxy even to
    127.0.0.1; the WebSocket does only from websocket-client 1.9.0 on (1.6.0 to 1.8.x exempt ``localhost`` and
    ``127.0.0.1`` while NO_PROXY is empty), as docs/GUIDE.md says."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with tls_service(ca) as svc, ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        for name in ("NO_PROXY", "no_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        session = make_session(**svc.session_kwargs(ca_bundle=str(bundle)))
        session.init()
        session.start()
        session.close()
        ports = {port for _, port in proxy.targets}
        console, ingress = urlsplit(svc.console_url).port, urlsplit(svc.ingress_url).port
    version = tuple(int(part) for part in websocket.__version__.split(".")[:2])
    assert ports == ({console, ingress} if version >= (1, 9) else {console}), (websocket.__version__, ports)


# ------------------------------------------------------------------------------------ insecure transport


@pytest.mark.parametrize(
    ("field", "url", "what"),
    [
        ("console_endpoint_url", "http://console.example", "the API key"),
        ("ingress_endpoint_url", "ws://ingress.example/v2/driveningress", "the session token"),
    ],
)
def test_credentials_over_plain_transport_to_another_host_warn(
    service: FakeAvatarService, field: str, url: str, what: str
) -> None:
    with pytest.warns(InsecureTransportWarning, match=f"{what} would travel unencrypted") as record:
        new_avatar_session(**service.session_kwargs(**{field: url})).close()
    assert record[0].filename == __file__  # the warning points at the caller's line


def test_loopback_plain_transport_does_not_warn(service: FakeAvatarService) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new_avatar_session(**service.session_kwargs()).close()  # http://127.0.0.1: no warning


# ------------------------------------------------------------------------------------ open/close cycles

CYCLES = int(os.environ.get("AVATARSDK_CYCLES", "400"))  # more on demand: AVATARSDK_CYCLES=5000 pytest -k cycles


def test_open_close_cycles_leave_nothing_behind(service: FakeAvatarService) -> None:
    """Threads, descriptors and the SDK's memory are flat over ``CYCLES`` sessions opened and closed every way
    (after a frame, from inside a callback, racing a server drop): the SDK's traced memory grows by under 100
    bytes a cycle."""

    def cycle(i: int) -> None:
        sessions: List[AvatarSession] = []
        from_callback = i % 7 == 0  # close from inside transport_frames
        ended = threading.Event()
        session = new_avatar_session(
            **service.session_kwargs(ping_interval=None),
            transport_frames=(lambda frame, last: sessions[0].close()) if from_callback else None,
            on_close=ended.set,
        )
        sessions.append(session)
        session.init()
        session.start()
        if i % 3 == 0 or from_callback:
            session.send_audio(pcm(0.02), end=True)
        if i % 5 == 0:
            service.connection().drop()  # close racing a server drop
        if from_callback and not ended.wait(5):
            raise AssertionError("close() from the callback did not end the session")
        session.close()

    for i in range(20):  # warm-up: allocator pools, imports, the fake's threads
        cycle(i)
    gc.collect()
    fds_before = len(os.listdir("/proc/self/fd"))
    threads_before = threading.active_count()
    package = os.path.dirname(avatarsdk.__file__)
    sdk_only = [  # the stand-in keeps a record of every connection: not the SDK's memory
        tracemalloc.Filter(True, os.path.join(package, "*")),
        tracemalloc.Filter(False, os.path.join(package, "testing", "*")),
    ]
    tracemalloc.start(1)
    try:
        base = tracemalloc.take_snapshot().filter_traces(sdk_only)
        for i in range(CYCLES):
            cycle(i)
        # The stand-in's records hold websockets objects whose deque blocks CPython may have recycled from
        # the SDK's (tracemalloc then counts them as the SDK's): drop them first.
        for conn in service.connections:
            conn.wait_closed()
        service.clear_records()
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(sdk_only)
        grown = sum(stat.size_diff for stat in after.compare_to(base, "filename"))
    finally:
        tracemalloc.stop()
    assert avatarsdk_threads() == []
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 5  # the fake's own sockets may be closing
    assert threading.active_count() <= threads_before + 5
    assert grown < 100 * CYCLES, f"the SDK holds {grown} bytes more after {CYCLES} cycles"


# --------------------------------------------------------------------------------------- back-pressure


def test_a_slow_consumer_holds_back_the_stream_without_losing_frames(
    make_session: MakeSession, recorder: Recorder
) -> None:
    """A callback far slower than the stream: the queue stays bounded (the reader stops reading, TCP pushes
    back on the server) and every frame arrives, once and in order. The stream is sized past everything the
    kernel can buffer on the connection, so the server must be held back."""
    size = 16000
    count = (loopback_buffering() + (8 << 20)) // size
    release = threading.Event()
    seen: List[bytes] = []

    def slow(frame: bytes, last: bool) -> None:
        release.wait(30)
        seen.append(frame)

    with FakeAvatarService(frames_per_request=count, frame_size=size) as svc:
        session = make_session(**svc.session_kwargs(transport_frames=slow), max_queued_frames=64)
        try:
            session.init()
            session.start()
            session.send_audio(pcm(0.04), end=True)
            conn = svc.wait_for_connection(0)
            conn.wait_for(lambda: len(conn.sent) > 64)
            # The server cannot get everything out: the client's queue and the socket buffers are full.
            with pytest.raises(TimeoutError):
                conn.wait_for(lambda: len(conn.sent) == count, timeout=1.0)
            # bounded: at most one block of the socket's bytes beyond the limit
            assert session.backlog.messages <= 64 + 300
        finally:
            release.set()
        conn.wait_for(lambda: len(conn.sent) == count, timeout=60)
        session.close()
    assert seen == conn.sent_frames()


def test_the_queue_is_bounded_by_bytes_as_well_as_by_messages(make_session: MakeSession) -> None:
    """max_queued_bytes: with 16 KiB frames and a callback that stopped, the messages waiting for the callbacks
    stay within the byte bound (plus one read block), far below what max_queued_frames alone would let wait
    (4096 of them: 64 MiB); the server is held back by TCP and nothing is lost."""
    size, bound = 16000, 256 * 1024
    count = (loopback_buffering() + (8 << 20)) // size
    release = threading.Event()
    seen: List[bytes] = []

    def stopped(frame: bytes, last: bool) -> None:
        release.wait(30)
        seen.append(frame)

    with FakeAvatarService(frames_per_request=count, frame_size=size) as svc:
        session = make_session(**svc.session_kwargs(transport_frames=stopped), max_queued_bytes=bound)
        try:
            session.init()
            session.start()
            session.send_audio(pcm(0.04), end=True)
            conn = svc.wait_for_connection(0)
            conn.wait_for(lambda: len(conn.sent) > bound // size)
            with pytest.raises(TimeoutError):  # the server cannot get everything out
                conn.wait_for(lambda: len(conn.sent) == count, timeout=1.0)
            backlog = session.backlog
            assert (bound - RECV_BLOCK) // size - 1 <= backlog.messages <= (bound + RECV_BLOCK) // size + 1, backlog
            assert backlog.bytes <= bound + RECV_BLOCK + size, backlog
        finally:
            release.set()
        conn.wait_for(lambda: len(conn.sent) == count, timeout=60)
        session.close()
    assert seen == conn.sent_frames()


def test_the_default_byte_bound_holds_a_few_mebibytes(make_session: MakeSession) -> None:
    """Without options: 4 MiB of 16 KiB frames wait at most (4096 messages alone would be 64 MiB)."""
    size = 16000
    count = (loopback_buffering() + (12 << 20)) // size
    release = threading.Event()

    with FakeAvatarService(frames_per_request=count, frame_size=size) as svc:
        session = make_session(**svc.session_kwargs(transport_frames=lambda frame, last: release.wait(30)))
        try:
            session.init()
            session.start()
            session.send_audio(pcm(0.04), end=True)
            conn = svc.wait_for_connection(0)
            conn.wait_for(lambda: len(conn.sent) > (4 << 20) // size)
            with pytest.raises(TimeoutError):
                conn.wait_for(lambda: len(conn.sent) == count, timeout=1.0)
            assert session.backlog.bytes <= (4 << 20) + RECV_BLOCK + size, session.backlog
        finally:
            release.set()
        conn.wait_for(lambda: len(conn.sent) == count, timeout=120)
        session.close()


def test_a_message_larger_than_the_byte_bound_still_passes_alone(make_session: MakeSession) -> None:
    """A bound smaller than one message: each message still gets through, alone (with at most what the same
    read block completed), in order, none lost."""
    gate, done = threading.Event(), threading.Event()
    seen: List[bytes] = []

    def first_waits(frame: bytes, last: bool) -> None:
        if not seen:
            gate.wait(30)
        seen.append(frame)
        if last:
            done.set()

    with FakeAvatarService(frames_per_request=8, frame_size=50_000) as svc:
        session = make_session(**svc.session_kwargs(transport_frames=first_waits), max_queued_bytes=10_000)
        session.init()
        session.start()
        session.send_audio(pcm(0.04), end=True)
        conn = svc.wait_for_connection(0)
        try:
            conn.wait_for(lambda: len(conn.sent) >= 3)
            wait_until(lambda: session.backlog.messages >= 1, "a message waiting")
            samples = [session.backlog for _ in range(200)]
            assert all(b.messages <= 2 for b in samples), max(samples)
        finally:
            gate.set()
        assert done.wait(10)
        session.close()
    assert seen == conn.sent_frames()
