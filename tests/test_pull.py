"""Pull-style requests (open_request, stream, collect): frames routed by req_id, timeouts, faults, abandon."""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings
from typing import Callable, List

import pytest
from conftest import Recorder, pcm, started

from avatarsdk import AvatarRequest, AvatarSDKError, AvatarSDKErrorCode, AvatarSession, Frame, RequestTimeoutError
from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk.request import RequestInbox
from avatarsdk.testing import FakeAvatarService, FakeConnection, FakeRequest

MakeSession = Callable[..., AvatarSession]


def kept(req_id: str) -> List[object]:
    """What is still alive of request ``req_id``: its AvatarRequest and the inbox its frames were routed to."""
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, (AvatarRequest, RequestInbox)) and o.req_id == req_id]


def interrupts(conn: FakeConnection) -> List[str]:
    return [m.client_interrupt.req_id for m in conn.messages if m.type == pb.MESSAGE_CLIENT_INTERRUPT]


def test_stream_yields_the_requests_frames_exactly(service: FakeAvatarService, make_session: MakeSession) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    frames = list(session.stream(pcm(0.4)))
    assert all(isinstance(f, Frame) for f in frames)
    req_id = frames[0].req_id
    assert [f.data for f in frames] == conn.sent_frames(req_id)
    assert [f.last for f in frames] == [False] * 9 + [True]
    request = conn.wait_for_request(req_id)
    assert bytes(request.audio) == pcm(0.4) and request.chunks == 4  # 100 ms chunks
    assert kept(req_id) == []  # done: nothing of the request is kept


def test_collect_and_the_callback_both_see_the_frames(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session)
    frames = session.collect(pcm(0.2), chunk_ms=20)
    assert len(frames) == 5 and frames[-1].last
    recorder.wait_frames(5)
    assert recorder.frames == [f.data for f in frames]
    conn = service.wait_for_connection(0)
    assert conn.wait_for_request(frames[0].req_id).chunks == 10


def test_frames_sent_before_iterating_are_kept(make_session: MakeSession) -> None:
    """The subscription exists before the first chunk goes out: early frames wait in the request."""

    def answer_at_once(conn: FakeConnection, request: FakeRequest) -> None:
        conn.send_frames(request.req_id, 3)

    with FakeAvatarService(on_request=answer_at_once) as svc:
        session = make_session(**svc.session_kwargs())
        session.init()
        session.start()
        with session.open_request() as request:
            request.send(pcm(0.1), end=True)
            conn = svc.wait_for_connection(0)
            conn.wait_for(lambda: len(conn.sent_frames()) == 3)
            frames = [f.data for f in request]
        assert frames == conn.sent_frames(request.req_id)
        session.close()


def test_chunks_from_one_thread_frames_in_another(service: FakeAvatarService, make_session: MakeSession) -> None:
    session = started(make_session)
    request = session.open_request()

    def feed() -> None:
        for i in range(10):
            request.send(pcm(0.04), end=i == 9)

    feeder = threading.Thread(target=feed)
    feeder.start()
    frames = request.collect()
    feeder.join(10)
    assert len(frames) == 10 and frames[-1].last
    assert frames[0].req_id == request.req_id and request.finished


def test_interleaved_requests_are_routed_by_req_id(make_session: MakeSession) -> None:
    """The service may still be sending one request's frames while the next request runs."""
    held: List[FakeRequest] = []

    def interleave(conn: FakeConnection, request: FakeRequest) -> None:
        if not held:
            held.append(request)  # answer the first request only together with the second
            return
        first = held[0]
        for i in range(4):
            conn.send_animation(first.req_id, end=i == 3)
            conn.send_animation(request.req_id, end=i == 3)

    with FakeAvatarService(on_request=interleave) as svc:
        session = make_session(**svc.session_kwargs())
        session.init()
        session.start()
        first = session.open_request()
        first.send(pcm(0.1), end=True)
        second = session.open_request()  # the first's end chunk is out: a new request may open
        second.send(pcm(0.1), end=True)
        results = {}

        def drain(name: str, request: object) -> None:
            results[name] = [f.req_id for f in request]  # type: ignore[attr-defined]

        threads = [threading.Thread(target=drain, args=(n, r)) for n, r in (("a", first), ("b", second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == {"a": [first.req_id] * 4, "b": [second.req_id] * 4}
        session.close()


def test_one_open_request_at_a_time(service: FakeAvatarService, make_session: MakeSession) -> None:
    session = started(make_session)
    request = session.open_request()
    with pytest.raises(ValueError, match="still open"):
        session.open_request()
    request.send(pcm(0.04), end=True)
    with pytest.raises(ValueError, match="is over"):
        request.send(pcm(0.04))
    request.collect()
    session.open_request().close()


def test_frame_timeout_raises_and_interrupts(make_session: MakeSession) -> None:
    with FakeAvatarService(on_request=lambda conn, req: None) as silent:
        session = make_session(**silent.session_kwargs())
        session.init()
        session.start()
        began = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            list(session.stream(pcm(0.1), frame_timeout=0.3))
        assert time.monotonic() - began < 3
        err = info.value
        assert isinstance(err, TimeoutError) and isinstance(err, AvatarSDKError)
        assert (err.code, err.retryable) == (AvatarSDKErrorCode.timeout, True)
        conn = silent.wait_for_connection(0)
        conn.wait_for(lambda: interrupts(conn) == [err.req_id])  # the service is told to stop
        session.close()


def test_deadline_bounds_the_whole_request(make_session: MakeSession) -> None:
    with FakeAvatarService(frames_per_request=100, frame_interval=0.05) as slow:
        session = make_session(**slow.session_kwargs())
        session.init()
        session.start()
        got: List[Frame] = []
        with pytest.raises(RequestTimeoutError, match="deadline"):
            for frame in session.stream(pcm(0.1), frame_timeout=5, deadline=0.4):
                got.append(frame)
        assert 1 <= len(got) < 100
        session.close()


def test_a_server_error_for_the_request_is_raised_after_earlier_frames(make_session: MakeSession) -> None:
    def fail_midway(conn: FakeConnection, request: FakeRequest) -> None:
        conn.send_frames(request.req_id, 2, end=False)
        conn.send_error(3, "unsupported sample rate", req_id=request.req_id)

    with FakeAvatarService(on_request=fail_midway) as svc:
        session = make_session(**svc.session_kwargs())
        session.init()
        session.start()
        got: List[Frame] = []
        with pytest.raises(AvatarSDKError) as info:
            for frame in session.stream(pcm(0.1)):
                got.append(frame)
        assert len(got) == 2
        assert (info.value.code, info.value.req_id) == (AvatarSDKErrorCode.unsupportedSampleRate, got[0].req_id)
        conn = svc.wait_for_connection(0)
        assert interrupts(conn) == []  # the service already ended it
        session.close()


def test_a_dropped_connection_ends_open_requests(make_session: MakeSession, recorder: Recorder) -> None:
    def drop_midway(conn: FakeConnection, request: FakeRequest) -> None:
        conn.send_frames(request.req_id, 3, end=False)
        conn.drop()

    with FakeAvatarService(on_request=drop_midway) as svc:
        session = make_session(**svc.session_kwargs())
        session.init()
        session.start()
        got: List[Frame] = []
        with pytest.raises(AvatarSDKError) as info:
            for frame in session.stream(pcm(0.1)):
                got.append(frame)
        assert len(got) == 3
        err = info.value
        assert (err.code, err.close_code, err.retryable, err.req_id) == (
            AvatarSDKErrorCode.connectionClosed,
            1006,
            True,
            got[0].req_id,
        )
        recorder.wait_closed()


def test_abandoning_the_iterator_releases_it_and_interrupts(make_session: MakeSession) -> None:
    with FakeAvatarService(frames_per_request=50, frame_interval=0.01) as svc:
        session = make_session(**svc.session_kwargs())
        session.init()
        session.start()
        frames = session.stream(pcm(1.0))
        first = next(frames)
        next(frames)
        frames.close()  # what a WSGI server does when the client goes away
        assert kept(first.req_id) == []
        conn = svc.wait_for_connection(0)
        conn.wait_for(lambda: interrupts(conn) == [first.req_id])
        session.close()


def test_pull_requests_need_a_started_session(make_session: MakeSession) -> None:
    session = make_session()
    with pytest.raises(ValueError, match="not started"):
        session.open_request()
    with pytest.raises(ValueError, match="frame_timeout"):
        session.open_request(frame_timeout=0)
    with pytest.raises(ValueError, match="chunk_ms"):
        session.stream(pcm(0.1), chunk_ms=0)


def test_a_forked_child_cannot_use_the_parents_session(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session)
    conn = service.wait_for_connection(0)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() with threads running
        pid = os.fork()
    if pid == 0:  # the child: report what happened, never run the test framework
        outcome = b"no error"
        try:
            session.send_audio(pcm(0.04))
        except RuntimeError as exc:
            outcome = b"refused" if b"fork" in str(exc).encode() else b"wrong message"
        except BaseException:
            outcome = b"other error"
        session.close()  # releases the child's copy of the socket only
        os.write(write_end, outcome)
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    assert os.read(read_end, 100) == b"refused" and status == 0
    os.close(read_end)
    # the parent's connection is untouched: no close frame came from the child
    assert [f.data for f in session.collect(pcm(0.08))] == conn.sent_frames()[-2:]
    assert conn.client_close_code is None and recorder.closes == 0
