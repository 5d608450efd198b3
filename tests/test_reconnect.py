"""Opt-in automatic reconnect: which ends reconnect, what the application is told, what happens to requests in
flight, sends during a reconnect, giving up, and close() at every point — over real sockets with the stand-in."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import pytest
from conftest import CLOSE_CODE_ERRORS, FAST_RECONNECT, Recorder, pcm, started

from avatarsdk import (
    AvatarSDKError,
    AvatarSDKErrorCode,
    AvatarSession,
    ReconnectEvent,
    ReconnectPolicy,
    ReconnectState,
    SessionPool,
    new_avatar_session,
)
from avatarsdk.testing import (
    FakeAvatarService,
    FakeConnection,
    FakeRequest,
    FaultProxy,
    HandshakeError,
    HandshakeSilence,
    TokenReply,
    jsonapi_error,
)

MakeSession = Callable[..., AvatarSession]


class Events:
    """Collects on_reconnect events; waits on conditions."""

    def __init__(self) -> None:
        self.events: List[ReconnectEvent] = []
        self.threads: List[str] = []
        self._cond = threading.Condition()

    def __call__(self, event: ReconnectEvent) -> None:
        with self._cond:
            self.events.append(event)
            self.threads.append(threading.current_thread().name)
            self._cond.notify_all()

    def states(self) -> List[ReconnectState]:
        with self._cond:
            return [e.state for e in self.events]

    def wait(self, state: ReconnectState, count: int = 1, timeout: float = 10.0) -> ReconnectEvent:
        with self._cond:
            ok = self._cond.wait_for(lambda: sum(e.state is state for e in self.events) >= count, timeout)
            assert ok, f"no {count}x {state.value} within {timeout}s; events: {self.events}"
            return [e for e in self.events if e.state is state][count - 1]


@pytest.fixture
def events() -> Events:
    return Events()


def reconnecting(
    make_session: MakeSession, events: Events, policy: ReconnectPolicy = FAST_RECONNECT, **kw: Any
) -> AvatarSession:
    return started(make_session, reconnect=policy, on_reconnect=events, **kw)


def dispatch_threads() -> List[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("avatarsdk-"))


# ------------------------------------------------------------------------------------- the drop


def test_a_drop_reconnects_with_a_new_token_and_the_session_goes_on(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    session = reconnecting(make_session, events)
    first = session.connection_id
    tokens = len(service.issued_tokens)
    service.wait_for_connection(0).drop()
    done = events.wait(ReconnectState.reconnected)
    # Told: one retryable error for the drop (nothing was in flight), then the attempt and its success.
    assert [e.code for e in recorder.errors] == [AvatarSDKErrorCode.connectionClosed]
    assert recorder.errors[0].retryable and recorder.errors[0].req_id is None
    assert events.states() == [ReconnectState.reconnecting, ReconnectState.reconnected]
    assert done.attempt == 1 and done.previous_connection_id == first and done.cut_req_ids == ()
    assert done.cause is recorder.errors[0]
    assert len(set(events.threads)) == 1  # one thread: the session's dispatcher, never the reader
    assert events.threads[0].startswith("avatarsdk-dispatch-")
    # A new token, a new connection, a new handshake.
    assert len(service.issued_tokens) == tokens + 1
    second = service.wait_for_connection(1)
    headers = {k.lower(): v for k, v in second.request_headers.items()}
    assert headers["x-session-key"] == service.issued_tokens[-1] and second.configure is not None
    assert session.connection_id == done.connection_id == second.connection_id != first
    # The session works on it and has not closed.
    frames = session.collect(pcm(0.12))
    assert len(frames) == 3 and recorder.closes == 0
    session.close()
    assert recorder.closes == 1 and recorder.events[-1] == "close"


@pytest.mark.parametrize(
    ("code", "expected"),
    [(code, error) for code, error, retryable in CLOSE_CODE_ERRORS if retryable]
    + [(1012, AvatarSDKErrorCode.connectionClosed)],
)
def test_close_codes_worth_retrying_reconnect(
    service: FakeAvatarService,
    make_session: MakeSession,
    recorder: Recorder,
    events: Events,
    code: int,
    expected: AvatarSDKErrorCode,
) -> None:
    session = reconnecting(make_session, events)
    service.wait_for_connection(0).close(code, "going")
    events.wait(ReconnectState.reconnected)
    assert [(e.code, e.close_code, e.retryable) for e in recorder.errors] == [(expected, code, True)]
    assert len(session.collect(pcm(0.04))) == 1


@pytest.mark.parametrize(
    ("code", "expected"),
    [(1000, None)] + [(code, error) for code, error, retryable in CLOSE_CODE_ERRORS if not retryable],
)
def test_other_ends_close_the_session_as_without_reconnect(
    service: FakeAvatarService,
    make_session: MakeSession,
    recorder: Recorder,
    events: Events,
    code: int,
    expected: Optional[AvatarSDKErrorCode],
) -> None:
    session = reconnecting(make_session, events)
    service.wait_for_connection(0).close(code, "bye")
    recorder.wait_closed()
    assert [e.code for e in recorder.errors] == ([expected] if expected else [])
    assert events.events == [] and len(service.connections) == 1 and session.closed


def test_a_server_error_then_its_close_is_reported_once_and_reconnects(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    reconnecting(make_session, events)
    conn = service.wait_for_connection(0)
    conn.send_error(4503, "upstream unavailable")
    conn.close(4503, "upstream unavailable")
    events.wait(ReconnectState.reconnected)
    assert [(e.code, e.server_code) for e in recorder.errors] == [(AvatarSDKErrorCode.upstreamError, "4503")]


def test_the_error_a_reconnect_follows_carries_the_close_of_its_server_error(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    reconnecting(make_session, events)
    conn = service.wait_for_connection(0)
    conn.send_error(4002, "maximum session duration")
    conn.close(4002, "session timeout")
    done = events.wait(ReconnectState.reconnected)
    assert len(recorder.errors) == 1
    err = recorder.errors[0]
    assert (err.server_code, err.close_code, err.close_reason) == ("4002", 4002, "session timeout")
    assert done.cause is err


def test_senders_waiting_for_a_reconnect_each_wait_their_own_send_timeout(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    """A reconnect backing off for 4 s and send_timeout=1: four threads calling send_audio() at the same moment
    each give up after about 1 s (none waits for another's turn), with a retryable error."""
    slow = ReconnectPolicy(initial_delay=4.0, max_delay=4.0, jitter=0.0, max_attempts=1)
    session = reconnecting(make_session, events, slow, send_timeout=1.0)
    service.wait_for_connection(0).drop()
    events.wait(ReconnectState.reconnecting)
    start = threading.Barrier(4)
    took: List[float] = []
    errors: List[AvatarSDKError] = []

    def send() -> None:
        start.wait(5)
        began = time.monotonic()
        try:
            session.send_audio(pcm(0.02))
        except AvatarSDKError as err:
            errors.append(err)
        took.append(time.monotonic() - began)

    senders = [threading.Thread(target=send, name=f"test-sender-{i}") for i in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(10)
    assert len(took) == 4 and max(took) < 1.8, sorted(took)
    assert [(e.code, e.retryable) for e in errors] == [(AvatarSDKErrorCode.connectionClosed, True)] * 4
    began = time.monotonic()
    session.close()  # cuts the backoff short
    assert time.monotonic() - began < 2


def test_a_user_close_never_reconnects(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    session = reconnecting(make_session, events)
    session.close()
    assert recorder.errors == [] and events.events == [] and recorder.closes == 1
    assert len(service.connections) == 1


# --------------------------------------------------------------------------- requests in flight


def test_requests_in_flight_fail_naming_their_req_id_and_frames_before_the_drop_arrive_once(
    make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    cut = threading.Event()

    def half_then_drop(conn: FakeConnection, request: FakeRequest) -> None:
        conn.send_frames(request.req_id, 4, end=False)
        cut.set()
        conn.drop()

    with FakeAvatarService(on_request=half_then_drop) as svc:
        session = reconnecting(make_session, events, **svc.session_kwargs(**recorder.callbacks()))
        done_req = session.send_audio(pcm(0.2), end=True)  # all its audio sent: awaiting frames
        assert cut.wait(5)
        event = events.wait(ReconnectState.reconnected)
        before = svc.connection(0).sent_frames(done_req)
        assert recorder.frames == before and len(before) == 4  # every frame before the drop, once, in order
        assert [(e.req_id, e.retryable, e.code) for e in recorder.errors] == [
            (done_req, True, AvatarSDKErrorCode.connectionClosed)
        ]
        assert done_req in recorder.errors[0].message and event.cut_req_ids == (done_req,)
        svc.on_request = None
        assert len(session.collect(pcm(0.08))) == 2  # the session goes on


def test_the_next_chunk_of_a_request_cut_off_raises_and_the_one_after_starts_a_new_request(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    session = reconnecting(make_session, events)
    req_id = session.send_audio(pcm(0.1))  # the request is open: its end=True chunk is not sent yet
    service.wait_for_connection(0).wait_for_request(req_id, ended=False)
    service.wait_for_connection(0).drop()
    events.wait(ReconnectState.reconnected)
    assert [e.req_id for e in recorder.errors] == [req_id]
    with pytest.raises(AvatarSDKError) as info:
        session.send_audio(pcm(0.1), end=True)
    assert info.value.req_id == req_id and info.value.retryable and info.value.phase == "websocket_send"
    new_req = session.send_audio(pcm(0.08), end=True)
    assert new_req != req_id
    recorder.wait_last()
    found = service.find_request(new_req)
    assert found is not None and found[0] is service.connection(1)


def test_interrupting_a_request_cut_off_sends_nothing(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    session = reconnecting(make_session, events)
    req_id = session.send_audio(pcm(0.1))
    service.wait_for_connection(0).wait_for_request(req_id, ended=False)
    service.wait_for_connection(0).drop()
    events.wait(ReconnectState.reconnected)
    assert session.interrupt() == req_id
    assert session.current_req_id is None
    assert service.connection(1).requests == {}  # nothing reached the new connection
    assert len(session.collect(pcm(0.04))) == 1


def test_a_pull_request_in_flight_raises_a_retryable_error_naming_it(
    make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    def two_then_drop(conn: FakeConnection, request: FakeRequest) -> None:
        conn.send_frames(request.req_id, 2, end=False)
        conn.drop()

    with FakeAvatarService(on_request=two_then_drop) as svc:
        session = reconnecting(make_session, events, **svc.session_kwargs(**recorder.callbacks()))
        frames = session.stream(pcm(0.2))
        got = []
        with pytest.raises(AvatarSDKError) as info:
            for frame in frames:
                got.append(frame.data)
        assert len(got) == 2 and info.value.retryable and info.value.req_id is not None
        assert info.value.req_id in info.value.message
        events.wait(ReconnectState.reconnected)


def test_requests_completed_before_the_drop_are_not_reported(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    session = reconnecting(make_session, events)
    assert len(session.collect(pcm(0.08))) == 2
    service.wait_for_connection(0).drop()
    event = events.wait(ReconnectState.reconnected)
    assert event.cut_req_ids == () and [e.req_id for e in recorder.errors] == [None]


# ---------------------------------------------------------------------- sends during a reconnect


def test_a_send_during_a_reconnect_waits_for_the_new_connection(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    hold = threading.Event()
    waiting = threading.Event()

    def on_reconnect(event: ReconnectEvent) -> None:
        if event.state is ReconnectState.reconnecting:
            waiting.set()
            hold.wait(10)

    session = started(make_session, reconnect=FAST_RECONNECT, on_reconnect=on_reconnect)
    service.wait_for_connection(0).drop()
    assert waiting.wait(5)
    outcome: List[Any] = []
    sender = threading.Thread(target=lambda: outcome.append(session.send_audio(pcm(0.04), end=True)))
    sender.start()
    sender.join(0.2)  # still waiting (it cannot finish: the reconnect is held)
    assert sender.is_alive() and outcome == []
    hold.set()
    sender.join(5)
    assert len(outcome) == 1
    service.wait_for_connection(1).wait_for_request(outcome[0])  # sent on the new connection
    recorder.wait_last()


def test_a_send_during_a_reconnect_gives_up_after_send_timeout(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    hold = threading.Event()

    def on_reconnect(event: ReconnectEvent) -> None:
        hold.wait(10)

    session = started(make_session, reconnect=FAST_RECONNECT, on_reconnect=on_reconnect, send_timeout=0.2)
    try:
        service.wait_for_connection(0).drop()
        recorder.wait_error()
        with pytest.raises(AvatarSDKError) as info:
            session.send_audio(pcm(0.04), end=True)
        assert info.value.code is AvatarSDKErrorCode.connectionClosed and info.value.retryable
        assert "not re-established" in info.value.message
    finally:
        hold.set()


# ------------------------------------------------------------------------------------- giving up


def test_the_session_gives_up_after_max_attempts(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    session = reconnecting(make_session, events)
    for _ in range(FAST_RECONNECT.max_attempts):
        service.reject_upgrade(503, "upstream down")
    service.wait_for_connection(0).drop()
    failed = events.wait(ReconnectState.failed)
    recorder.wait_closed()
    assert events.states() == [ReconnectState.reconnecting] * 3 + [ReconnectState.failed]
    assert [e.attempt for e in events.events] == [1, 2, 3, 3]
    assert failed.error is not None and failed.error.http_status == 503
    # on_error: the drop, then the final error; on_close once, last.
    assert [e.code for e in recorder.errors] == [AvatarSDKErrorCode.connectionClosed, AvatarSDKErrorCode.serverError]
    final = recorder.errors[-1]
    assert "after 3 attempts" in final.message and final.http_status == 503
    assert recorder.closes == 1 and recorder.events[-1] == "close"
    with pytest.raises(AvatarSDKError) as info:
        session.send_audio(pcm(0.04))
    assert info.value.code is AvatarSDKErrorCode.serverError
    assert service.upgrade_attempts == 4


def test_a_failure_not_worth_retrying_stops_the_reconnect_at_once(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    reconnecting(make_session, events)
    service.script_token(TokenReply(401, jsonapi_error(401, "UNAUTHENTICATED", "Unauthorized", "invalid api key")))
    service.wait_for_connection(0).drop()
    events.wait(ReconnectState.failed)
    recorder.wait_closed()
    assert events.states() == [ReconnectState.reconnecting, ReconnectState.failed]
    assert recorder.errors[-1].code is AvatarSDKErrorCode.invalidRequest and not recorder.errors[-1].retryable
    assert "test-api-key" not in str(recorder.errors[-1]) and "test-api-key" not in repr(recorder.errors[-1])


def test_a_reconnect_refused_for_the_plans_limit_tries_again(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    """4003 in a reconnect's handshake refuses a start (a slot frees when a session ends): the next attempt
    follows, within max_attempts, as after a 429."""
    session = reconnecting(make_session, events)
    service.script_handshake(HandshakeError(4003, "too many sessions", close_code=4003))
    service.wait_for_connection(0).drop()
    done = events.wait(ReconnectState.reconnected)
    assert done.attempt == 2
    assert events.states() == [ReconnectState.reconnecting, ReconnectState.reconnecting, ReconnectState.reconnected]
    refused = events.events[1].error
    assert refused is not None and refused.code is AvatarSDKErrorCode.concurrencyLimit and refused.retryable
    assert len(session.collect(pcm(0.04))) == 1
    assert recorder.closes == 0


def test_backoff_grows_and_is_capped() -> None:
    policy = ReconnectPolicy(initial_delay=0.5, max_delay=3.0, multiplier=2.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = ReconnectPolicy(initial_delay=1.0, jitter=0.5)
    assert all(0.5 <= jittered.delay(1) <= 1.0 for _ in range(200))


def test_the_deadline_bounds_the_attempts(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    policy = ReconnectPolicy(initial_delay=0.05, max_delay=0.05, jitter=0.0, max_attempts=1000, deadline=0.3)
    reconnecting(make_session, events, policy)
    for _ in range(50):
        service.reject_upgrade(503, "upstream down")
    service.wait_for_connection(0).drop()
    events.wait(ReconnectState.failed)
    attempts = events.states().count(ReconnectState.reconnecting)
    assert 1 <= attempts <= 6  # each attempt waits 0.05 s: no more fit in 0.3 s


# ------------------------------------------------------------------------------------------ close


def test_close_during_the_backoff_returns_promptly(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    session = reconnecting(make_session, events, ReconnectPolicy(initial_delay=60.0, max_delay=60.0, jitter=0.0))
    service.wait_for_connection(0).drop()
    events.wait(ReconnectState.reconnecting)
    session.close()  # waits close_timeout (5 s) at most for on_close: the 60 s backoff must be cut short
    assert session.closed and recorder.closes == 1
    assert len(service.connections) == 1


def test_close_from_the_reconnect_hook(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    sessions: List[AvatarSession] = []

    def on_reconnect(event: ReconnectEvent) -> None:
        sessions[0].close()

    sessions.append(started(make_session, reconnect=FAST_RECONNECT, on_reconnect=on_reconnect))
    service.wait_for_connection(0).drop()
    recorder.wait_closed()
    assert recorder.closes == 1 and len(service.connections) == 1


def test_close_racing_the_new_handshake(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    """close() while the reconnect waits for the handshake's confirmation: the attempt is cut short."""
    session = reconnecting(make_session, events)
    service.wait_for_connection(0)
    service.script_handshake(HandshakeSilence())
    service.wait_for_connection(0).drop()
    events.wait(ReconnectState.reconnecting)
    service.wait_for_connection(1)  # its configure message arrived; the confirmation never comes
    session.close()
    assert session.closed and recorder.closes == 1
    assert [e.code for e in recorder.errors] == [AvatarSDKErrorCode.connectionClosed]


# ------------------------------------------------------------------------------ network faults


def test_a_reset_connection_reconnects(make_session: MakeSession, recorder: Recorder, events: Events) -> None:
    with FakeAvatarService() as svc, FaultProxy(svc.ingress_url) as proxy:
        session = reconnecting(
            make_session, events, **svc.session_kwargs(**recorder.callbacks(), ingress_endpoint_url=proxy.url)
        )
        proxy.reset()
        events.wait(ReconnectState.reconnected)
        assert recorder.errors[0].code is AvatarSDKErrorCode.connectionClosed and recorder.errors[0].retryable
        assert len(session.collect(pcm(0.04))) == 1
        assert proxy.connections == 2


def test_a_dead_peer_found_by_the_keepalive_reconnects(
    make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    with FakeAvatarService() as svc, FaultProxy(svc.ingress_url) as proxy:
        session = reconnecting(
            make_session,
            events,
            ReconnectPolicy(initial_delay=0.0, max_delay=0.1, jitter=0.0, max_attempts=50, deadline=None),
            **svc.session_kwargs(**recorder.callbacks(), ingress_endpoint_url=proxy.url),
            ping_interval=0.1,
            ping_timeout=0.3,
            connect_timeout=0.5,
        )
        proxy.blackhole()
        recorder.wait_error()
        assert recorder.errors[0].close_code == 1006 and "ping" in recorder.errors[0].message
        proxy.resume()
        events.wait(ReconnectState.reconnected)
        assert len(session.collect(pcm(0.04))) == 1


# ------------------------------------------------------------------------------- many, and secrets


def test_many_drops_leave_no_thread_or_descriptor_behind(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, events: Events
) -> None:
    session = reconnecting(make_session, events)
    assert len(session.collect(pcm(0.04))) == 1
    threads, fds = dispatch_threads(), len(os.listdir("/proc/self/fd"))
    for n in range(1, 31):
        service.wait_for_connection(n - 1).drop()
        events.wait(ReconnectState.reconnected, n)
        assert len(session.collect(pcm(0.04))) == 1
    assert dispatch_threads() == threads
    assert len(os.listdir("/proc/self/fd")) <= fds + 2  # the stand-in's side may lag a connection behind
    service.clear_records()
    session.close()
    assert recorder.closes == 1


def test_reconnects_log_no_secret(
    service: FakeAvatarService,
    make_session: MakeSession,
    recorder: Recorder,
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="avatarsdk")
    session = reconnecting(make_session, events)
    service.wait_for_connection(0).drop()
    events.wait(ReconnectState.reconnected)
    session.close()
    text = caplog.text + "".join(repr(e) + str(e) for e in recorder.errors) + repr(events.events)
    assert "reconnected" in caplog.text
    for secret in [service.api_key, *service.issued_tokens]:
        assert secret not in text


# ------------------------------------------------------------------------------------- arguments


def test_reconnect_arguments_are_checked() -> None:
    with FakeAvatarService() as svc:
        with pytest.raises(TypeError, match="reconnect"):
            new_avatar_session(**svc.session_kwargs(reconnect="yes"))
        with pytest.raises(TypeError, match="on_reconnect"):
            new_avatar_session(**svc.session_kwargs(on_reconnect=3))
    with pytest.raises(ValueError, match="max_attempts"):
        ReconnectPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        ReconnectPolicy(jitter=2)
    with pytest.raises(ValueError, match="max_delay"):
        ReconnectPolicy(initial_delay=5, max_delay=1)
    with pytest.raises(ValueError, match="initial_delay"):
        ReconnectPolicy(initial_delay=float("nan"))


def test_a_pooled_session_reconnects_for_its_borrower_and_is_replaced_when_returned(
    service: FakeAvatarService, recorder: Recorder, events: Events
) -> None:
    credentials: Dict[str, Any] = dict(service.credentials())
    with SessionPool(**credentials, reconnect=FAST_RECONNECT, on_reconnect=events, on_error=recorder.on_error) as pool:
        with pool.session() as session:
            first = session.connection_id
            service.wait_for_connection(0).drop()
            events.wait(ReconnectState.reconnected)
            assert session.connection_id != first and len(session.collect(pcm(0.08))) == 2
        assert recorder.errors[0].retryable
        assert pool.stats().discarded == 1  # it reported an error: not lent again
        with pool.session() as session:
            assert len(session.collect(pcm(0.04))) == 1


def test_close_during_a_slow_token_call_returns_within_close_timeout_and_says_so(
    service: FakeAvatarService,
    make_session: MakeSession,
    recorder: Recorder,
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The token call cannot be interrupted: close() waits close_timeout, warns that the dispatcher is still
    running, and on_close comes (once) when the call returns."""
    session = reconnecting(make_session, events, close_timeout=0.2)
    service.script_token(TokenReply(200, {"sessionToken": "late-token"}, delay=1.0))
    service.wait_for_connection(0).drop()
    events.wait(ReconnectState.reconnecting)
    deadline = time.monotonic() + 5
    while len(service.token_requests) < 2:  # until the reconnect's call is in the stand-in
        assert time.monotonic() < deadline, "no token call from the reconnect"
        time.sleep(0.005)
    session.close()
    assert "still running" in caplog.text and recorder.closes == 0
    recorder.wait_closed()
    assert recorder.closes == 1 and len(service.connections) == 1
