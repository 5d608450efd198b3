"""Concurrency limiters in one process: LocalLimiter with threads, and when a session takes and gives back its slot
(init, start, close, drops, reconnects, failures, pools), against the stand-in."""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any, Callable, List, Optional

import pytest
from conftest import FAST_RECONNECT, Recorder, in_forked_child, pcm, started, wait_until

from avatarsdk import (
    AvatarSDKError,
    AvatarSDKErrorCode,
    AvatarSession,
    Limiter,
    LocalLimiter,
    PoolTimeoutError,
    SessionPool,
    SessionTokenError,
    new_avatar_session,
)
from avatarsdk.testing import FakeAvatarService, TokenReply, jsonapi_error


class CountingLimiter:
    """A limiter of one's own (the protocol only): a LocalLimiter that counts the calls it gets."""

    def __init__(self, limit: int) -> None:
        self.inner = LocalLimiter(limit)
        self.acquired = 0
        self.released: List[object] = []

    def acquire(self, timeout: Optional[float]) -> Optional[object]:
        slot = self.inner.acquire(timeout)
        if slot is not None:
            self.acquired += 1
        return slot

    def release(self, slot: Any) -> None:
        self.released.append(slot)
        self.inner.release(slot)


def in_thread(target: Callable[[], Any]) -> Outcome:
    outcome = Outcome()

    def run() -> None:
        try:
            outcome.result = target()
        except BaseException as exc:
            outcome.error = exc
        finally:
            outcome.done.set()

    threading.Thread(target=run, name="test-limiter-caller", daemon=True).start()
    return outcome


class Outcome:
    def __init__(self) -> None:
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.done = threading.Event()

    def wait(self, timeout: float = 10.0) -> Any:
        assert self.done.wait(timeout), "the call did not return"
        return self.result


# -------------------------------------------------------------------------------------------- LocalLimiter


def test_local_limiter_is_a_limiter_and_checks_its_limit() -> None:
    limiter = LocalLimiter(3)
    assert isinstance(limiter, Limiter)
    assert isinstance(CountingLimiter(1), Limiter)
    assert (limiter.limit, limiter.in_use(), limiter.waiting()) == (3, 0, 0)
    assert repr(limiter) == "LocalLimiter(limit=3)"
    with pytest.raises(ValueError, match=r"^limit: expected at least 1 concurrent session, got 0$"):
        LocalLimiter(0)
    with pytest.raises(TypeError, match=r"^limit: expected an int, got str$"):
        LocalLimiter("2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^limit: expected an int, got bool$"):
        LocalLimiter(True)


def test_local_limiter_holds_at_most_its_limit_among_threads() -> None:
    limiter = LocalLimiter(3)
    lock = threading.Lock()
    holding: List[int] = []
    most = [0]
    go = threading.Event()

    def work() -> None:
        slot = limiter.acquire(10)
        assert slot is not None
        with lock:
            holding.append(1)
            most[0] = max(most[0], len(holding))
        go.wait(10)
        with lock:
            holding.pop()
        limiter.release(slot)

    threads = [threading.Thread(target=work) for _ in range(10)]
    for thread in threads:
        thread.start()
    wait_until(lambda: limiter.in_use() == 3 and limiter.waiting() == 7, "3 holders and 7 waiters")
    with lock:
        assert len(holding) == 3
    go.set()
    for thread in threads:
        thread.join(10)
    assert most[0] == 3
    assert (limiter.in_use(), limiter.waiting()) == (0, 0)


def test_local_limiter_serves_waiters_first_come_first_served() -> None:
    limiter = LocalLimiter(1)
    first = limiter.acquire(0)
    order: List[int] = []

    def wait(i: int) -> None:
        slot = limiter.acquire(10)
        order.append(i)
        limiter.release(slot)

    threads = []
    for i in range(5):
        threads.append(threading.Thread(target=wait, args=(i,)))
        threads[-1].start()
        wait_until(lambda i=i: limiter.waiting() == i + 1, f"waiter {i} in the queue")  # type: ignore[misc]
    limiter.release(first)
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_local_limiter_times_out_and_leaves_the_queue() -> None:
    limiter = LocalLimiter(1)
    slot = limiter.acquire(None)
    assert slot is not None
    assert limiter.acquire(0) is None
    assert limiter.acquire(0.05) is None
    assert limiter.waiting() == 0
    limiter.release(slot)
    assert limiter.acquire(0) is not None


def test_a_waiter_that_gives_up_lets_the_next_one_through() -> None:
    # both slots held; the waiter at the head gives up, and the one behind it gets the next free slot
    limiter = LocalLimiter(2)
    held = [limiter.acquire(0), limiter.acquire(0)]
    early = in_thread(lambda: limiter.acquire(0.2))
    wait_until(lambda: limiter.waiting() == 1, "the first waiter")
    late = in_thread(lambda: limiter.acquire(10))
    wait_until(lambda: limiter.waiting() == 2, "the second waiter")
    assert early.wait() is None  # timed out at the head of the queue
    limiter.release(held[0])
    assert late.wait() is not None
    limiter.release(held[1])


def test_local_limiter_ignores_a_slot_given_back_twice_or_not_its_own() -> None:
    limiter = LocalLimiter(1)
    slot = limiter.acquire(0)
    other = LocalLimiter(1).acquire(0)
    limiter.release(other)
    assert limiter.in_use() == 1
    limiter.release(slot)
    limiter.release(slot)
    assert limiter.in_use() == 0
    assert limiter.acquire(0) is not None
    assert limiter.in_use() == 1


def test_a_forked_child_starts_with_an_empty_local_limiter() -> None:
    limiter = LocalLimiter(1)
    slot = limiter.acquire(0)

    def child() -> Any:
        inherited = limiter.in_use()
        limiter.release(slot)  # the parent's: nothing to give back here
        mine = limiter.acquire(0)
        return {"inherited": inherited, "took": mine is not None, "in_use": limiter.in_use()}

    assert in_forked_child(child) == {"inherited": 0, "took": True, "in_use": 1}
    assert limiter.in_use() == 1  # the parent's slot stays the parent's
    assert limiter.acquire(0) is None


# --------------------------------------------------------------------------------------------- sessions


def test_init_takes_a_slot_and_close_gives_it_back(make_session: Callable[..., AvatarSession]) -> None:
    limiter = CountingLimiter(1)
    session = make_session(limiter=limiter)
    assert limiter.inner.in_use() == 0
    session.init()
    assert limiter.inner.in_use() == 1
    session.init()  # a new token, the same slot
    session.start()
    assert (limiter.acquired, limiter.inner.in_use()) == (1, 1)
    session.close()
    session.close()
    assert (limiter.acquired, len(limiter.released), limiter.inner.in_use()) == (1, 1, 0)


def test_a_session_waits_for_a_slot_then_fails_with_concurrency_limit(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    limiter = LocalLimiter(1)
    first = started(make_session, limiter=limiter)
    second = make_session(limiter=limiter, limiter_timeout=0.2)
    with pytest.raises(SessionTokenError) as caught:
        second.init()
    err = caught.value
    assert (err.code, err.retryable, err.phase, err.http_status) == (
        AvatarSDKErrorCode.concurrencyLimit,
        True,
        "session_token",
        None,
    )
    assert "LocalLimiter(limit=1)" in err.message and "0.2s (limiter_timeout)" in err.message
    assert len(service.token_requests) == 1  # the second session never asked for a token
    assert limiter.waiting() == 0
    first.close()
    second.init()  # the slot is free now
    assert second.start()
    assert service.max_open_connections == 1


def test_a_session_waiting_for_a_slot_gets_it_when_another_closes(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    limiter = LocalLimiter(1)
    first = started(make_session, limiter=limiter)
    second = make_session(limiter=limiter)
    outcome = in_thread(second.init)
    wait_until(lambda: limiter.waiting() == 1, "the second session waiting")
    first.close()
    outcome.wait()
    assert outcome.error is None
    second.start()
    assert service.max_open_connections == 1


def test_a_failed_init_gives_the_slot_back(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    limiter = CountingLimiter(1)
    session = make_session(limiter=limiter, http_retries=0)
    service.script_token(TokenReply(status=401, body=jsonapi_error(401, "UNAUTHENTICATED", "Unauthorized", "no")))
    with pytest.raises(SessionTokenError):
        session.init()
    assert (limiter.acquired, len(limiter.released), limiter.inner.in_use()) == (1, 1, 0)
    session.init()
    session.start()
    assert limiter.inner.in_use() == 1


def test_a_failed_start_gives_the_slot_back_and_a_new_start_takes_one(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    limiter = CountingLimiter(1)
    session = make_session(limiter=limiter)
    session.init()
    service.reject_upgrade(503, "busy")
    with pytest.raises(AvatarSDKError):
        session.start()
    assert limiter.inner.in_use() == 0
    session.start()  # the token was not used: the same one starts it, with a slot again
    assert (limiter.acquired, len(limiter.released), limiter.inner.in_use()) == (2, 1, 1)
    session.close()
    assert limiter.inner.in_use() == 0


def test_a_drop_that_ends_the_session_gives_the_slot_back(
    service: FakeAvatarService, recorder: Recorder, make_session: Callable[..., AvatarSession]
) -> None:
    limiter = CountingLimiter(1)
    started(make_session, limiter=limiter)
    service.wait_for_connection(0).drop()
    recorder.wait_closed()
    assert (len(limiter.released), limiter.inner.in_use()) == (1, 0)


def test_a_reconnect_keeps_its_slot_because_the_old_connection_is_closed_first(
    service: FakeAvatarService, recorder: Recorder, make_session: Callable[..., AvatarSession]
) -> None:
    limiter = CountingLimiter(1)
    session = started(make_session, limiter=limiter, reconnect=FAST_RECONNECT, limiter_timeout=0.5)
    service.wait_for_connection(0).drop()
    service.wait_for_connection(1)
    wait_until(lambda: session.connection_id == service.connection(1).connection_id, "the reconnect")
    assert session.collect(pcm(0.2))
    assert (limiter.acquired, limiter.released, limiter.inner.in_use()) == (1, [], 1)
    assert service.max_open_connections == 1  # never the old and the new at once
    session.close()
    assert (len(limiter.released), limiter.inner.in_use()) == (1, 0)


def test_close_during_the_wait_for_a_slot(make_session: Callable[..., AvatarSession], recorder: Recorder) -> None:
    limiter = CountingLimiter(1)
    first = started(make_session, limiter=limiter)
    second = make_session(limiter=limiter)
    outcome = in_thread(second.init)
    wait_until(lambda: limiter.inner.waiting() == 1, "the second session waiting")
    second.close()  # returns at once: the session never started
    assert second.closed
    first.close()  # the waiter gets the slot and gives it back at once
    outcome.wait()
    assert isinstance(outcome.error, ValueError)
    assert "closed while waiting for a slot of" in str(outcome.error)
    assert limiter.inner.in_use() == 0
    assert limiter.acquired == len(limiter.released) == 2


def test_a_session_dropped_unclosed_before_start_gives_its_slot_back(service: FakeAvatarService) -> None:
    limiter = LocalLimiter(1)
    session = new_avatar_session(**service.session_kwargs(), limiter=limiter)
    session.init()
    assert limiter.in_use() == 1
    del session
    gc.collect()
    assert limiter.in_use() == 0


def test_a_limiter_that_fails_fails_init_before_the_token_call(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    class Broken:
        def acquire(self, timeout: Optional[float]) -> Optional[object]:
            raise RuntimeError("store unreachable")

        def release(self, slot: Any) -> None:
            raise AssertionError("nothing to release")

    session = make_session(limiter=Broken())
    with pytest.raises(RuntimeError, match="store unreachable"):
        session.init()
    assert service.token_requests == []
    session.close()


def test_a_limiter_that_fails_to_take_a_slot_back_does_not_stop_close(
    make_session: Callable[..., AvatarSession], recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    class Leaky(LocalLimiter):
        def release(self, slot: Any) -> None:
            raise RuntimeError("store unreachable")

    session = started(make_session, limiter=Leaky(1))
    with caplog.at_level(logging.WARNING, logger="avatarsdk"):
        session.close()
    assert recorder.closes == 1
    assert any("failed to take its slot back" in r.getMessage() for r in caplog.records)


def test_pool_sessions_take_slots_and_wait_for_them(service: FakeAvatarService) -> None:
    """A pool's sessions each hold a slot; a borrower that finds none free waits (the limiter's refusal is
    back-pressure for the pool, as the service's is) and, past its timeout, is told the limiter was the cause."""
    limiter = LocalLimiter(2)
    service.frame_interval = 0.0
    with SessionPool(**service.credentials(), max_size=3, limiter=limiter, limiter_timeout=0.2) as pool:
        with pool.session(timeout=5) as one, pool.session(timeout=5) as two:
            assert limiter.in_use() == 2
            with pytest.raises(PoolTimeoutError) as caught, pool.session(timeout=0.5):
                pass
            refusal = caught.value.last_error
            assert refusal is not None and refusal.code is AvatarSDKErrorCode.concurrencyLimit
            assert isinstance(refusal, SessionTokenError) and "LocalLimiter(limit=2)" in str(caught.value)
            assert one.collect(pcm(0.1)) and two.collect(pcm(0.1))
        with pool.session(timeout=5) as three:  # an idle one, already holding its slot
            assert three.collect(pcm(0.1))
        assert limiter.in_use() == 2  # the idle sessions are connected: they hold their slots
    assert limiter.in_use() == 0
    assert service.max_open_connections == 2


def test_a_pool_borrower_waiting_on_the_limiter_gets_the_next_returned_session(service: FakeAvatarService) -> None:
    limiter = LocalLimiter(2)
    service.frame_interval = 0.0
    got: List[Optional[str]] = []
    with SessionPool(**service.credentials(), max_size=3, limiter=limiter, limiter_timeout=0.2) as pool:
        one = pool.session(timeout=5)
        first = one.__enter__()
        with pool.session(timeout=5):

            def borrow() -> None:
                with pool.session(timeout=10) as session:
                    got.append(session.connection_id)

            waiter = threading.Thread(target=borrow)
            waiter.start()
            wait_until(lambda: pool.stats().refused >= 1, "the third start to be refused by the limiter")
            one.__exit__(None, None, None)  # the waiting borrower takes this one
            waiter.join(10)
            assert not waiter.is_alive()
    assert got == [first.connection_id]
    assert service.max_open_connections == 2


def test_a_forked_child_never_gives_back_its_parents_slot(service: FakeAvatarService) -> None:
    limiter = CountingLimiter(1)
    holder = [new_avatar_session(**service.session_kwargs(), limiter=limiter)]
    holder[0].init()

    def child() -> Any:
        holder.clear()  # the child's copy of the session, dropped unclosed: its finalizer runs
        gc.collect()
        return {"released": len(limiter.released)}

    assert in_forked_child(child) == {"released": 0}
    assert limiter.inner.in_use() == 1
    holder[0].close()
    assert (len(limiter.released), limiter.inner.in_use()) == (1, 0)
