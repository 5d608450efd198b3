"""What a SessionPool costs, against the stand-in over real sockets: idle sessions closed after max_idle_time,
sessions retired before max_session_age, the connected session-seconds, and the service's concurrency limit
as back-pressure (borrowers wait and try again instead of failing)."""

from __future__ import annotations

import contextlib
import pickle
import threading
import time
from typing import Any, Callable, Iterator, List

import pytest
from conftest import Recorder, pcm, wait_until

from avatarsdk import AvatarSDKError, AvatarSDKErrorCode, PoolTimeoutError, SessionPool
from avatarsdk.pool import DEFAULT_MAX_IDLE_TIME, DEFAULT_MAX_SESSION_AGE
from avatarsdk.testing import FakeAvatarService, TokenReply, jsonapi_error

MakePool = Callable[..., SessionPool]


@pytest.fixture
def make_pool(service: FakeAvatarService) -> Iterator[MakePool]:
    """Pools against ``service`` (or the ``service=`` given); closed after the test."""
    made: List[SessionPool] = []

    def make(*, on: FakeAvatarService = service, **overrides: Any) -> SessionPool:
        pool = SessionPool(**{**on.credentials(), **overrides})
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


def closed_cleanly(service: FakeAvatarService, index: int) -> bool:
    conn = service.connection(index)
    conn.wait_closed()
    return conn.client_close_code == 1000


# ------------------------------------------------------------------------------------- defaults


def test_the_defaults_bound_idle_time_and_age_below_the_shortest_plan(make_pool: MakePool) -> None:
    pool = make_pool()
    assert (pool.max_idle_time, pool.max_session_age) == (DEFAULT_MAX_IDLE_TIME, DEFAULT_MAX_SESSION_AGE)
    assert DEFAULT_MAX_IDLE_TIME == 30.0 and DEFAULT_MAX_SESSION_AGE == 540.0  # Free plan: 600 s
    unbounded = make_pool(max_idle_time=None, max_session_age=None)
    assert (unbounded.max_idle_time, unbounded.max_session_age) == (None, None)


@pytest.mark.parametrize(
    ("overrides", "error", "field"),
    [
        ({"max_idle_time": -1}, ValueError, "max_idle_time"),
        ({"max_idle_time": "30"}, TypeError, "max_idle_time"),
        ({"max_session_age": 0}, ValueError, "max_session_age"),
        ({"max_session_age": float("inf")}, ValueError, "max_session_age"),
    ],
)
def test_invalid_retirement_times_fail_before_any_io(
    service: FakeAvatarService, overrides: Any, error: type, field: str
) -> None:
    with pytest.raises(error, match=field):
        SessionPool(**service.credentials(), min_idle=1, **overrides)
    assert service.token_requests == []


# ----------------------------------------------------------------------------------- idle, age


def test_an_idle_session_is_closed_max_idle_time_after_it_was_returned(
    service: FakeAvatarService, make_pool: MakePool
) -> None:
    pool = make_pool(max_idle_time=0.2)
    before_return = time.monotonic()  # the session goes back inside collect(), after this
    assert pool.collect(pcm(0.08))[-1].last
    wait_until(lambda: pool.stats().closed_idle == 1, "the idle session to be closed")
    assert time.monotonic() - before_return >= 0.2
    assert closed_cleanly(service, 0)
    stats = pool.stats()
    assert (stats.idle, stats.created, stats.discarded, stats.closed_age) == (0, 1, 0, 0)
    assert pool.collect(pcm(0.08))[-1].last and len(service.connections) == 2  # a new one on demand


def test_min_idle_sessions_are_kept_and_the_surplus_closed(service: FakeAvatarService, make_pool: MakePool) -> None:
    pool = make_pool(max_size=3, min_idle=1, max_idle_time=0.2)
    with contextlib.ExitStack() as stack:
        lent = [stack.enter_context(pool.session()) for _ in range(3)]  # the warm one and two more
        kept = lent[0].connection_id  # returned last (the stack unwinds): the most recently returned is kept
    wait_until(lambda: pool.stats().closed_idle == 2, "the surplus to be closed")
    assert pool.stats().idle == 1
    with pool.session() as session:
        assert session.connection_id == kept


def test_an_idle_session_is_retired_before_max_session_age(service: FakeAvatarService, make_pool: MakePool) -> None:
    pool = make_pool(max_session_age=0.8)  # not lent from 0.6 s of age (the margin: a quarter of it)
    began = time.monotonic()
    assert pool.collect(pcm(0.08))[-1].last
    wait_until(lambda: pool.stats().closed_age == 1, "the session to be retired")
    assert 0.6 <= time.monotonic() - began < 0.8 + 5
    assert closed_cleanly(service, 0)
    assert (pool.stats().idle, pool.stats().discarded, pool.stats().closed_idle) == (0, 0, 0)


def test_a_lent_session_past_its_age_is_retired_when_returned(service: FakeAvatarService, make_pool: MakePool) -> None:
    pool = make_pool(max_session_age=0.8)
    with pool.session() as session:
        began = time.monotonic()
        wait_until(lambda: time.monotonic() - began >= 0.6, "the session's age margin")
        assert session.collect(pcm(0.08))[-1].last  # never interrupted while lent
        assert pool.stats().closed_age == 0
    assert pool.stats().closed_age == 1 and closed_cleanly(service, 0)
    with pool.session() as again:
        assert again.connection_id != session.connection_id


def test_connected_seconds_add_up_what_the_pool_was_billed_for(make_pool: MakePool) -> None:
    made = time.monotonic()
    pool = make_pool(max_size=2)
    with pool.session(), pool.session():
        pass
    assert pool.stats().connected_seconds > 0
    pool.close()
    elapsed = time.monotonic() - made
    connected = pool.stats().connected_seconds
    assert 0 < connected <= 2 * elapsed  # two sessions, never longer than the pool lived
    assert pool.stats().connected_seconds == connected  # all closed: it no longer grows


# -------------------------------------------------------------------------------- back-pressure


@pytest.mark.parametrize("refusal", ["close", "upgrade"])
def test_a_pool_larger_than_the_plan_serves_every_borrower_in_turn(refusal: str, recorder: Recorder) -> None:
    with FakeAvatarService(concurrency_limit=2, concurrency_refusal=refusal) as service:
        pool = SessionPool(**service.credentials(), max_size=4, on_error=recorder.on_error)
        barrier = threading.Barrier(8)
        served: List[str] = []
        errors: List[BaseException] = []

        def borrower() -> None:
            try:
                barrier.wait(10)
                for _ in range(2):
                    with pool.session(timeout=20) as session:
                        frames = session.collect(pcm(0.08))
                        assert frames[-1].last
                        served.append(session.connection_id or "")
                        # Hold it until another borrower has been refused: the limit is reached.
                        wait_until(lambda: pool.stats().refused >= 1, "a refusal", 10)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=borrower) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        pool.close()
        assert errors == [] and len(served) == 16
        stats = pool.stats()
        assert (stats.failed, stats.timeouts, stats.in_use) == (0, 0, 0)
        assert stats.refused >= 1 and stats.refused == service.concurrency_refusals
        assert service.peak_sessions == 2
        assert recorder.errors == []  # refusals are not errors


def test_a_token_call_refused_for_concurrency_is_waited_out(service: FakeAvatarService, make_pool: MakePool) -> None:
    body = jsonapi_error(429, "concurrencyLimit", "Too Many Requests", "concurrent session limit reached")
    service.script_token(TokenReply(429, body))
    pool = make_pool(http_retries=0)
    began = time.monotonic()
    assert pool.collect(pcm(0.08))[-1].last
    assert time.monotonic() - began >= 0.25  # the pause after a refusal: 0.5 s less up to half
    stats = pool.stats()
    assert (stats.refused, stats.failed, stats.created) == (1, 0, 1)
    assert len(service.token_requests) == 2


def test_a_borrow_that_times_out_on_the_limit_names_the_refusal(make_pool: MakePool) -> None:
    with FakeAvatarService(concurrency_limit=1) as limited:
        pool = make_pool(on=limited, max_size=2)
        with pool.session():
            began = time.monotonic()
            with pytest.raises(PoolTimeoutError) as info, pool.session(timeout=1.5):
                pass
            assert 1.5 <= time.monotonic() - began < 6
        err = info.value
        assert err.code is AvatarSDKErrorCode.timeout and err.retryable
        assert isinstance(err.last_error, AvatarSDKError) and err.__cause__ is err.last_error
        assert err.last_error.code is AvatarSDKErrorCode.concurrencyLimit and err.last_error.server_code == "4003"
        assert "concurrency limit" in str(err) and "refusals so far" in str(err)
        copy = pickle.loads(pickle.dumps(err))  # e.g. to a logging handler in another process
        assert isinstance(copy, PoolTimeoutError) and copy.last_error is not None
        assert copy.last_error.code is AvatarSDKErrorCode.concurrencyLimit
        stats = pool.stats()
        assert stats.refused >= 2 and stats.refused == limited.concurrency_refusals  # tried again meanwhile
        assert (stats.timeouts, stats.failed) == (1, 0)
        pool.close()


def test_a_borrow_that_times_out_on_max_size_has_no_refusal(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)
    with pool.session(), pytest.raises(PoolTimeoutError) as info, pool.session(timeout=0.1):
        pass
    assert info.value.last_error is None and info.value.__cause__ is None and "max_size" in str(info.value)


def test_warm_up_refusals_are_logged_not_reported(make_pool: MakePool, recorder: Recorder) -> None:
    with FakeAvatarService(concurrency_limit=1) as limited:
        pool = make_pool(on=limited, max_size=3, min_idle=2, on_error=recorder.on_error)
        wait_until(lambda: pool.stats().refused >= 2, "two refused warm-ups")  # the second after a 1 s backoff
        assert recorder.errors == [] and pool.stats().idle == 1 and pool.stats().failed == 0
        pool.close()
