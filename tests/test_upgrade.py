"""The WebSocket upgrade, read by the SDK in blocks: against a raw HTTP server on loopback that answers exactly
as each test says (the stand-in's server always answers well-formed)."""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional

import pytest
from conftest import Answer, RawServer, switching

from avatarsdk import AvatarSDKError, AvatarSDKErrorCode
from avatarsdk._connection import Connection
from avatarsdk._deadline import Deadline
from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk.testing.wire import ws_frame

TOKEN = "session-token-7f3a"


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], RawServer]]:
    servers: List[RawServer] = []

    def make(answer: Answer) -> RawServer:
        servers.append(RawServer(answer))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def confirm(connection_id: str = "conn-raw") -> bytes:
    msg = pb.Message(type=pb.MESSAGE_SERVER_CONFIRM_SESSION)
    msg.server_confirm_session.connection_id = connection_id
    return msg.SerializeToString()


def url(server: RawServer) -> str:
    return f"ws://{server.address}/v2/driveningress/websocket?id=a"


def open_connection(server: RawServer, timeout: float = 2.0) -> Connection:
    return Connection.open(url(server), {"X-Session-Key": TOKEN}, connect_timeout=timeout, secrets=(TOKEN,))


def test_frames_in_the_same_write_as_the_upgrade_response_are_kept(serve: Callable[[Answer], RawServer]) -> None:
    """The confirmation (and a frame after it) written together with the 101: read from what came with it."""
    frame = ws_frame(b"\x08\x05" + b"\x32\x03\x12\x01r")  # an animation message of request "r"
    server = serve(lambda head: [switching(head) + ws_frame(confirm()) + frame])
    conn = open_connection(server)
    try:
        reply = conn.await_confirmation(Deadline(None), None)
        assert reply.connection_id == "conn-raw"
        assert conn.pending == [frame[2:]]
    finally:
        conn.close()
    request = server.requests[0].decode()
    assert request.startswith("GET /v2/driveningress/websocket?id=a HTTP/1.1\r\n")
    assert f"X-Session-Key: {TOKEN}\r\n" in request and "Origin:" not in request


def test_a_response_arriving_a_byte_at_a_time_is_read_whole(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(lambda head: [bytes([b]) for b in switching(head, "Server: slow\r\n") + ws_frame(confirm("c-2"))])
    conn = open_connection(server)
    try:
        assert conn.await_confirmation(Deadline(None), 2.0).connection_id == "c-2"
    finally:
        conn.close()


def test_a_rejection_body_in_several_writes_is_read_to_its_length(serve: Callable[[Answer], RawServer]) -> None:
    body = b'{"errors": [{"status": "401", "code": "UNAUTHENTICATED", "detail": "token is expired"}]}'
    head = f"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    server = serve(lambda _: [head.encode() + body[:10], body[10:40], body[40:]])
    with pytest.raises(AvatarSDKError) as info:
        open_connection(server)
    err = info.value
    assert (err.code, err.http_status, err.phase) == (AvatarSDKErrorCode.sessionTokenExpired, 401, "websocket_connect")
    assert err.raw_body == body.decode() and err.server_detail == "token is expired"


def test_a_redirect_is_not_followed(serve: Callable[[Answer], RawServer]) -> None:
    """The session token is never sent to another address."""
    elsewhere = serve(lambda head: [switching(head)])
    redirect = f"HTTP/1.1 302 Found\r\nLocation: {url(elsewhere)}\r\nContent-Length: 0\r\n\r\n"
    server = serve(lambda _: [redirect.encode()])
    with pytest.raises(AvatarSDKError) as info:
        open_connection(server)
    assert info.value.http_status == 302 and elsewhere.requests == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda head: [b"HTTP/1.1 abc Nope\r\n\r\n"], "Invalid status line"),
        (lambda head: [switching(head, "no colon here\r\n")], "Invalid header"),
        (lambda head: [b"HTTP/1.1 101 Switching Protocols\r\nX-Caf\xe9: 1\r\n\r\n"], "not valid UTF-8"),
        (lambda head: [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"], "Invalid WebSocket Header"),
        (lambda head: [b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Pad: " + b"a" * 70_000], "longer than"),
    ],
    ids=["status-line", "header-line", "not-utf8", "no-accept", "too-long"],
)
def test_a_malformed_upgrade_response_is_a_protocol_error(
    serve: Callable[[Answer], RawServer], answer: Answer, expected: str
) -> None:
    server = serve(answer)
    with pytest.raises(AvatarSDKError) as info:
        open_connection(server)
    assert info.value.code is AvatarSDKErrorCode.protocolError and info.value.phase == "websocket_connect"
    assert info.value.__cause__ is not None and expected in str(info.value.__cause__)


@pytest.mark.parametrize("cut", [None, 12], ids=["silent", "half-a-head"])
def test_an_upgrade_response_that_never_ends_times_out(
    serve: Callable[[Answer], RawServer], cut: Optional[int]
) -> None:
    server = serve(lambda head: [switching(head)[:cut]] if cut else [])
    with pytest.raises(AvatarSDKError) as info:
        open_connection(server, timeout=0.2)
    assert info.value.code is AvatarSDKErrorCode.connectionFailed and "timed out" in info.value.message
    assert info.value.retryable


def test_a_connection_closed_during_the_upgrade_is_a_connection_failure(
    serve: Callable[[Answer], RawServer],
) -> None:
    class Closing(RawServer):
        def _serve(self) -> None:
            client, _ = self._listener.accept()
            client.recv(4096)
            client.sendall(b"HTTP/1.1 101 Swi")
            client.close()

    server = Closing(lambda head: [])
    try:
        with pytest.raises(AvatarSDKError) as info:
            open_connection(server)
        assert info.value.code in (AvatarSDKErrorCode.protocolError, AvatarSDKErrorCode.connectionFailed)
        assert info.value.phase == "websocket_connect"
    finally:
        server.close()
