"""The stand-in service itself (avatarsdk.testing): what users' own test suites rely on."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import List, Optional

import pytest
import requests
import websocket
from conftest import Recorder, pcm, started

from avatarsdk import AvatarSDKError, AvatarSDKErrorCode, SessionTokenError, new_avatar_session
from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk.testing import FakeAvatarService, FakeConnection, FakeRequest, TokenReply, animation_frame


def post_token(service: FakeAvatarService, body: object, api_key: str = "test-api-key") -> requests.Response:
    return requests.post(
        service.console_url + "/session-tokens", data=json.dumps(body), headers={"X-Api-Key": api_key}, timeout=5
    )


def test_console_checks_the_api_key_and_expiry(service: FakeAvatarService) -> None:
    future = int(time.time()) + 600
    assert post_token(service, {"expireAt": future}, api_key="nope").status_code == 401
    assert post_token(service, {"expireAt": "soon"}).status_code == 400
    assert post_token(service, {"expireAt": int(time.time()) - 5}).status_code == 400
    assert post_token(service, {"expireAt": int(time.time()) + 25 * 3600}).status_code == 400
    ok = post_token(service, {"expireAt": future})
    assert ok.status_code == 200 and ok.json()["sessionToken"] == service.issued_tokens[-1]
    assert [r.json for r in service.token_requests][-1] == {"expireAt": future}


def test_scripted_token_replies_come_first_in_first_out(service: FakeAvatarService, make_session) -> None:
    service.script_token(TokenReply(503, "busy"))
    service.script_token(TokenReply(200, {"sessionToken": "scripted"}))
    session = make_session(http_retries=0)
    with pytest.raises(SessionTokenError) as info:
        session.init()
    assert info.value.http_status == 503
    session.init()
    with pytest.raises(AvatarSDKError) as start_info:  # the fake never issued "scripted"
        session.start()
    assert start_info.value.code is AvatarSDKErrorCode.sessionTokenInvalid


def test_a_token_opens_one_connection(service: FakeAvatarService, make_session) -> None:
    session = started(make_session)
    token = service.issued_tokens[-1]
    ws = websocket.WebSocket()
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        ws.connect(
            service.ingress_url.replace("http", "ws", 1) + f"/websocket?id={service.avatar_id}",
            header=[f"X-App-ID: {service.app_id}", f"X-Session-Key: {token}"],
            timeout=5,
        )
    assert info.value.status_code == 400 and b"invalid session token" in info.value.resp_body
    session.close()


def test_frames_follow_the_audio_duration_and_can_be_paced(make_session, recorder: Recorder) -> None:
    with FakeAvatarService(frame_interval=0.02, frame_size=500) as paced:
        session = make_session(**paced.session_kwargs())
        session.init()
        session.start()
        began = time.monotonic()
        session.send_audio(pcm(0.4), end=True)
        recorder.wait_last()
        elapsed = time.monotonic() - began
        session.close()
    assert len(recorder.frames) == 10
    assert elapsed >= 9 * 0.02  # the fake waits between frames
    assert all(480 <= len(f) <= 520 for f in recorder.frames)


def test_on_request_hook_and_records(make_session, recorder: Recorder) -> None:
    seen = []

    def respond(conn: FakeConnection, request: FakeRequest) -> None:
        seen.append((request.req_id, len(request.audio), request.chunks))
        conn.send_error(3, "unsupported sample rate", req_id=request.req_id)

    with FakeAvatarService(on_request=respond) as svc:
        session = make_session(**svc.session_kwargs(sample_rate=24000))
        session.init()
        session.start()
        session.send_audio(pcm(0.1, 24000))
        req_id = session.send_audio(pcm(0.1, 24000), end=True)
        err = recorder.wait_error()
        conn = svc.connection()
        assert conn.configure is not None and conn.configure.sample_rate == 24000
        assert [m.type for m in conn.messages] == [pb.MESSAGE_CLIENT_AUDIO_INPUT] * 2
        session.close()
    assert seen == [(req_id, 9600, 2)]
    assert err.code is AvatarSDKErrorCode.unsupportedSampleRate and err.req_id == req_id


def test_animation_frames_carry_an_undeclared_field() -> None:
    data = animation_frame("c", "r", True, 300, seq=7)
    msg = pb.Message.FromString(data)
    assert msg.type == pb.MESSAGE_SERVER_RESPONSE_ANIMATION
    anim = msg.server_response_animation
    assert (anim.connection_id, anim.req_id, anim.end) == ("c", "r", True)
    assert 290 <= len(data) <= 310
    assert msg.SerializeToString() != data  # not canonical: re-serialising would be caught


def test_session_kwargs_are_valid_for_an_hour(service: FakeAvatarService) -> None:
    kwargs = service.session_kwargs(app_id="x")
    assert kwargs["app_id"] == "x"
    ahead = kwargs["expire_at"] - datetime.now(timezone.utc)
    assert timedelta(minutes=59) < ahead <= timedelta(hours=1)


def test_starting_and_closing_at_once_is_clean() -> None:
    """A stand-in closed before any connection must not leave an error in its threads."""
    for _ in range(50):
        with FakeAvatarService():
            pass


@pytest.mark.parametrize(
    ("refusal", "phase", "http_status", "server_code", "retryable"),
    [
        ("close", "websocket_handshake", None, "4003", True),
        ("upgrade", "websocket_connect", 429, "concurrencyLimit", True),
    ],
)
def test_a_concurrency_limit_refuses_one_session_more_until_one_ends(
    recorder: Recorder,
    refusal: str,
    phase: str,
    http_status: Optional[int],
    server_code: str,
    retryable: bool,
) -> None:
    """A bare session's start() raises the refusal, as the service's (the pool waits instead)."""
    with FakeAvatarService(concurrency_limit=2, concurrency_refusal=refusal) as service:
        assert (service.concurrency_limit, service.concurrency_refusal) == (2, refusal)
        first = new_avatar_session(**service.session_kwargs(on_close=recorder.on_close))
        first.init()
        first.start()
        with new_avatar_session(**service.session_kwargs()) as second:
            assert service.open_sessions == 2
            third = new_avatar_session(**service.session_kwargs())
            third.init()
            with pytest.raises(AvatarSDKError) as info:
                third.start()
            err = info.value
            assert err.code is AvatarSDKErrorCode.concurrencyLimit and err.phase == phase
            assert (err.http_status, err.server_code, err.retryable) == (http_status, server_code, retryable)
            assert service.concurrency_refusals == 1 and service.open_sessions == 2
            first.close()
            recorder.wait_for(lambda: recorder.closes == 1, what="the first session's end")
            service.wait_for_connection(0).wait_closed()
            third.init()  # a token is for one connection
            third.start()  # a slot is free again
            assert third.collect(pcm(0.08))[-1].last and second.collect(pcm(0.08))[-1].last
            third.close()
        for conn in service.connections:
            conn.wait_closed()
        with service._lock:
            service._lock.wait_for(lambda: service.open_sessions == 0, 5)
        assert (service.peak_sessions, service.open_sessions, service.concurrency_refusals) == (2, 0, 1)


def test_without_a_concurrency_limit_nothing_is_refused(service: FakeAvatarService, make_session) -> None:
    sessions = [started(make_session) for _ in range(3)]
    assert service.concurrency_limit is None and service.open_sessions == 3 == service.peak_sessions
    for session in sessions:
        session.close()
    assert service.concurrency_refusals == 0


def test_an_unknown_concurrency_refusal_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency_refusal: expected one of"):
        FakeAvatarService(concurrency_limit=1, concurrency_refusal="token")


class _Records(logging.Handler):
    """The stand-in server's records of failed opening handshakes, waited for (the server logs from its
    connection's thread)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() != "opening handshake failed":
            return
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def wait_for(self, count: int) -> List[logging.LogRecord]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.records) >= count, 5), self.records
            return list(self.records)


def test_a_connection_opened_ahead_and_never_used_is_logged_at_debug(service: FakeAvatarService) -> None:
    """A session's init() opens the ingress connection ahead; closed unused, it is no server error. A request
    line that is not HTTP still is."""
    records = _Records()
    server_logger = logging.getLogger("websockets.server.avatarsdk-stand-in")
    server_logger.addHandler(records)
    level = server_logger.level
    server_logger.setLevel(logging.DEBUG)
    try:
        session = new_avatar_session(**service.session_kwargs())
        session.init()
        session.close()  # the connection opened ahead is closed before anything was sent on it
        (unused,) = records.wait_for(1)
        assert (unused.levelno, unused.getMessage()) == (logging.DEBUG, "opening handshake failed")
        port = int(service.ingress_url.split(":")[2].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"NOT HTTP\r\n\r\n")
            sock.recv(1024)  # the server answers 400 and closes
        _, garbage = records.wait_for(2)
        assert (garbage.levelno, garbage.getMessage()) == (logging.ERROR, "opening handshake failed")
    finally:
        server_logger.removeHandler(records)
        server_logger.setLevel(level)
