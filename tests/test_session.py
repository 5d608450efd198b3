"""AvatarSession against the stand-in service over real sockets: the five steps, faults, threads, close."""

from __future__ import annotations

import gc
import io
import logging
import re
import threading
import time
import wave
from typing import Any, Callable, Dict, List

import pytest
from conftest import (
    CLOSE_CODE_ERRORS,
    RawServer,
    Recorder,
    pcm,
    started,
    switching,
    tcp_buffer_limit,
    unused_port,
    wait_until,
)

from avatarsdk import (
    AgoraEgressConfig,
    AvatarSDKError,
    AvatarSDKErrorCode,
    AvatarSession,
    InsecureTransportWarning,
    LiveKitEgressConfig,
    new_avatar_session,
)
from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk.testing import (
    Confirm,
    FakeAvatarService,
    HandshakeClose,
    HandshakeDrop,
    HandshakeError,
    HandshakeRaw,
    HandshakeSilence,
    animation_frame,
    jsonapi_error,
)
from avatarsdk.testing.wire import ws_frame

MakeSession = Callable[..., AvatarSession]
REQ_ID = re.compile(r"^\d{14}_[A-Za-z0-9_-]{12}$")


def session_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("avatarsdk-")]


def threads_after_preconnect() -> List[threading.Thread]:
    """The session threads once the short-lived thread that opens the ingress connection ahead has ended."""
    for thread in session_threads():
        if thread.name.startswith("avatarsdk-preconnect-"):
            thread.join(5)
    return session_threads()


def only_the_parked_reader() -> bool:
    """After a failed start(): just the reader thread init() started, waiting for a retry or close()."""
    threads = threads_after_preconnect()
    return len(threads) == 1 and threads[0].name.startswith("avatarsdk-reader-")


# ----------------------------------------------------------------------------------- the five steps


def test_five_steps_deliver_the_exact_bytes_in_order(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = make_session()
    session.init()
    connection_id = session.start()
    conn = service.wait_for_connection(0)
    assert connection_id == conn.connection_id == session.connection_id

    req_id = session.send_audio(pcm(1.0), end=True)
    recorder.wait_last()
    sent = conn.sent_frames(req_id)
    assert len(sent) == 25
    assert recorder.frames == sent  # byte for byte, undeclared field included
    assert recorder.lasts == [False] * 24 + [True]
    session.close()

    assert recorder.closes == 1
    assert recorder.events[-1] == "close"
    assert recorder.errors == []
    assert all(re.match(r"avatarsdk-dispatch-\d+$", name) for name in recorder.threads)
    conn.wait_closed()
    assert conn.client_close_code == 1000
    assert session.closed


def test_frames_are_forwarded_without_reserialisation(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    session.send_audio(pcm(0.04), end=True)
    recorder.wait_last()
    frame = recorder.frames[0]
    reserialised = pb.Message.FromString(frame).SerializeToString()
    assert reserialised != frame  # the fake's frames are not in canonical order ...
    assert frame == conn.sent_frames()[0]  # ... and the SDK hands over what arrived


def test_large_frame_is_delivered_whole(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    started(make_session)
    conn = service.wait_for_connection(0)
    data = conn.send_animation("r1", end=True, size=300_000)
    recorder.wait_last()
    assert recorder.frames == [data]


def test_request_id_lifecycle(service: FakeAvatarService, make_session: MakeSession, recorder: Recorder) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    chunks = [bytes([i]) * 640 for i in range(1, 5)]
    first = [session.send_audio(c) for c in chunks[:3]] + [session.send_audio(chunks[3], end=True)]
    assert len(set(first)) == 1 and REQ_ID.match(first[0])
    second = session.send_audio(pcm(0.1), end=True)
    assert second != first[0] and REQ_ID.match(second)

    request = conn.wait_for_request(first[0])
    assert bytes(request.audio) == b"".join(chunks)
    assert request.chunks == 4 and request.ended
    conn.wait_for_request(second)
    audio = [m.client_audio_input for m in conn.messages if m.type == pb.MESSAGE_CLIENT_AUDIO_INPUT]
    assert [a.end for a in audio] == [False, False, False, True, True]


def test_interrupt_names_the_latest_request_and_ends_it(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    req_id = session.send_audio(pcm(0.1))
    assert session.interrupt() == req_id
    after = session.send_audio(pcm(0.1), end=True)
    assert after != req_id
    assert session.interrupt() == after  # also after its end=True chunk
    conn.wait_for(lambda: sum(m.type == pb.MESSAGE_CLIENT_INTERRUPT for m in conn.messages) == 2)
    kinds = [(m.type, m.client_interrupt.req_id or m.client_audio_input.req_id) for m in conn.messages]
    assert kinds == [
        (pb.MESSAGE_CLIENT_AUDIO_INPUT, req_id),
        (pb.MESSAGE_CLIENT_INTERRUPT, req_id),
        (pb.MESSAGE_CLIENT_AUDIO_INPUT, after),
        (pb.MESSAGE_CLIENT_INTERRUPT, after),
    ]
    assert conn.requests[req_id].interrupted


@pytest.mark.parametrize("use_query_auth", [False, True])
def test_auth_in_headers_or_query(service: FakeAvatarService, make_session: MakeSession, use_query_auth: bool) -> None:
    if use_query_auth:
        with pytest.warns(InsecureTransportWarning, match="URL query"):
            session = make_session(use_query_auth=True)
    else:
        session = make_session()
    session.init()
    token = service.issued_tokens[-1]
    session.start()
    conn = service.wait_for_connection(0)
    headers = {k.lower(): v for k, v in conn.request_headers.items()}
    assert conn.path == "/v2/driveningress/websocket"
    assert conn.query["id"] == service.avatar_id
    if use_query_auth:
        assert conn.query["appId"] == service.app_id and conn.query["sessionKey"] == token
        assert "x-session-key" not in headers and "x-app-id" not in headers
    else:
        assert headers["x-app-id"] == service.app_id and headers["x-session-key"] == token
        assert "sessionKey" not in conn.query and "appId" not in conn.query


def test_existing_ingress_query_is_kept(service: FakeAvatarService, make_session: MakeSession) -> None:
    started(make_session, ingress_endpoint_url=service.ingress_url + "/?region=eu")
    conn = service.wait_for_connection(0)
    assert conn.query["region"] == "eu" and conn.query["id"] == service.avatar_id


def test_configure_carries_audio_settings(service: FakeAvatarService, make_session: MakeSession) -> None:
    started(make_session, sample_rate=24000, bitrate=32000, audio_format="ogg_opus")
    conf = service.wait_for_connection(0).configure
    assert conf is not None
    assert (conf.sample_rate, conf.bitrate, conf.audio_format) == (24000, 32000, pb.AUDIO_FORMAT_OGG_OPUS)
    assert conf.egress_type == pb.EGRESS_TYPE_UNSPECIFIED


def test_configure_carries_livekit_egress(service: FakeAvatarService, make_session: MakeSession) -> None:
    egress = LiveKitEgressConfig(
        url="wss://lk.example",
        api_token="lk-token",
        room_name="room",
        publisher_id="p",
        extra_attributes={"a": "b"},
        idle_timeout=30,
    )
    started(make_session, livekit_egress=egress)
    conf = service.wait_for_connection(0).configure
    assert conf is not None and conf.egress_type == pb.EGRESS_TYPE_LIVEKIT
    lk = conf.livekit_egress
    assert (lk.url, lk.api_token, lk.room_name, lk.publisher_id, dict(lk.extra_attributes), lk.idle_timeout) == (
        "wss://lk.example",
        "lk-token",
        "room",
        "p",
        {"a": "b"},
        30,
    )


def test_configure_carries_agora_egress(service: FakeAvatarService, make_session: MakeSession) -> None:
    started(make_session, agora_egress=AgoraEgressConfig(channel_name="ch", token="ag", uid=42, publisher_id="p"))
    conf = service.wait_for_connection(0).configure
    assert conf is not None and conf.egress_type == pb.EGRESS_TYPE_AGORA
    ag = conf.agora_egress
    assert (ag.channel_name, ag.token, ag.uid, ag.publisher_id) == ("ch", "ag", 42, "p")


def test_context_manager_runs_init_start_and_close(service: FakeAvatarService, recorder: Recorder) -> None:
    with new_avatar_session(**service.session_kwargs(**recorder.callbacks())) as session:
        assert session.connection_id == service.wait_for_connection(0).connection_id
        session.send_audio(pcm(0.2), end=True)
        recorder.wait_last()
    assert recorder.closes == 1 and session.closed
    assert len(service.token_requests) == 1


def test_context_manager_cleans_up_when_start_fails(service: FakeAvatarService, recorder: Recorder) -> None:
    service.reject_upgrade(500, "upstream down")
    with pytest.raises(AvatarSDKError) as info, new_avatar_session(**service.session_kwargs(**recorder.callbacks())):
        pytest.fail("the body must not run")
    assert info.value.code is AvatarSDKErrorCode.serverError
    assert recorder.closes == 1
    assert session_threads() == []


# ------------------------------------------------------------------------------------ start faults


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (
            400,
            jsonapi_error(400, "INVALID_ARGUMENT", "Bad Request", "invalid session token"),
            AvatarSDKErrorCode.sessionTokenInvalid,
            False,
        ),
        (
            401,
            jsonapi_error(401, "UNAUTHENTICATED", "Unauthorized", "token is expired"),
            AvatarSDKErrorCode.sessionTokenExpired,
            False,
        ),
        (
            402,
            jsonapi_error(402, "PAYMENT_REQUIRED", "Payment Required", "session denied"),
            AvatarSDKErrorCode.billingRequired,
            False,
        ),
        (
            404,
            jsonapi_error(404, "NOT_FOUND", "Not Found", "avatar not found"),
            AvatarSDKErrorCode.avatarNotFound,
            False,
        ),
        (404, "app id unrecognized", AvatarSDKErrorCode.appIDUnrecognized, False),
        (503, "upstream unavailable", AvatarSDKErrorCode.serverError, True),
        (403, None, AvatarSDKErrorCode.invalidRequest, False),
    ],
)
def test_upgrade_rejection_is_a_structured_error(
    service: FakeAvatarService,
    make_session: MakeSession,
    recorder: Recorder,
    status: int,
    body: Any,
    code: AvatarSDKErrorCode,
    retryable: bool,
) -> None:
    session = make_session()
    session.init()
    service.reject_upgrade(status, body)
    with pytest.raises(AvatarSDKError) as info:
        session.start()
    err = info.value
    assert (err.code, err.phase, err.http_status, err.retryable) == (code, "websocket_connect", status, retryable)
    if isinstance(body, dict):
        detail = body["errors"][0]["detail"]
        assert err.server_detail == detail and err.server_code == body["errors"][0]["code"]
        assert detail in err.message and err.raw_body is not None and detail in err.raw_body
    elif body:
        assert err.raw_body == body
    assert only_the_parked_reader() and recorder.events == []


@pytest.mark.parametrize(
    ("override", "code"),
    [
        ({"app_id": "someone-else"}, AvatarSDKErrorCode.appIDMismatch),
        ({"avatar_id": "no-such-avatar"}, AvatarSDKErrorCode.avatarNotFound),
    ],
)
def test_fake_service_checks_credentials(
    service: FakeAvatarService, make_session: MakeSession, override: Dict[str, str], code: AvatarSDKErrorCode
) -> None:
    session = make_session(**override)
    session.init()
    with pytest.raises(AvatarSDKError) as info:
        session.start()
    assert info.value.code is code


def test_expired_token_is_refused(service: FakeAvatarService, make_session: MakeSession) -> None:
    session = make_session()
    session.init()
    service.expire_token(service.issued_tokens[-1])
    with pytest.raises(AvatarSDKError) as info:
        session.start()
    assert (info.value.code, info.value.http_status) == (AvatarSDKErrorCode.sessionTokenExpired, 401)


def test_failed_start_can_be_retried_with_a_new_token(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = make_session()
    session.init()
    service.reject_upgrade(503)
    with pytest.raises(AvatarSDKError):
        session.start()
    session.init()
    assert session.start() == service.wait_for_connection(0).connection_id
    session.send_audio(pcm(0.04), end=True)
    recorder.wait_last()


def test_unreachable_ingress_is_connection_failed(service: FakeAvatarService, make_session: MakeSession) -> None:
    session = make_session(ingress_endpoint_url=f"http://127.0.0.1:{unused_port()}/v2/driveningress")
    session.init()
    with pytest.raises(AvatarSDKError) as info:
        session.start()
    err = info.value
    assert (err.code, err.phase, err.retryable) == (AvatarSDKErrorCode.connectionFailed, "websocket_connect", True)


@pytest.mark.parametrize(
    ("reply", "code", "extra"),
    [
        (
            HandshakeError(3, "unsupported sample rate"),
            AvatarSDKErrorCode.unsupportedSampleRate,
            {"server_code": "3", "server_detail": "unsupported sample rate"},
        ),
        (
            HandshakeError(4003, "too many sessions", close_code=4003),
            AvatarSDKErrorCode.concurrencyLimit,
            {"server_code": "4003"},
        ),
        (
            HandshakeClose(4010, "session token expired"),
            AvatarSDKErrorCode.sessionTokenExpired,
            {"close_code": 4010, "close_reason": "session token expired"},
        ),
        (HandshakeClose(4010, ""), AvatarSDKErrorCode.sessionTokenInvalid, {"close_code": 4010}),
        (HandshakeRaw(b"\xff\xff\xff"), AvatarSDKErrorCode.protocolError, {}),
        (HandshakeRaw(text="hello"), AvatarSDKErrorCode.protocolError, {}),
        (
            HandshakeRaw(pb.Message(type=pb.MESSAGE_SERVER_RESPONSE_ANIMATION).SerializeToString()),
            AvatarSDKErrorCode.protocolError,
            {},
        ),
        (Confirm(connection_id=""), AvatarSDKErrorCode.protocolError, {}),
        (HandshakeDrop(), AvatarSDKErrorCode.connectionClosed, {"close_code": 1006, "retryable": True}),
    ],
)
def test_handshake_faults(
    service: FakeAvatarService,
    make_session: MakeSession,
    recorder: Recorder,
    reply: Any,
    code: AvatarSDKErrorCode,
    extra: Dict[str, Any],
) -> None:
    service.script_handshake(reply)
    session = make_session()
    session.init()
    with pytest.raises(AvatarSDKError) as info:
        session.start()
    err = info.value
    assert (err.code, err.phase) == (code, "websocket_handshake")
    for name, value in extra.items():
        assert getattr(err, name) == value, name
    assert only_the_parked_reader()
    session.close()
    assert recorder.closes == 1 and recorder.errors == []
    assert session_threads() == []


def test_silent_handshake_times_out(service: FakeAvatarService, make_session: MakeSession) -> None:
    service.script_handshake(HandshakeSilence())
    session = make_session(handshake_timeout=0.3)
    session.init()
    began = time.monotonic()
    with pytest.raises(AvatarSDKError) as info:
        session.start()
    assert time.monotonic() - began < 3
    err = info.value
    assert (err.code, err.phase, err.retryable) == (AvatarSDKErrorCode.connectionFailed, "websocket_handshake", True)


# ---------------------------------------------------------------------------------- runtime faults


def test_runtime_server_error_reaches_on_error_and_the_session_goes_on(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    req_id = session.send_audio(pcm(0.04))
    conn.send_error(4001, "credits exhausted", req_id=req_id)
    err = recorder.wait_error()
    assert (err.code, err.phase, err.req_id, err.connection_id, err.server_code) == (
        AvatarSDKErrorCode.creditsExhausted,
        "websocket_runtime",
        req_id,
        conn.connection_id,
        "4001",
    )
    session.send_audio(pcm(0.08), end=True)
    recorder.wait_last()
    assert recorder.events == ["error:creditsExhausted", "frame", "frame", "frame"]  # 120 ms of audio


@pytest.mark.parametrize(("close_code", "code", "retryable"), CLOSE_CODE_ERRORS)
def test_server_close_after_frames(
    service: FakeAvatarService,
    make_session: MakeSession,
    recorder: Recorder,
    close_code: int,
    code: AvatarSDKErrorCode,
    retryable: bool,
) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    sent = conn.send_frames("r1", 50, end=False)
    conn.close(close_code, "bye")
    recorder.wait_closed()
    assert recorder.frames == sent
    assert recorder.events == ["frame"] * 50 + [f"error:{code.value}", "close"]
    err = recorder.errors[0]
    assert (err.close_code, err.close_reason, err.retryable, err.connection_id) == (
        close_code,
        "bye",
        retryable,
        conn.connection_id,
    )
    with pytest.raises(AvatarSDKError) as info:
        session.send_audio(pcm(0.04))
    assert info.value.code is code and info.value.close_code == close_code
    session.close()
    assert recorder.closes == 1


def test_normal_server_close_is_not_an_error(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    started(make_session)
    conn = service.wait_for_connection(0)
    conn.send_frames("r1", 3)
    conn.close(1000)
    recorder.wait_closed()
    assert recorder.events == ["frame", "frame", "frame", "close"]


def test_server_error_then_same_close_code_is_reported_once(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    started(make_session)
    conn = service.wait_for_connection(0)
    conn.send_error(4002, "maximum session duration")
    conn.close(4002, "maximum session duration")
    recorder.wait_closed()
    assert recorder.events == ["error:sessionDurationExceeded", "close"]


@pytest.mark.parametrize(("close_code", "code", "retryable"), [c for c in CLOSE_CODE_ERRORS if c[0] != 1008])
def test_a_server_error_announcing_a_close_is_one_error_with_both_codes(
    service: FakeAvatarService,
    make_session: MakeSession,
    recorder: Recorder,
    close_code: int,
    code: AvatarSDKErrorCode,
    retryable: bool,
) -> None:
    """The service sends a ServerError whose code is a close code, then closes with that code and a reason: the
    one error reported carries the server's code and text and the close's code and reason, and so does what a
    later call raises."""
    session = started(make_session)
    conn = service.wait_for_connection(0)
    conn.send_error(close_code, "the server's own words")
    conn.close(close_code, "the close's reason")
    recorder.wait_closed()
    assert recorder.events == [f"error:{code.value}", "close"]
    err = recorder.errors[0]
    assert (err.server_code, err.server_detail, err.close_code, err.close_reason, err.retryable) == (
        str(close_code),
        "the server's own words",
        close_code,
        "the close's reason",
        retryable,
    )
    with pytest.raises(AvatarSDKError) as info:
        session.send_audio(pcm(0.02))
    assert (info.value.server_code, info.value.close_code, info.value.code) == (str(close_code), close_code, code)


def test_a_close_that_comes_long_after_its_server_error_is_not_reported_again(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    """The ServerError is reported without waiting for a close that has not come; when the close does come, it
    is the same fault: not reported again, and what a later call raises carries both codes."""
    session = started(make_session)
    conn = service.wait_for_connection(0)
    conn.send_error(4001, "credits exhausted")
    err = recorder.wait_error()
    assert (err.server_code, err.close_code) == ("4001", None)
    conn.close(4001, "credits exhausted")
    recorder.wait_closed()
    assert recorder.events == ["error:creditsExhausted", "close"]
    with pytest.raises(AvatarSDKError) as info:
        session.send_audio(pcm(0.02))
    assert (info.value.server_code, info.value.close_code, info.value.close_reason) == (
        "4001",
        4001,
        "credits exhausted",
    )


def test_dropped_connection_is_connection_closed(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    sent = conn.send_frames("r1", 10, end=False)
    conn.drop()
    recorder.wait_closed()
    assert recorder.frames == sent
    err = recorder.errors[0]
    assert (err.code, err.close_code, err.retryable, err.phase) == (
        AvatarSDKErrorCode.connectionClosed,
        1006,
        True,
        "websocket_runtime",
    )
    assert recorder.events[-2:] == ["error:connectionClosed", "close"]
    with pytest.raises(AvatarSDKError):
        session.send_audio(pcm(0.04))


def test_unknown_message_types_are_ignored(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    started(make_session)
    conn = service.wait_for_connection(0)
    with caplog.at_level(logging.DEBUG, logger="avatarsdk"):
        conn.send_message_type(42, b"\xa2\x01\x03abc")  # an undeclared field 20
        data = conn.send_animation("r1", end=True)
        recorder.wait_last()
    assert recorder.frames == [data] and recorder.errors == []
    assert any("unknown type 42" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", ["malformed", "text", "empty"])
def test_hostile_messages_are_protocol_errors(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, kind: str
) -> None:
    started(make_session)
    conn = service.wait_for_connection(0)
    if kind == "malformed":
        conn.send_bytes(b"\x0a\xff\xff\xff\xff")
    elif kind == "text":
        conn.send_text("not protobuf")
    else:
        conn.send_bytes(b"")
    data = conn.send_animation("r1", end=True)
    recorder.wait_last()
    assert recorder.frames == [data]
    if kind == "empty":  # an empty message is a valid protobuf Message of type 0 (unknown): ignored
        assert recorder.errors == []
    else:
        assert [e.code for e in recorder.errors] == [AvatarSDKErrorCode.protocolError]


# --------------------------------------------------------------------------------- close semantics


def test_close_is_idempotent(service: FakeAvatarService, make_session: MakeSession, recorder: Recorder) -> None:
    session = started(make_session)
    session.close()
    session.close()
    assert recorder.closes == 1
    with pytest.raises(ValueError, match="closed"):
        session.send_audio(pcm(0.04))


def test_close_from_many_threads_fires_on_close_once(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session)
    barrier = threading.Barrier(8)

    def close() -> None:
        barrier.wait()
        session.close()
        assert session.closed  # whoever returns, the session has ended

    threads = [threading.Thread(target=close) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert recorder.closes == 1


def test_close_before_start_fires_on_close(make_session: MakeSession, recorder: Recorder) -> None:
    session = make_session()
    session.close()
    assert recorder.closes == 1 and session.closed
    with pytest.raises(ValueError, match="closed"):
        session.init()


@pytest.mark.parametrize("where", ["transport_frames", "on_error", "on_close"])
def test_close_from_inside_callbacks(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, where: str
) -> None:
    holder: List[AvatarSession] = []
    returned = threading.Event()

    def closing(callback: Callable[..., None]) -> Callable[..., None]:
        def wrapper(*args: Any) -> None:
            callback(*args)
            holder[0].close()
            returned.set()

        return wrapper

    callbacks = recorder.callbacks()
    callbacks[where] = closing(callbacks[where])
    session = started(make_session, **callbacks)
    holder.append(session)
    conn = service.wait_for_connection(0)
    if where == "transport_frames":
        session.send_audio(pcm(0.2), end=True)  # the fake answers with 5 frames; the first one closes
    elif where == "on_error":
        conn.send_error(3, "bad request")
    else:
        conn.close(1000)
    assert returned.wait(5)
    recorder.wait_closed()
    assert recorder.closes == 1
    conn.wait_closed()
    assert recorder.frames == conn.sent_frames()[: len(recorder.frames)]
    for thread in session_threads():
        thread.join(5)
    assert session_threads() == []


def test_close_returns_after_on_close(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    conn.send_frames("r1", 200)
    recorder.wait_frames(1)
    session.close()
    assert recorder.closes == 1  # already true when close() returns
    assert session_threads() == []


def test_close_does_not_wait_forever_for_a_server_that_stopped_reading(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session, close_timeout=0.3)
    conn = service.wait_for_connection(0)
    conn.pause_reading()
    for _ in range(64):  # fill the server's queue: it stops reading the socket, so no close reply comes
        session.send_audio(pcm(0.02))
    began = time.monotonic()
    session.close()
    assert time.monotonic() - began < 3
    assert recorder.closes == 1 and recorder.errors == []


def stalled_ingress() -> RawServer:
    """An ingress that upgrades and confirms at once, then never reads again; its receive buffer is tiny, so a
    client's send blocks as soon as its own socket buffer is full."""
    confirm = pb.Message(type=pb.MESSAGE_SERVER_CONFIRM_SESSION)
    confirm.server_confirm_session.connection_id = "conn-stalled"
    return RawServer(lambda head: [switching(head) + ws_frame(confirm.SerializeToString())], drain=False, rcvbuf=4096)


def test_close_is_bounded_while_another_thread_is_blocked_in_a_send(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    """A server that stopped reading while a thread is in the middle of a large send: close() from another
    thread returns within close_timeout (and a little); the blocked send raises at once, saying that close() cut
    it; a user's close is no error."""
    ingress = stalled_ingress()
    try:
        session = started(
            make_session,
            ingress_endpoint_url=f"http://{ingress.address}/v2/driveningress",
            close_timeout=2.0,
            send_timeout=None,
        )
        chunk = bytes(tcp_buffer_limit("wmem") + (1 << 20))  # more than the socket can ever take: the send must block
        failure: Dict[str, Any] = {}

        def send() -> None:
            try:
                session.send_audio(chunk)
            except AvatarSDKError as err:
                failure.update(error=err, at=time.monotonic())

        sender = threading.Thread(target=send, name="test-sender")
        sender.start()
        wait_until(lambda: session.current_req_id is not None, "the send to begin")  # it holds the connection
        began = time.monotonic()
        session.close()
        took = time.monotonic() - began
        sender.join(5)
    finally:
        ingress.close()
    assert not sender.is_alive()
    assert took < 2.0 + 1.0, f"close() took {took:.2f}s"
    err = failure["error"]
    assert (err.code, err.phase, err.retryable) == (AvatarSDKErrorCode.connectionClosed, "websocket_send", False)
    assert "closed by close() while this send was blocked" in err.message
    assert failure["at"] - began < took + 0.5  # at once: by the time close() returned
    assert recorder.closes == 1 and recorder.errors == []


def test_failing_callbacks_are_logged_and_the_session_carries_on(
    service: FakeAvatarService, make_session: MakeSession, caplog: pytest.LogCaptureFixture
) -> None:
    calls: Dict[str, int] = {"frames": 0, "errors": 0, "close": 0}
    closed = threading.Event()

    def boom(name: str) -> Callable[..., None]:
        def callback(*_: Any) -> None:
            calls[name] += 1
            if name == "close":
                closed.set()
            raise RuntimeError(f"{name} failed")

        return callback

    session = started(make_session, transport_frames=boom("frames"), on_error=boom("errors"), on_close=boom("close"))
    conn = service.wait_for_connection(0)
    with caplog.at_level(logging.ERROR, logger="avatarsdk"):
        conn.send_frames("r1", 3)
        conn.send_error(3, "bad")
        conn.close(4002)
        assert closed.wait(5)
        session.close()
    assert calls == {"frames": 3, "errors": 2, "close": 1}  # the failing on_error is not fed its own failure
    messages = [r.getMessage() for r in caplog.records]
    assert sum("transport_frames callback raised" in m for m in messages) == 3
    assert sum("on_error callback raised" in m for m in messages) == 2
    assert sum("on_close callback raised" in m for m in messages) == 1


# ------------------------------------------------------------------------------------------ threads


def test_a_slow_callback_does_not_stop_the_reader(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow(frame: bytes, last: bool) -> None:
        entered.set()
        release.wait(10)
        recorder.transport_frames(frame, last)

    before = set(threading.enumerate())
    started(make_session, transport_frames=slow)
    reader = next(t for t in set(threading.enumerate()) - before if t.name.startswith("avatarsdk-reader-"))
    conn = service.wait_for_connection(0)
    sent = conn.send_frames("r1", 100, end=False)
    assert entered.wait(5)
    pong = conn.ping()
    assert pong.wait(5), "the reader must answer pings while a callback is busy"
    conn.close(4002, "limit")
    reader.join(5)
    assert not reader.is_alive(), "the reader must see the close while a callback is busy"
    assert recorder.closes == 0
    release.set()
    recorder.wait_closed()
    assert recorder.frames == sent
    assert recorder.events[-2:] == ["error:sessionDurationExceeded", "close"]


def test_callbacks_never_run_on_the_reader_thread(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    conn.send_frames("r1", 20)
    conn.send_error(3, "x")
    recorder.wait_error()
    session.close()
    assert recorder.threads and all(name.startswith("avatarsdk-dispatch-") for name in recorder.threads)


def test_concurrent_senders_never_tear_messages(service: FakeAvatarService, make_session: MakeSession) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    workers, per_worker = 8, 40
    barrier = threading.Barrier(workers)
    returned: Dict[bytes, str] = {}
    lock = threading.Lock()

    def send(worker: int) -> None:
        barrier.wait()
        for i in range(per_worker):
            chunk = bytes([worker, i]) * 400  # unique content per chunk
            req_id = session.send_audio(chunk, end=i % 10 == 9)
            with lock:
                returned[chunk] = req_id

    threads = [threading.Thread(target=send, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    total = workers * per_worker
    conn.wait_for(lambda: len(conn.messages) == total, timeout=10)
    on_wire = {m.client_audio_input.audio: m.client_audio_input.req_id for m in conn.messages}
    assert on_wire == returned  # every chunk whole, under the id send_audio returned
    # req_id state is consistent in wire order: an id never reappears after its end=True chunk
    ended: set = set()
    for m in conn.messages:
        chunk = m.client_audio_input
        assert chunk.req_id not in ended
        if chunk.end:
            ended.add(chunk.req_id)


def test_interrupt_racing_senders_keeps_ids_consistent(service: FakeAvatarService, make_session: MakeSession) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    stop = threading.Event()

    def sender() -> None:
        while not stop.is_set():
            session.send_audio(pcm(0.01))

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for t in threads:
        t.start()
    interrupted = []
    for _ in range(20):
        seen = len(conn.messages)
        conn.wait_for(lambda seen=seen: len(conn.messages) > seen + 2)
        interrupted.append(session.interrupt())
    stop.set()
    for t in threads:
        t.join(10)
    conn.wait_for(lambda: sum(m.type == pb.MESSAGE_CLIENT_INTERRUPT for m in conn.messages) == 20)
    finished: set = set()
    for m in conn.messages:
        if m.type == pb.MESSAGE_CLIENT_INTERRUPT:
            finished.add(m.client_interrupt.req_id)
        else:
            assert m.client_audio_input.req_id not in finished, "audio after its request was interrupted"
    assert [m.client_interrupt.req_id for m in conn.messages if m.type == pb.MESSAGE_CLIENT_INTERRUPT] == interrupted


def test_send_to_a_server_that_stopped_reading_times_out(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session, send_timeout=0.5)
    service.wait_for_connection(0).pause_reading()
    chunk = pcm(10.0)  # 320 kB per message: the socket buffers fill within a few sends
    began = time.monotonic()
    with pytest.raises(AvatarSDKError) as info:
        for _ in range(1000):
            session.send_audio(chunk)
    err = info.value
    assert (err.code, err.phase, err.retryable) == (AvatarSDKErrorCode.connectionFailed, "websocket_send", True)
    assert err.req_id is not None
    assert time.monotonic() - began < 20
    recorder.wait_closed()
    assert [e.code for e in recorder.errors] == [AvatarSDKErrorCode.connectionFailed]


def test_threads_are_named_started_lazily_and_gone_after_close(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    before = set(threading.enumerate())

    def mine() -> List[str]:
        return sorted(t.name for t in set(threading.enumerate()) - before if t.name.startswith("avatarsdk-"))

    session = started(make_session)
    assert len(mine()) == 1 and re.match(r"avatarsdk-reader-\d+$", mine()[0])  # an idle session: one thread
    session.send_audio(pcm(0.04), end=True)
    recorder.wait_last()
    names = mine()
    assert len(names) == 2
    assert re.match(r"avatarsdk-dispatch-\d+$", names[0]) and re.match(r"avatarsdk-reader-\d+$", names[1])
    session.close()
    assert not [t for t in threading.enumerate() if t.name in names]


def test_an_idle_session_closes_without_a_dispatcher_thread(make_session: MakeSession, recorder: Recorder) -> None:
    session = started(make_session)
    session.close()
    assert recorder.closes == 1 and recorder.errors == []
    assert all(name.startswith("avatarsdk-dispatch-") for name in recorder.threads)  # on_close has its thread


# ------------------------------------------------------------------------------------------ secrets


def test_secrets_never_reach_logs_reprs_or_errors(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = [service.api_key]
    with caplog.at_level(logging.DEBUG):
        with pytest.warns(InsecureTransportWarning, match="URL query"):
            session = make_session(use_query_auth=True)
        session.init()
        token = service.issued_tokens[-1]
        secrets.append(token)
        service.reject_upgrade(400, f"invalid session token {token} for key {service.api_key}")
        with pytest.raises(AvatarSDKError) as info:
            session.start()
        session.init()
        session.start()
        secrets.append(service.issued_tokens[-1])
        conn = service.wait_for_connection(0)
        conn.send_error(16, f"bad token {secrets[-1]}")
        recorder.wait_error()
        session.close()
    err = info.value
    texts = [str(err), repr(err), err.message, err.raw_body or "", repr(session)]
    texts += [r.getMessage() for r in caplog.records if r.name.startswith("avatarsdk")]
    for secret in secrets:
        for text in texts:
            assert secret not in text
    assert err.raw_body is not None and "***" in err.raw_body


# ------------------------------------------------------------------------------------- framing


def test_frames_sent_with_the_confirmation_are_delivered(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    service.script_handshake(Confirm(then_frames=3))
    started(make_session)
    conn = service.wait_for_connection(0)
    recorder.wait_last()
    assert recorder.frames == conn.sent_frames("early") and len(recorder.frames) == 3


def test_fragmented_messages_are_reassembled(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    started(make_session)
    conn = service.wait_for_connection(0)
    data = animation_frame("c", "r1", True, 1200, 1)
    conn.send_fragmented([data[:10], data[10:600], data[600:]])
    recorder.wait_last()
    assert recorder.frames == [data]


def test_oversized_message_ends_the_session(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session, max_message_size=10_000)
    conn = service.wait_for_connection(0)
    small = conn.send_animation("r1", size=5_000)
    conn.send_bytes(b"\x00" * 10_001)
    recorder.wait_closed()
    assert recorder.frames == [small]
    err = recorder.errors[0]
    assert (err.code, err.close_code, err.phase) == (AvatarSDKErrorCode.protocolError, 1009, "websocket_runtime")
    conn.wait_closed()
    assert conn.client_close_code == 1009
    with pytest.raises(AvatarSDKError):
        session.send_audio(pcm(0.02))


def test_masked_frame_from_the_server_is_a_protocol_error(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    started(make_session)
    conn = service.wait_for_connection(0)
    conn.send_wire(b"\x82\x81\x00\x00\x00\x00x")  # RFC 6455: servers never mask
    recorder.wait_closed()
    assert [(e.code, e.close_code) for e in recorder.errors] == [(AvatarSDKErrorCode.protocolError, 1002)]


def test_server_close_code_is_echoed(service: FakeAvatarService, make_session: MakeSession, recorder: Recorder) -> None:
    started(make_session)
    conn = service.wait_for_connection(0)
    conn.close(4002, "limit")
    recorder.wait_closed()
    conn.wait_closed()
    assert conn.client_close_code == 4002


def test_a_wav_file_passed_as_pcm_is_refused(service: FakeAvatarService, make_session: MakeSession) -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm(0.1))
    session = started(make_session)
    with pytest.raises(ValueError, match=r"audio: .*WAV file .*load_audio"):
        session.send_audio(buffer.getvalue(), end=True)
    conn = service.wait_for_connection(0)
    session.send_audio(pcm(0.04), end=True)  # the session is still usable, and nothing was sent before
    conn.wait_for_request()
    assert [m.client_audio_input.audio for m in conn.messages] == [pcm(0.04)]


def test_close_during_the_handshake_ends_start_promptly(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    service.script_handshake(HandshakeSilence())
    session = make_session(handshake_timeout=30)
    session.init()
    outcome: List[BaseException] = []

    def start() -> None:
        try:
            session.start()
        except BaseException as exc:
            outcome.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    service.wait_for_connection(0)
    began = time.monotonic()
    session.close()
    starter.join(10)
    assert time.monotonic() - began < 5
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError) and "closed while starting" in str(outcome[0])
    assert recorder.closes == 1 and recorder.errors == []


def test_init_parks_the_reader_thread_and_close_lets_it_go(make_session: MakeSession, recorder: Recorder) -> None:
    session = make_session()
    assert session_threads() == []
    session.init()
    assert only_the_parked_reader()
    session.init()  # a new token, the same thread
    assert only_the_parked_reader()
    session.close()
    assert session_threads() == [] and recorder.closes == 1


def test_a_session_dropped_after_init_lets_its_thread_go(service: FakeAvatarService) -> None:
    session = new_avatar_session(**service.session_kwargs())
    session.init()
    (parked,) = threads_after_preconnect()
    assert parked.name.startswith("avatarsdk-reader-")
    del session
    gc.collect()
    parked.join(5)
    assert not parked.is_alive()


def test_current_req_id_follows_the_request(service: FakeAvatarService, make_session: MakeSession) -> None:
    session = started(make_session)
    assert session.current_req_id is None
    req_id = session.send_audio(pcm(0.04))
    assert session.current_req_id == req_id
    session.send_audio(pcm(0.04), end=True)
    assert session.current_req_id is None
    session.send_audio(pcm(0.04))
    session.interrupt()
    assert session.current_req_id is None
