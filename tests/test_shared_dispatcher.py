"""SharedDispatcher: many sessions' callbacks on a few threads, against the stand-in over real sockets.

Each session's callbacks keep their order and never run on two threads at once; different sessions' run at the
same time; a blocked thread leaves the others working; on_close and reconnects run off the shared threads;
back-pressure, close from a callback, close() of the dispatcher, pools and fork work as with a thread per session.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest
from conftest import FAST_RECONNECT, Recorder, in_forked_child, pcm, started, wait_until

from avatarsdk import (
    AvatarSession,
    SessionPool,
    SharedDispatcher,
    new_avatar_session,
)
from avatarsdk.testing import FakeAvatarService

MakeSession = Callable[..., AvatarSession]


def threads_named(prefix: str) -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.fixture
def shared() -> Iterator[SharedDispatcher]:
    with SharedDispatcher(2) as dispatcher:
        yield dispatcher
    assert not threads_named("avatarsdk-shared-")


class Tracker:
    """Per-session callbacks that record frames and check that no two run at once for one session."""

    def __init__(self, sessions: int) -> None:
        self.frames: List[List[bytes]] = [[] for _ in range(sessions)]
        self.threads: List[set] = [set() for _ in range(sessions)]
        self.active = [0] * sessions
        self.overlaps = 0
        self.closes = [0] * sessions
        self.close_threads: List[str] = []
        self._cond = threading.Condition()

    def callbacks(self, index: int) -> Dict[str, Any]:
        def transport_frames(frame: bytes, last: bool) -> None:
            with self._cond:
                self.active[index] += 1
                self.overlaps += self.active[index] > 1
            with self._cond:  # a gap in which another thread could enter for the same session
                self.frames[index].append(frame)
                self.threads[index].add(threading.current_thread().name)
                self.active[index] -= 1
                self._cond.notify_all()

        def on_close() -> None:
            with self._cond:
                self.closes[index] += 1
                self.close_threads.append(threading.current_thread().name)
                self._cond.notify_all()

        return {"transport_frames": transport_frames, "on_close": on_close}

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, timeout), f"timed out waiting for {what}"


# ------------------------------------------------------------------------------------------ delivery


def test_many_sessions_keep_their_order_on_two_shared_threads(
    service: FakeAvatarService, shared: SharedDispatcher
) -> None:
    count = 8
    tracker = Tracker(count)
    sessions = [
        new_avatar_session(**service.session_kwargs(**tracker.callbacks(i)), dispatcher=shared) for i in range(count)
    ]
    try:
        for session in sessions:
            session.init()
            session.start()
        req_ids = [session.send_audio(pcm(2.0), end=True) for session in sessions]  # 50 frames each
        tracker.wait(lambda: all(len(f) == 50 for f in tracker.frames), "every session's 50 frames")
        for i, session in enumerate(sessions):
            conn = next(c for c in service.connections if c.connection_id == session.connection_id)
            assert tracker.frames[i] == conn.sent_frames(req_ids[i])  # byte for byte, in order
            assert tracker.threads[i] <= {"avatarsdk-shared-1", "avatarsdk-shared-2"}
        assert tracker.overlaps == 0
        assert not threads_named("avatarsdk-dispatch-")  # no thread per session
        assert len(threads_named("avatarsdk-shared-")) <= 2
    finally:
        for session in sessions:
            session.close()
    assert tracker.closes == [1] * count
    # on_close runs on a short-lived thread of its own, named as the session's dispatcher; it has ended.
    assert all(name.startswith("avatarsdk-dispatch-") for name in tracker.close_threads)
    assert not threads_named("avatarsdk-dispatch-")


def test_two_sessions_callbacks_run_at_the_same_time(service: FakeAvatarService, shared: SharedDispatcher) -> None:
    both_in = threading.Barrier(2, timeout=10)  # passes only if both callbacks are running at once
    met: List[str] = []

    def meet(frame: bytes, last: bool) -> None:
        both_in.wait()
        met.append(threading.current_thread().name)

    sessions = [new_avatar_session(**service.session_kwargs(transport_frames=meet), dispatcher=shared) for _ in "ab"]
    try:
        for session in sessions:
            session.init()
            session.start()
            session.send_audio(pcm(0.04), end=True)  # one frame each
        for session in sessions:
            session.close()
    finally:
        both_in.abort()
    assert sorted(met) == ["avatarsdk-shared-1", "avatarsdk-shared-2"]


def test_a_blocked_thread_leaves_the_others_working(service: FakeAvatarService, shared: SharedDispatcher) -> None:
    release = threading.Event()
    blocked = threading.Event()
    tracker = Tracker(3)

    def stuck(frame: bytes, last: bool) -> None:
        blocked.set()
        assert release.wait(10)

    first = new_avatar_session(**service.session_kwargs(transport_frames=stuck), dispatcher=shared)
    others = [new_avatar_session(**service.session_kwargs(**tracker.callbacks(i)), dispatcher=shared) for i in (1, 2)]
    try:
        for session in (first, *others):
            session.init()
            session.start()
        first.send_audio(pcm(0.4), end=True)
        assert blocked.wait(10)
        for session in others:
            session.send_audio(pcm(0.4), end=True)
        # One of the two threads is stuck in the first session's callback; the other serves both others.
        tracker.wait(lambda: len(tracker.frames[1]) == len(tracker.frames[2]) == 10, "the other sessions' frames")
    finally:
        release.set()
        for session in (first, *others):
            session.close()


def test_back_pressure_holds_with_shared_threads(service: FakeAvatarService, shared: SharedDispatcher) -> None:
    """A consumer stuck on the first frame: the session's queue fills to its limit and stops there (the reader
    waits); once the consumer goes on, every frame arrives, in order."""
    limit = 4
    gate = threading.Event()
    cond = threading.Condition()
    received: List[bytes] = []

    def slow(frame: bytes, last: bool) -> None:
        assert gate.wait(10)
        with cond:
            received.append(frame)
            cond.notify_all()

    session = new_avatar_session(
        **service.session_kwargs(transport_frames=slow), dispatcher=shared, max_queued_frames=limit
    )
    with session:
        conn = service.wait_for_connection(0)
        req_id = session.send_audio(pcm(0.04), end=False)
        conn.wait_for_request(req_id, ended=False)
        sender = threading.Thread(target=conn.send_frames, args=(req_id, 200), kwargs={"size": 20_000})
        sender.start()
        wait_until(lambda: session.backlog.messages >= limit, "a full queue")
        sizes = [session.backlog.messages for _ in range(100)]
        gate.set()
        sender.join(10)
        assert not sender.is_alive()
        with cond:
            assert cond.wait_for(lambda: len(received) == 200, 10), f"{len(received)} of 200 frames"
        assert received == conn.sent_frames(req_id)
    # At most one block of the socket's bytes beyond the limit (a 64 KiB read holds at most 4 such frames).
    assert max(sizes) <= limit + 4


# ------------------------------------------------------------------------------------ close, ends


def test_close_from_a_callback_on_a_shared_thread(service: FakeAvatarService, shared: SharedDispatcher) -> None:
    recorder = Recorder()
    holder: List[AvatarSession] = []

    def close_on_first(frame: bytes, last: bool) -> None:
        recorder.transport_frames(frame, last)
        holder[0].close()  # returns at once on the callback's thread

    session = new_avatar_session(
        **service.session_kwargs(transport_frames=close_on_first, on_close=recorder.on_close), dispatcher=shared
    )
    holder.append(session)
    session.init()
    session.start()
    session.send_audio(pcm(0.2), end=True)
    recorder.wait_closed()
    session.close()
    assert recorder.closes == 1 and recorder.events[-1] == "close"
    assert recorder.threads[0] in ("avatarsdk-shared-1", "avatarsdk-shared-2")
    assert session.closed


def test_closing_another_session_from_a_shared_thread_does_not_wait_for_it(service: FakeAvatarService) -> None:
    """With one shared thread, A's callback closes B while B's frames wait for that thread: close() returns at
    once (waiting would last close_timeout: B's frames and on_close need the thread A's callback holds), and
    B's frames and on_close follow when the callback returns."""
    go = threading.Event()
    holding = threading.Event()
    returned: List[float] = []
    b_events: List[str] = []
    b_frames = threading.Semaphore(0)
    with SharedDispatcher(1) as single:
        b = new_avatar_session(
            **service.session_kwargs(
                transport_frames=lambda f, last: (b_events.append("frame"), b_frames.release()),
                on_close=lambda: b_events.append("close"),
            ),
            dispatcher=single,
            close_timeout=30.0,
        )

        def close_b(frame: bytes, last: bool) -> None:
            holding.set()
            assert go.wait(10)
            began = time.monotonic()
            b.close()
            returned.append(time.monotonic() - began)
            b_events.append("closed")

        a = new_avatar_session(**service.session_kwargs(transport_frames=close_b), dispatcher=single)
        with a:
            b.init()
            b.start()
            a.send_audio(pcm(0.04), end=True)
            assert holding.wait(10)  # A's callback holds the only shared thread
            b.send_audio(pcm(0.2), end=True)
            wait_until(lambda: b.backlog.messages == 5, "B's five frames queued")
            go.set()
            wait_until(lambda: "close" in b_events, "B's on_close")
        assert returned and returned[0] < 10
        assert b_events == ["closed", "frame", "frame", "frame", "frame", "frame", "close"]


def test_a_reconnect_runs_off_the_shared_threads_and_frames_go_on(
    service: FakeAvatarService, shared: SharedDispatcher, make_session: MakeSession, recorder: Recorder
) -> None:
    reconnects: List[str] = []
    seen: List[str] = []

    def on_reconnect(event: Any) -> None:
        reconnects.append(event.state.value)
        seen.append(threading.current_thread().name)

    session = started(make_session, reconnect=FAST_RECONNECT, on_reconnect=on_reconnect, dispatcher=shared)
    assert len(session.collect(pcm(0.12))) == 3
    service.wait_for_connection(0).drop()
    recorder.wait_error()
    frames = session.collect(pcm(0.2))  # waits for the new connection, then its frames
    assert len(frames) == 5
    assert reconnects == ["reconnecting", "reconnected"]
    assert len(set(seen)) == 1 and seen[0].startswith("avatarsdk-dispatch-")  # a thread of its own, not a shared one
    assert session.connection_id == service.wait_for_connection(1).connection_id
    session.close()
    assert recorder.closes == 1 and recorder.events[-1] == "close"


def test_close_stops_the_threads_and_frames_start_them_again(service: FakeAvatarService) -> None:
    dispatcher = SharedDispatcher(3)
    recorder = Recorder()
    session = new_avatar_session(**service.session_kwargs(**recorder.callbacks()), dispatcher=dispatcher)
    with session:
        assert len(session.collect(pcm(0.08))) == 2  # the pull API on shared threads (the callback sees them too)
        session.send_audio(pcm(0.08), end=True)
        recorder.wait_last(2)
        assert 1 <= len(threads_named("avatarsdk-shared-")) <= 3
        dispatcher.close()
        assert not threads_named("avatarsdk-shared-")
        session.send_audio(pcm(0.08), end=True)
        recorder.wait_last(3)
        assert threads_named("avatarsdk-shared-")
    dispatcher.close()
    assert not threads_named("avatarsdk-shared-")
    assert recorder.closes == 1 and len(recorder.frames) == 6


def test_a_pool_runs_its_sessions_callbacks_on_the_shared_threads(
    service: FakeAvatarService, shared: SharedDispatcher
) -> None:
    names: List[str] = []
    with SessionPool(
        **service.credentials(),
        max_size=3,
        transport_frames=lambda frame, last: names.append(threading.current_thread().name),
        dispatcher=shared,
    ) as pool:
        results: List[int] = []
        workers = [threading.Thread(target=lambda: results.append(len(pool.collect(pcm(0.2))))) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(10)
        assert results == [5, 5, 5]
    assert len(names) == 15 and set(names) <= {"avatarsdk-shared-1", "avatarsdk-shared-2"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
def test_a_forked_child_runs_callbacks_on_threads_of_its_own(
    service: FakeAvatarService, shared: SharedDispatcher
) -> None:
    with new_avatar_session(**service.session_kwargs(), dispatcher=shared) as session:
        assert len(session.collect(pcm(0.08))) == 2  # the parent's threads are running

    def child() -> Dict[str, Any]:
        names: List[str] = []
        with new_avatar_session(
            **service.session_kwargs(transport_frames=lambda f, last: names.append(threading.current_thread().name)),
            dispatcher=shared,
        ) as child_session:
            frames = child_session.collect(pcm(0.12))
        shared.close()
        return {
            "frames": len(frames),
            "names": sorted(set(names)),
            "left": [t.name for t in threading.enumerate() if t.name.startswith("avatarsdk-")],
        }

    report = in_forked_child(child)
    assert (
        report["frames"] == 3
        and report["names"]
        and set(report["names"]) <= {"avatarsdk-shared-1", "avatarsdk-shared-2"}
    )
    assert report["left"] == []
    # The parent's dispatcher still works.
    with new_avatar_session(**service.session_kwargs(), dispatcher=shared) as session:
        assert len(session.collect(pcm(0.08))) == 2


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("threads", "error"), [(0, ValueError), (-1, ValueError), (2.0, TypeError), ("2", TypeError), (True, TypeError)]
)
def test_threads_must_be_a_positive_int(threads: Any, error: type) -> None:
    with pytest.raises(error, match="threads"):
        SharedDispatcher(threads)


def test_dispatcher_must_be_a_shared_dispatcher(service: FakeAvatarService) -> None:
    with pytest.raises(TypeError, match="dispatcher: expected a SharedDispatcher"):
        new_avatar_session(**service.session_kwargs(), dispatcher=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dispatcher: expected a SharedDispatcher"):
        SessionPool(**service.credentials(), dispatcher=4)  # type: ignore[arg-type]
    assert service.token_requests == []  # nothing was sent


def test_repr_and_threads() -> None:
    dispatcher = SharedDispatcher(4)
    assert dispatcher.threads == 4
    assert repr(dispatcher) == "<SharedDispatcher threads=4 running=0>"
