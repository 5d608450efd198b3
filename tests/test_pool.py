"""SessionPool against the stand-in service over real sockets: sharing, health, refresh, timeouts, close, fork."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import inspect
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import Recorder, in_forked_child, needs_pyav, pcm, wait_until

from avatarsdk import (
    AvatarSDKError,
    AvatarSDKErrorCode,
    AvatarSession,
    Frame,
    InsecureTransportWarning,
    OggOpusEncoderConfig,
    PoolStats,
    PoolTimeoutError,
    SessionPool,
    new_avatar_session,
)
from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk.testing import FakeAvatarService, FakeConnection, FakeRequest, TokenReply

MakePool = Callable[..., SessionPool]


def interrupts(conn: FakeConnection) -> List[str]:
    return [m.client_interrupt.req_id for m in conn.messages if m.type == pb.MESSAGE_CLIENT_INTERRUPT]


def connection(service: FakeAvatarService, connection_id: Optional[str]) -> FakeConnection:
    matches = [c for c in service.connections if c.connection_id == connection_id]
    assert len(matches) == 1, connection_id
    return matches[0]


def counts(pool: SessionPool) -> PoolStats:
    """``pool.stats()`` without the connected time (it depends on the clock)."""
    return dataclasses.replace(pool.stats(), connected_seconds=0.0)


def pool_threads() -> List[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("avatarsdk-pool-")]


@pytest.fixture
def make_pool(service: FakeAvatarService) -> Iterator[MakePool]:
    """Pools against ``service``; closed after the test."""
    made: List[SessionPool] = []

    def make(**overrides: Any) -> SessionPool:
        pool = SessionPool(**{**service.credentials(), **overrides})
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


def unused_token(service: FakeAvatarService) -> str:
    """A token the service issued and nobody used."""
    probe = new_avatar_session(**service.session_kwargs())
    probe.init()
    probe.close()
    return service.issued_tokens[-1]


def stale_token(service: FakeAvatarService) -> str:
    """A token the service issued, never used, and now counts as expired."""
    token = unused_token(service)
    service.expire_token(token)
    return token


# ------------------------------------------------------------------------------------- sharing


def test_sixteen_borrowers_share_four_sessions(service: FakeAvatarService, make_pool: MakePool) -> None:
    pool = make_pool(max_size=4)
    barrier = threading.Barrier(16)
    results: List[Tuple[str, List[Frame]]] = []
    errors: List[BaseException] = []

    def borrower() -> None:
        try:
            barrier.wait(10)
            with pool.session(timeout=20) as session:
                frames = session.collect(pcm(0.2))
                results.append((session.connection_id or "", frames))
                # The first four keep their sessions until the other twelve are waiting for one.
                wait_until(lambda: pool.stats().waits == 12, "12 waiting borrowers", 10)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=borrower) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 16
    for connection_id, frames in results:
        assert len(frames) == 5 and frames[-1].last
        req_id = frames[0].req_id
        assert [f.data for f in frames] == connection(service, connection_id).sent_frames(req_id)  # byte-exact
    assert counts(pool) == PoolStats(
        idle=4, in_use=0, creating=0, created=4, discarded=0, waits=12, timeouts=0, failed=0
    )
    assert len(service.connections) == 4 and len(service.token_requests) == 4  # never more than 4 at once
    assert len({cid for cid, _ in results}) == 4


def test_sixteen_borrowers_with_a_dropped_session_and_an_expiring_token(recorder: Recorder) -> None:
    """Concurrent load while a connection is cut, sessions come due for new tokens (0.3 s after each start)
    and one start is handed a token the service counts as expired; a relay retries a failed utterance."""
    with FakeAvatarService(frames_per_request=8, frame_interval=0.005) as service:
        service.script_token(TokenReply(200, {"sessionToken": stale_token(service)}))  # the first start fails
        pool = SessionPool(
            **service.credentials(), max_size=4, token_lifetime=60, refresh_margin=59.7, on_error=recorder.on_error
        )
        order = itertools.count()
        lock = threading.Lock()
        done: List[Tuple[int, str, List[Frame]]] = []  # (borrow order, connection id, frames)
        failures: List[AvatarSDKErrorCode] = []
        errors: List[BaseException] = []
        sessions: Dict[str, AvatarSession] = {}
        barrier = threading.Barrier(16)

        def utterance() -> None:
            for _attempt in range(3):
                try:
                    with pool.session(timeout=20) as session:
                        with lock:
                            seq = next(order)
                            sessions[session.connection_id or ""] = session
                        frames = session.collect(pcm(0.1), frame_timeout=5)
                        with lock:
                            done.append((seq, session.connection_id or "", frames))
                        return
                except AvatarSDKError as err:
                    with lock:
                        failures.append(err.code)
            raise AssertionError("three attempts failed")

        def borrower() -> None:
            try:
                barrier.wait(10)
                for _ in range(3):
                    utterance()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=borrower) for _ in range(16)]
        for t in threads:
            t.start()
        wait_until(lambda: len(done) >= 12, "12 utterances", 20)
        with lock:
            cid = next(c for c in reversed(list(sessions)) if not sessions[c].closed)
        connection(service, cid).drop()
        wait_until(lambda: sessions[cid].closed, "the pool's session to see the drop", 5)
        with lock:
            noticed = next(order)  # borrows numbered from here on came after the pool knew
        for t in threads:
            t.join(30)
        pool.close()

        assert errors == [] and len(done) == 48
        assert failures.count(AvatarSDKErrorCode.sessionTokenExpired) == 1
        assert set(failures) <= {AvatarSDKErrorCode.sessionTokenExpired, AvatarSDKErrorCode.connectionClosed}
        assert not [seq for seq, c, _ in done if c == cid and seq > noticed]  # never lent once known broken
        for _, connection_id, frames in done:
            assert [f.data for f in frames] == connection(service, connection_id).sent_frames(frames[0].req_id)
        stats = pool.stats()
        assert (stats.failed, stats.in_use, stats.creating) == (1, 0, 0)
        assert stats.created == len(service.connections) > 4 and stats.discarded >= stats.created - 4
        used = [c.request_headers["X-Session-Key"] for c in service.connections]
        assert len(set(used)) == len(used)  # a new token for each session, each used once
        assert set(used) <= set(service.issued_tokens)


def test_a_dropped_or_closed_idle_session_is_never_lent(
    service: FakeAvatarService, make_pool: MakePool, recorder: Recorder
) -> None:
    pool = make_pool(max_size=3, on_error=recorder.on_error)
    with contextlib.ExitStack() as stack:
        first = [stack.enter_context(pool.session()).connection_id for _ in range(3)]
    assert pool.stats().idle == 3
    connection(service, first[1]).drop()  # cut without a close frame
    wait_until(lambda: pool.stats().discarded == 1 and pool.stats().idle == 2, "the drop to be noticed")
    connection(service, first[2]).close(4002, "session time limit reached")
    wait_until(lambda: pool.stats().discarded == 2 and pool.stats().idle == 1, what="the close to be noticed")
    recorder.wait_for(lambda: len(recorder.errors) == 2, what="both errors (the pool discards, then reports)")
    assert sorted(e.code.value for e in recorder.errors) == ["connectionClosed", "sessionDurationExceeded"]
    with contextlib.ExitStack() as stack:
        lent = [stack.enter_context(pool.session()) for _ in range(3)]
        assert lent[0].connection_id == first[0]  # the one left is lent first; two replacements made
        assert not {s.connection_id for s in lent} & {first[1], first[2]}
        for session in lent:
            assert session.collect(pcm(0.08))[-1].last
    stats = pool.stats()
    assert (stats.created, stats.discarded, stats.idle, stats.in_use) == (5, 2, 3, 0)


def test_an_error_on_a_lent_session_discards_it_when_returned(recorder: Recorder) -> None:
    def fail_midway(conn: FakeConnection, request: FakeRequest) -> None:
        conn.send_frames(request.req_id, 2, end=False)
        conn.send_error(3, "unsupported sample rate", req_id=request.req_id)

    with (
        FakeAvatarService(on_request=fail_midway) as svc,
        SessionPool(**svc.credentials(), on_error=recorder.on_error) as pool,
    ):
        got: List[Frame] = []
        with pytest.raises(AvatarSDKError) as info:
            for frame in pool.stream(pcm(0.1)):
                got.append(frame)
        assert len(got) == 2 and info.value.code is AvatarSDKErrorCode.unsupportedSampleRate
        assert counts(pool) == PoolStats(
            idle=0, in_use=0, creating=0, created=1, discarded=1, waits=0, timeouts=0, failed=0
        )
        assert recorder.wait_error().code is AvatarSDKErrorCode.unsupportedSampleRate  # the pool's on_error
        svc.wait_for_connection(0).wait_closed()  # the pool closed it
        with pytest.raises(AvatarSDKError), pool.session() as session:  # the with form: discarded too
            session.collect(pcm(0.1))
        assert pool.stats().discarded == 2 and len(svc.connections) == 2


def test_a_request_left_open_is_interrupted_on_return(service: FakeAvatarService, make_pool: MakePool) -> None:
    pool = make_pool()
    with pool.session() as session:
        req_id = session.send_audio(pcm(0.04), end=False)  # no end=True: the request is still open
        cid = session.connection_id
    conn = connection(service, cid)
    conn.wait_for(lambda: interrupts(conn) == [req_id])
    with pool.session() as again:
        assert again.connection_id == cid
        assert again.collect(pcm(0.08))[-1].last
    assert interrupts(conn) == [req_id] and pool.stats().discarded == 0


# ------------------------------------------------------------------------------------- refresh


def test_sessions_due_for_a_new_token_are_replaced_when_returned(
    service: FakeAvatarService, make_pool: MakePool
) -> None:
    pool = make_pool(token_lifetime=120, refresh_margin=119.999)  # due a millisecond after each start
    before = time.time()
    for _ in range(3):
        assert len(pool.collect(pcm(0.12))) == 3
    assert counts(pool) == PoolStats(
        idle=0, in_use=0, creating=0, created=3, discarded=3, waits=0, timeouts=0, failed=0
    )
    assert len(service.connections) == 3
    for conn in service.connections:
        conn.wait_closed()
        assert conn.client_close_code == 1000
    used = [c.request_headers["X-Session-Key"] for c in service.connections]
    assert used == service.issued_tokens and len(set(used)) == 3  # one new token per session
    for request in service.token_requests:
        assert before + 118 <= request.json["expireAt"] <= time.time() + 121  # token_lifetime


def test_an_expired_token_fails_the_start_and_frees_the_slot(service: FakeAvatarService, make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)
    service.script_token(TokenReply(200, {"sessionToken": stale_token(service)}))
    with pytest.raises(AvatarSDKError) as info:
        pool.collect(pcm(0.08))
    assert info.value.code is AvatarSDKErrorCode.sessionTokenExpired and info.value.http_status == 401
    assert counts(pool) == PoolStats(
        idle=0, in_use=0, creating=0, created=0, discarded=0, waits=0, timeouts=0, failed=1
    )
    issued = len(service.issued_tokens)
    assert pool.collect(pcm(0.08))[-1].last  # the slot is free again: a new session with a new token
    assert len(service.issued_tokens) == issued + 1 and pool.stats().created == 1


def test_idle_sessions_are_refreshed_and_min_idle_kept_in_the_background(
    service: FakeAvatarService, make_pool: MakePool
) -> None:
    pool = make_pool(min_idle=1, token_lifetime=60, refresh_margin=59.6)  # due 0.4 s after each start
    first = service.wait_for_connection(0)
    second = service.wait_for_connection(1, timeout=10)  # its replacement, with no borrow at all
    first.wait_closed()
    assert first.client_close_code == 1000
    assert second.request_headers["X-Session-Key"] != first.request_headers["X-Session-Key"]
    wait_until(lambda: pool.stats().idle == 1, what="the replacement to be idle")
    assert pool.stats().discarded >= 1 and pool.stats().in_use == 0


# ----------------------------------------------------------------------------------- borrowing


def test_a_borrow_times_out_when_every_session_is_lent(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)
    with pool.session() as held:
        began = time.monotonic()
        with pytest.raises(PoolTimeoutError) as info, pool.session(timeout=0.2):
            pass
        elapsed = time.monotonic() - began
        assert 0.2 <= elapsed < 3
        err = info.value
        assert isinstance(err, TimeoutError) and isinstance(err, AvatarSDKError)
        assert (err.code, err.retryable) == (AvatarSDKErrorCode.timeout, True)
        assert "max_size" in str(err) and "1 lent" in str(err)
        assert (pool.stats().timeouts, pool.stats().waits) == (1, 1)

        handed: List[Optional[str]] = []

        def waiter() -> None:
            with pool.session(timeout=10) as session:
                handed.append(session.connection_id)

        thread = threading.Thread(target=waiter)
        thread.start()
        wait_until(lambda: pool.stats().waits == 2, what="the second borrower to wait")
        cid = held.connection_id
    thread.join(10)
    assert handed == [cid]  # returned, then lent to the waiting borrower
    assert pool.stats().timeouts == 1


def test_waiting_borrowers_are_served_in_arrival_order(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)
    order: List[str] = []

    def borrower(name: str) -> None:
        with pool.session(timeout=10):
            order.append(name)

    threads = []
    with pool.session():
        for count, name in enumerate("ABCDE", 1):
            threads.append(threading.Thread(target=borrower, args=(name,)))
            threads[-1].start()
            wait_until(lambda count=count: pool.stats().waits == count, what=f"borrower {name} to wait")
    for thread in threads:
        thread.join(10)
    assert order == list("ABCDE")  # each returned session went to the borrower that had waited longest


def test_stream_returns_the_session_however_the_iterator_ends() -> None:
    with FakeAvatarService(frames_per_request=50, frame_interval=0.01) as svc, SessionPool(**svc.credentials()) as pool:
        frames = pool.stream(pcm(0.2))
        assert pool.stats().in_use == 1  # borrowed and sent before the first frame is asked for
        first = next(frames)
        next(frames)
        frames.close()  # type: ignore[attr-defined]  # what a WSGI server does when the client goes away
        assert (pool.stats().in_use, pool.stats().idle) == (0, 1)
        conn = svc.wait_for_connection(0)
        conn.wait_for(lambda: interrupts(conn) == [first.req_id])
        assert len(list(pool.stream(pcm(0.2)))) == 50  # exhausted: the same session, returned again
        stream = pool.stream(pcm(0.2))
        del stream  # dropped without iterating: garbage collection returns it
        assert (pool.stats().in_use, pool.stats().created, pool.stats().discarded) == (0, 1, 0)
        with pytest.raises(ValueError, match="audio"):
            pool.stream(b"\x00")  # checked before borrowing
        assert pool.stats().in_use == 0


@needs_pyav
def test_session_options_reach_every_session(service: FakeAvatarService, make_pool: MakePool) -> None:
    """Configuration passes through, e.g. PCM encoded to Ogg Opus in the SDK (the ``audio`` extra)."""
    encoded: List[Tuple[str, bytes]] = []
    with pytest.warns(InsecureTransportWarning, match="URL query"):  # once, for the pool
        pool = make_pool(
            audio_format="ogg_opus",
            ogg_opus_encoder=OggOpusEncoderConfig(),
            on_encoded_audio=lambda req_id, stream: encoded.append((req_id, stream)),
            use_query_auth=True,
        )
    frames = pool.collect(pcm(0.2))  # PCM in: checked as PCM, encoded by each session
    conn = service.wait_for_connection(0)
    assert conn.configure is not None and conn.configure.audio_format == pb.AUDIO_FORMAT_OGG_OPUS
    assert "sessionKey" in conn.query  # use_query_auth
    request = conn.wait_for_request(frames[0].req_id)
    assert bytes(request.audio[:4]) == b"OggS" and encoded == [(request.req_id, bytes(request.audio))]
    with pytest.raises(ValueError, match="audio"):
        pool.collect(pcm(0.2) + b"\x00")  # odd length: not PCM, refused before borrowing


def test_every_session_option_is_a_pool_option() -> None:
    """A keyword added to new_avatar_session must be added to SessionPool too (the pool sets the two it owns)."""
    session_options = set(inspect.signature(new_avatar_session).parameters) - {"expire_at", "on_close"}
    assert session_options <= set(inspect.signature(SessionPool).parameters)


# --------------------------------------------------------------------------------------- warm-up


def test_min_idle_warms_sessions_without_a_borrow(service: FakeAvatarService, make_pool: MakePool) -> None:
    pool = make_pool(min_idle=2, max_size=3)
    wait_until(lambda: pool.stats().idle == 2, what="two warm sessions")
    assert len(service.connections) == 2 and pool_threads() != []
    with pool.session() as session:
        wait_until(lambda: pool.stats().idle == 2, what="another warm session while one is lent")
        assert session.collect(pcm(0.08))[-1].last
    assert counts(pool) == PoolStats(
        idle=3, in_use=0, creating=0, created=3, discarded=0, waits=0, timeouts=0, failed=0
    )
    pool.close()
    assert pool_threads() == []  # joined by close()
    for conn in service.connections:
        conn.wait_closed()
        assert conn.client_close_code == 1000


# ----------------------------------------------------------------------------------------- close


def test_close_closes_idle_sessions_now_and_lent_ones_when_returned(
    service: FakeAvatarService, make_pool: MakePool
) -> None:
    pool = make_pool(max_size=2)
    with pool.session() as lent:
        with pool.session() as other:
            idle_cid = other.connection_id
        pool.close(timeout=0.05)  # the lent session is not back within the wait
        connection(service, idle_cid).wait_closed()
        assert connection(service, idle_cid).client_close_code == 1000
        assert lent.collect(pcm(0.08))[-1].last  # a lent session keeps working until it is returned
        with pytest.raises(ValueError, match="closed"), pool.session():
            pass
        with pytest.raises(ValueError, match="closed"):
            pool.collect(pcm(0.08))
    assert lent.closed and pool.stats().in_use == 0
    connection(service, lent.connection_id).wait_closed()
    assert [c.client_close_code for c in service.connections] == [1000, 1000]
    pool.close()  # idempotent
    assert pool.closed and pool.stats().discarded == 0


def test_close_waits_for_a_session_being_returned(service: FakeAvatarService, make_pool: MakePool) -> None:
    pool = make_pool()
    entered = threading.Event()
    outcome: List[object] = []

    def borrower() -> None:
        with pool.session() as session:
            entered.set()
            wait_until(lambda: pool.closed, what="close() to begin")
            outcome.append(session.collect(pcm(0.08))[-1].last)

    thread = threading.Thread(target=borrower)
    thread.start()
    assert entered.wait(5)
    pool.close(timeout=10)  # returns once the borrower has returned (and the pool closed) the session
    assert outcome == [True] and pool.stats().in_use == 0
    assert service.connections[0].closed.wait(5) and service.connections[0].client_close_code == 1000
    thread.join(5)


def test_close_lets_starts_in_flight_finish_and_closes_them_cleanly(service: FakeAvatarService) -> None:
    # The warm-up start and a borrower's start both wait 1.5 s for their tokens: a window wide enough for a
    # loaded machine to start the borrower while the warm-up start is still in flight.
    # The tokens are issued first: a probe's token call made after a reply is scripted would take that reply.
    for token in [unused_token(service), unused_token(service)]:
        service.script_token(TokenReply(200, {"sessionToken": token}, delay=1.5))
    pool = SessionPool(**service.credentials(), max_size=2, min_idle=1)
    outcome: List[BaseException] = []

    def borrower() -> None:
        try:
            with pool.session():
                pass
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=borrower)
    thread.start()
    try:
        wait_until(lambda: pool.stats().creating == 2 and len(service.token_requests) == 4, what="two starts")
        began = time.monotonic()
        pool.close()  # returns when both starters have closed their new sessions, not after its 10 s timeout
        assert time.monotonic() - began < 5
    finally:
        pool.close()  # a failure above must not leave the pool's threads to the next tests
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError) and "closed" in str(outcome[0])
    assert len(service.connections) == 2 and pool_threads() == []
    for conn in service.connections:
        conn.wait_closed()
        assert conn.client_close_code == 1000
    assert counts(pool) == PoolStats(
        idle=0, in_use=0, creating=0, created=0, discarded=0, waits=0, timeouts=0, failed=0
    )


def test_a_pool_left_open_is_closed_at_interpreter_exit(service: FakeAvatarService) -> None:
    script = (
        "import json, os, sys\n"
        "from avatarsdk import SessionPool\n"
        "pool = SessionPool(**json.loads(os.environ['POOL_CREDENTIALS']), min_idle=1)\n"
        "assert pool.collect(b'\\x00\\x00' * 3200)[-1].last\n"
        "print('used')\n"
    )
    env = dict(os.environ, POOL_CREDENTIALS=json.dumps(service.credentials()))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0 and result.stdout == "used\n", result.stderr
    assert service.connections
    for conn in service.connections:
        conn.wait_closed()
        assert conn.client_close_code == 1000  # closed properly by the exit hook, not cut off


def test_the_exit_hook_does_not_keep_a_pool_alive(service: FakeAvatarService) -> None:
    unused = SessionPool(**service.credentials())
    used = SessionPool(**service.credentials())
    assert used.collect(pcm(0.08))[-1].last
    used.close()
    refs = [weakref.ref(unused), weakref.ref(used)]
    del unused, used
    gc.collect()
    assert [r() for r in refs] == [None, None]


# ------------------------------------------------------------------------------------------ fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
def test_a_forked_child_gets_a_fresh_pool_and_the_parents_sessions_keep_working(
    service: FakeAvatarService, make_pool: MakePool
) -> None:
    pool = make_pool(min_idle=1)
    wait_until(lambda: pool.stats().idle == 1, what="a warm session")
    parent_conn = service.wait_for_connection(0)

    def child() -> Dict[str, Any]:
        frames = pool.collect(pcm(0.2))
        with pool.session() as session:
            more = session.collect(pcm(0.12))
            report: Dict[str, Any] = {"cid": session.connection_id, "req_id": more[0].req_id}
        report.update(
            frames=len(frames),
            digest=hashlib.sha256(b"".join(f.data for f in more)).hexdigest(),
            created=pool.stats().created,
        )
        pool.close()
        return report

    report = in_forked_child(child)
    assert report["frames"] == 5 and report["created"] >= 1
    child_conn = connection(service, report["cid"])  # a connection of the child's own
    assert child_conn is not parent_conn
    assert hashlib.sha256(b"".join(child_conn.sent_frames(report["req_id"]))).hexdigest() == report["digest"]
    child_conn.wait_closed()
    assert child_conn.client_close_code == 1000  # the child closed its own pool
    # The parent's session was neither used nor closed by the child, and works on.
    with pool.session() as session:
        assert session.connection_id == parent_conn.connection_id
        assert [f.data for f in session.collect(pcm(0.08))] == parent_conn.sent_frames()[-2:]
    assert parent_conn.client_close_code is None and pool.stats().discarded == 0
    assert [m.type for m in parent_conn.messages].count(pb.MESSAGE_CLIENT_AUDIO_INPUT) == 1


# ------------------------------------------------------------------------------------ validation


@pytest.fixture(scope="module")
def quiet_service() -> Iterator[FakeAvatarService]:
    """One stand-in for the tests that must cause no I/O. A session connects once first: closing a stand-in
    right after start() can race websockets' accept loop (an EBADF in its ``serve_forever`` thread)."""
    with FakeAvatarService() as svc:
        with new_avatar_session(**svc.session_kwargs()):
            pass
        yield svc


@pytest.mark.parametrize(
    ("overrides", "error", "field"),
    [
        ({"max_size": 0}, ValueError, "max_size"),
        ({"max_size": 2.5}, TypeError, "max_size"),
        ({"min_idle": -1}, ValueError, "min_idle"),
        ({"max_size": 2, "min_idle": 3}, ValueError, "min_idle"),
        ({"token_lifetime": 0.5}, ValueError, "token_lifetime"),
        ({"token_lifetime": 86401}, ValueError, "token_lifetime"),
        ({"token_lifetime": float("nan")}, ValueError, "token_lifetime"),
        ({"token_lifetime": "3600"}, TypeError, "token_lifetime"),
        ({"refresh_margin": -1}, ValueError, "refresh_margin"),
        ({"token_lifetime": 600, "refresh_margin": 600}, ValueError, "refresh_margin"),
        ({"borrow_timeout": 0}, ValueError, "borrow_timeout"),
        ({"sample_rate": 12345}, ValueError, "sample_rate"),
        ({"api_key": ""}, ValueError, "api_key"),
        ({"console_endpoint_url": "ftp://x"}, ValueError, "console_endpoint_url"),
        ({"on_error": "log"}, TypeError, "on_error"),
        ({"connect_timeout": -1}, ValueError, "connect_timeout"),
        ({"max_queued_frames": 0}, ValueError, "max_queued_frames"),
    ],
)
def test_invalid_arguments_fail_before_any_io(
    quiet_service: FakeAvatarService, overrides: Dict[str, Any], error: type, field: str
) -> None:
    with pytest.raises(error, match=field):
        SessionPool(**{**quiet_service.credentials(), "min_idle": 1, **overrides})
    assert len(quiet_service.token_requests) == 1 and pool_threads() == []  # only the fixture's own


def test_call_arguments_are_checked_and_secrets_stay_out_of_the_repr(quiet_service: FakeAvatarService) -> None:
    with SessionPool(**quiet_service.credentials()) as pool:
        with pytest.raises(ValueError, match="timeout"):
            pool.session(timeout=-1)
        with pytest.raises(ValueError, match="chunk_ms"):
            pool.stream(pcm(0.1), chunk_ms=0)
        with pytest.raises(ValueError, match="frame_timeout"):
            pool.collect(pcm(0.1), frame_timeout=0)
        assert len(quiet_service.token_requests) == 1  # only the fixture's own
        assert quiet_service.api_key not in repr(pool) and "max_size=8" in repr(pool)
    assert pool.closed
