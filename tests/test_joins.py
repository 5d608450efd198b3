"""Joins in few round trips: the token calls' shared kept-alive connections, the ingress connection opened while
the token call runs, and one TLS context per trust configuration (over real sockets, TLS with trustme)."""

from __future__ import annotations

import gc
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import pytest
import trustme
from _connect_proxy import ConnectProxy
from conftest import pcm

from avatarsdk import (
    AvatarSDKError,
    AvatarSDKErrorCode,
    AvatarSession,
    SessionPool,
    SessionTokenError,
    _http_pool,
    _preconnect,
    _tls,
    new_avatar_session,
)
from avatarsdk._preconnect import Preconnect
from avatarsdk.testing import FakeAvatarService, FaultProxy

MakeSession = Callable[..., AvatarSession]


@pytest.fixture(autouse=True)
def fresh_pools() -> Iterator[None]:
    _http_pool.close_all()
    yield
    _http_pool.close_all()


def preconnect_of(session: AvatarSession) -> Optional[Preconnect]:
    return session._connector.ahead.pre


def opened_socket(session: AvatarSession) -> socket.socket:
    """The connection ``init()`` opened ahead, once open."""
    pre = preconnect_of(session)
    assert pre is not None
    pre.thread.join(5)
    sock = pre._outcome
    assert isinstance(sock, socket.socket), sock
    return sock


# ---------------------------------------------------------------------------------------- token calls


def test_later_sessions_reuse_the_console_connection(service: FakeAvatarService, make_session: MakeSession) -> None:
    with FaultProxy(service.console_url) as console:
        for _ in range(3):
            session = make_session(console_endpoint_url=console.url)
            session.init()
            session.close()
        assert console.connections == 1
        assert len(service.token_requests) == 3


def test_sessions_on_threads_share_a_small_pool(service: FakeAvatarService, make_session: MakeSession) -> None:
    with FaultProxy(service.console_url) as console:
        sessions = [make_session(console_endpoint_url=console.url) for _ in range(8)]
        threads = [threading.Thread(target=s.init) for s in sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert all(s.config for s in sessions) and len(service.token_requests) == 8
        opened = console.connections
        for session in sessions:  # kept: at most POOL_SIZE connections, reused
            session.init()
        assert console.connections == opened
        assert opened <= 8
        for session in sessions:
            session.close()


def test_a_forked_child_opens_its_own_console_connection(service: FakeAvatarService, make_session: MakeSession) -> None:
    with FaultProxy(service.console_url) as console:
        make_session(console_endpoint_url=console.url).init()
        assert console.connections == 1
        pid = os.fork()
        if pid == 0:  # the child: a token over a connection of its own, never the parent's socket
            status = 1
            try:
                child = new_avatar_session(**service.session_kwargs(console_endpoint_url=console.url))
                child.init()
                child.close()
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert console.connections == 2
        make_session(console_endpoint_url=console.url).init()  # the parent's connection still works
        assert console.connections == 2
        assert len(service.token_requests) == 3


class DroppingConsole:
    """A console that answers token calls kept alive, and closes a connection without answering when
    ``drop(n, k)`` says so for its n-th connection's k-th request (both from 1)."""

    def __init__(self, drop: Callable[[int, int], bool]) -> None:
        self.drop = drop
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.requests = 0
        self.threads: List[threading.Thread] = []
        self._start(self._accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._start(self._serve, conn, self.connections)

    def _serve(self, conn: socket.socket, number: int) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            for index in range(1, 100):
                line = reader.readline()
                if not line:
                    return
                length = 0
                while True:
                    header = reader.readline()
                    if header in (b"\r\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                reader.read(length)
                self.requests += 1
                if self.drop(number, index):
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                body = b'{"sessionToken": "t-%d-%d"}' % (number, index)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )

    def close(self) -> None:
        self.listener.close()


def test_a_connection_closed_by_the_server_as_the_call_goes_out_is_retried_once(make_session: MakeSession) -> None:
    console = DroppingConsole(lambda number, index: number == 1 and index == 2)
    try:
        first = make_session(console_endpoint_url=console.url, http_retries=0)
        first.init()
        second = make_session(console_endpoint_url=console.url, http_retries=0)
        second.init()  # its call went out on the kept-alive connection, which closed: once more on a new one
        assert second._core.token == "t-2-1"
        assert (console.connections, console.requests) == (2, 3)
    finally:
        console.close()


def test_a_new_connection_closed_without_an_answer_is_not_repeated(make_session: MakeSession) -> None:
    console = DroppingConsole(lambda number, index: True)
    try:
        session = make_session(console_endpoint_url=console.url, http_retries=0)
        with pytest.raises(SessionTokenError) as info:
            session.init()
        assert info.value.code is AvatarSDKErrorCode.connectionFailed
        assert console.requests == 1  # http_retries=0: the token call's own policy, no hidden repeat
    finally:
        console.close()


# ------------------------------------------------------------------------------ the connection opened ahead


def test_init_opens_the_ingress_connection_and_start_upgrades_it(
    service: FakeAvatarService, make_session: MakeSession
) -> None:
    with FaultProxy(service.ingress_url) as ingress:
        session = make_session(ingress_endpoint_url=ingress.url)
        session.init()
        ingress.wait_for(lambda: ingress.connections == 1)  # accepted before start()
        assert service.connections == []  # nothing upgraded, nothing billed
        session.start()
        assert ingress.connections == 1  # start() used it
        assert len(session.collect(pcm(0.12))) == 3
        session.close()


def test_a_connection_never_taken_is_closed(service: FakeAvatarService, make_session: MakeSession) -> None:
    session = make_session()
    session.init()
    first = opened_socket(session)
    session.init()  # again: a new token, and a new connection in place of the first
    assert first.fileno() == -1
    second = opened_socket(session)
    session.close()
    assert second.fileno() == -1
    assert service.connections == []

    dropped = new_avatar_session(**service.session_kwargs())  # not kept by the fixture
    dropped.init()
    third = opened_socket(dropped)
    del dropped
    gc.collect()
    assert third.fileno() == -1


def test_a_failed_init_closes_the_connection(service: FakeAvatarService, make_session: MakeSession) -> None:
    session = make_session(api_key="wrong", http_retries=0)
    with pytest.raises(SessionTokenError):
        session.init()
    assert preconnect_of(session) is None


def test_a_connection_the_server_dropped_is_replaced(service: FakeAvatarService, make_session: MakeSession) -> None:
    with FaultProxy(service.ingress_url) as ingress:
        session = make_session(ingress_endpoint_url=ingress.url)
        session.init()
        opened_socket(session)
        ingress.wait_for(lambda: ingress.connections == 1)  # the proxy has it too (its accept may lag the client's)
        ingress.reset()  # the server side of the waiting connection is gone
        session.start()
        assert ingress.connections == 2
        assert len(session.collect(pcm(0.08))) == 2
        session.close()


def test_an_old_connection_is_replaced(
    service: FakeAvatarService, make_session: MakeSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_preconnect, "MAX_AGE", 0.0)
    with FaultProxy(service.ingress_url) as ingress:
        session = make_session(ingress_endpoint_url=ingress.url)
        session.init()
        old = opened_socket(session)
        session.start()
        assert old.fileno() == -1 and ingress.connections == 2
        session.close()


def test_a_failed_connect_is_reported_by_start(service: FakeAvatarService, make_session: MakeSession) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    session = make_session(ingress_endpoint_url=f"http://127.0.0.1:{port}/v2/driveningress")
    session.init()  # the connect fails meanwhile; init() does not report it
    with pytest.raises(AvatarSDKError) as info:
        session.start()
    assert info.value.code is AvatarSDKErrorCode.connectionFailed
    assert info.value.phase == "websocket_connect"
    assert f"could not connect to 127.0.0.1:{port}" in info.value.message


# ---------------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_service(ca: trustme.CA, *names: str) -> FakeAvatarService:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
    return FakeAvatarService(ssl_context=context)


def test_one_tls_context_for_the_token_call_and_the_websocket(
    ca: trustme.CA, tmp_path: Path, make_session: MakeSession
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with tls_service(ca) as svc:
        built = _tls.builds
        for _ in range(3):
            session = make_session(**svc.session_kwargs(ca_bundle=str(bundle)))
            session.init()
            session.start()
            assert len(session.collect(pcm(0.08))) == 2
            session.close()
        # one context for both connections of all three sessions; under urllib3 1.x the token call's is a second
        # one, leaving the host name to urllib3 (see _tls)
        assert _tls.builds == built + (2 if _tls.URLLIB3_MATCHES_HOSTNAMES else 1)


def test_the_contexts_are_built_when_the_session_is_created(ca: trustme.CA, tmp_path: Path) -> None:
    """Creating the process's first session of a trust configuration loads its CA bundle: the join does not."""
    bundle = tmp_path / "created.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with tls_service(ca) as svc:
        built = _tls.builds
        session = new_avatar_session(**svc.session_kwargs(ca_bundle=str(bundle)))
        try:
            assert _tls.builds == built + (2 if _tls.URLLIB3_MATCHES_HOSTNAMES else 1)
            assert svc.issued_tokens == []  # nothing sent
            created = _tls.builds
            session.init()
            session.start()
            assert len(session.collect(pcm(0.08))) == 2
            assert _tls.builds == created
        finally:
            session.close()
        pool_kwargs = {k: v for k, v in svc.session_kwargs(ca_bundle=str(bundle)).items() if k != "expire_at"}
        with SessionPool(**pool_kwargs, max_size=1) as pool:
            assert _tls.builds == created  # the same configuration: the same contexts
            assert len(pool.collect(pcm(0.08))) == 2
        assert _tls.builds == created


@pytest.mark.parametrize("make", ["session", "pool"])
def test_a_ca_bundle_or_client_certificate_that_does_not_load_is_refused_at_creation(
    ca: trustme.CA, tmp_path: Path, service: FakeAvatarService, make: str
) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    good = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(good))
    secure = {"console_endpoint_url": "https://127.0.0.1:9", "ingress_endpoint_url": "wss://127.0.0.1:9/v2/x"}
    cases = [
        ({"ca_bundle": str(not_pem)}, f"ca_bundle: could not load {str(not_pem)!r} as PEM certificates ("),
        ({"ca_bundle": str(good), "client_cert": str(not_pem)}, f"client_cert: could not load {str(not_pem)!r}"),
        ({"client_cert": str(good)}, f"client_cert: could not load {str(good)!r} as a PEM certificate and key"),
    ]
    for options, message in cases:
        kwargs = {**service.session_kwargs(**secure), **options}
        with pytest.raises(ValueError) as info:
            if make == "pool":
                kwargs.pop("expire_at", None)
                SessionPool(**kwargs, max_size=1)
            else:
                new_avatar_session(**kwargs)
        assert str(info.value).startswith(message), info.value


def test_a_default_store_that_does_not_load_is_reported_by_init(
    tmp_path: Path, service: FakeAvatarService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An environment variable naming a bad file is the clients' own trust: the token call reports it, as
    requests would, not the session's creation."""
    not_pem = tmp_path / "env-not.pem"
    not_pem.write_text("not a certificate\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(not_pem))
    session = new_avatar_session(**service.session_kwargs(console_endpoint_url="https://127.0.0.1:9", http_retries=0))
    try:
        with pytest.raises(SessionTokenError):
            session.init()
    finally:
        session.close()
    assert service.issued_tokens == []


@pytest.mark.parametrize("role", ["token call", "websocket"])
def test_the_shared_contexts_check_the_host_name(
    ca: trustme.CA, tmp_path: Path, make_session: MakeSession, role: str
) -> None:
    """A certificate from the trusted CA for another host name is refused by either connection (under urllib3
    1.x the token call's context leaves the check to urllib3, which must still make it)."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with tls_service(ca) as right, tls_service(ca, "other.example") as wrong:
        urls = {"console_endpoint_url": wrong.console_url} if role == "token call" else {}
        if role == "websocket":
            urls["ingress_endpoint_url"] = wrong.ingress_url
        session = make_session(**right.session_kwargs(ca_bundle=str(bundle), http_retries=0, **urls))
        with pytest.raises(AvatarSDKError) as info:
            session.init()
            session.start()
        causes, cause = [], info.value.__cause__ or info.value.__context__
        while cause is not None:
            causes.append(str(cause).lower())
            cause = cause.__cause__ or cause.__context__
        assert any("hostname" in text or "match" in text for text in causes), (info.value, causes)
        assert info.value.phase == ("session_token" if role == "token call" else "websocket_connect")
        session.close()


def test_the_shared_context_verifies(ca: trustme.CA, tmp_path: Path, make_session: MakeSession) -> None:
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with tls_service(ca) as svc:
        session = make_session(**svc.session_kwargs(ca_bundle=str(other), http_retries=0))
        with pytest.raises(SessionTokenError) as token_error:
            session.init()
        assert "SSL" in token_error.value.message
        token = svc.issued_tokens  # none
        assert token == []


def test_the_websocket_verifies_with_the_shared_context(
    ca: trustme.CA, tmp_path: Path, make_session: MakeSession, service: FakeAvatarService
) -> None:
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with tls_service(ca) as svc:  # token from the plain stand-in, the WebSocket to a TLS one it cannot verify
        session = make_session(ingress_endpoint_url=svc.ingress_url, ca_bundle=str(other))
        session.init()
        with pytest.raises(AvatarSDKError) as info:
            session.start()
        assert info.value.phase == "websocket_connect"
        assert "certificate" in info.value.message


def test_the_connection_goes_through_the_proxy(ca: trustme.CA, tmp_path: Path, make_session: MakeSession) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with tls_service(ca) as svc, ConnectProxy() as proxy:
        session = make_session(**svc.session_kwargs(proxy=proxy.url, ca_bundle=str(bundle)))
        session.init()
        opened_socket(session)  # TCP, the tunnel and TLS, through the proxy as websocket-client would
        ingress = ("127.0.0.1", int(svc.ingress_url.split(":")[2].split("/")[0]))
        assert ingress in proxy.targets
        tunnels = len(proxy.targets)
        session.start()
        assert len(proxy.targets) == tunnels  # the tunnel opened ahead carried the upgrade
        assert len(session.collect(pcm(0.08))) == 2
        session.close()


@pytest.fixture
def no_trust_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "WEBSOCKET_CLIENT_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_by_default_both_connections_trust_what_requests_trusts(
    ca: trustme.CA, tmp_path: Path, make_session: MakeSession, no_trust_variables: pytest.MonkeyPatch
) -> None:
    """REQUESTS_CA_BUNDLE alone: the WebSocket trusts it too (websocket-client alone would trust the system's
    store, where this CA is not), through the same context."""
    bundle = tmp_path / "requests-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    no_trust_variables.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    with tls_service(ca) as svc:
        built = _tls.builds
        session = make_session(**svc.session_kwargs())
        assert _tls.builds == built + (2 if _tls.URLLIB3_MATCHES_HOSTNAMES else 1)
        session.init()
        session.start()
        assert len(session.collect(pcm(0.08))) == 2
        assert _tls.builds == built + (2 if _tls.URLLIB3_MATCHES_HOSTNAMES else 1)


def test_by_default_certifi_serves_both_connections(no_trust_variables: pytest.MonkeyPatch) -> None:
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    http = _tls.trust_key(True, None, None, _tls.HTTP)
    assert http[1] == str(DEFAULT_CA_BUNDLE_PATH)
    assert _tls.trust_key(True, None, None, _tls.WEBSOCKET)[:3] == http[:3]


def test_websocket_client_ca_bundle_still_applies_to_the_websocket(
    ca: trustme.CA, tmp_path: Path, make_session: MakeSession, no_trust_variables: pytest.MonkeyPatch
) -> None:
    bundle, other = tmp_path / "requests-ca.pem", tmp_path / "websocket-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    trustme.CA().cert_pem.write_to_path(str(other))
    no_trust_variables.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    no_trust_variables.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(other))
    with tls_service(ca) as svc:
        session = make_session(**svc.session_kwargs(http_retries=0))
        session.init()  # the token call trusts REQUESTS_CA_BUNDLE
        with pytest.raises(AvatarSDKError) as info:
            session.start()  # the WebSocket trusts WEBSOCKET_CLIENT_CA_BUNDLE, which does not hold the CA
        assert info.value.phase == "websocket_connect" and "certificate" in info.value.message
