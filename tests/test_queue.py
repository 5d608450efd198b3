"""FrameQueue without sockets: bounds by messages and bytes, notify once per signalled period, blocking and release.

Blocking is observed, never guessed: the queue's condition is replaced by one that tells the test each time a
thread starts waiting on it, and helper threads report when their call returned. Every wait is bounded.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Iterator, List, Optional

import pytest

from avatarsdk import _deadline
from avatarsdk._queue import Backlog, End, FrameQueue, TextFrame

BOUND = 2.0  # seconds: the longest any wait here may take before the test fails


class WatchedCondition(threading.Condition):
    """The queue's condition variable, counting the threads that began to wait on it.

    A thread counted here holds the queue's lock until its ``wait`` releases it, so whatever the test does with
    the queue next happens while that thread is waiting."""

    def __init__(self, monitor: threading.Condition, lock: Any) -> None:
        super().__init__(lock)  # the queue's own lock: the queue takes it in `with`
        self.monitor = monitor
        self.waits = 0
        self.wakeups = 0  # notify_all calls
        self.timeouts: List[Optional[float]] = []  # the timeout of each wait
        self.cap: Optional[float] = None  # if set: the longest each wait really takes (a fake clock runs the queue)

    def wait(self, timeout: Optional[float] = None) -> bool:
        with self.monitor:
            self.waits += 1
            self.timeouts.append(timeout)
            self.monitor.notify_all()
        return super().wait(timeout if self.cap is None else self.cap)

    def notify_all(self) -> None:
        with self.monitor:
            self.wakeups += 1
        super().notify_all()


class Call:
    """One queue call on a helper thread (named ``queue-test-*``, joined by the fixture)."""

    def __init__(self, harness: Harness, fn: Callable[..., Any], *args: Any) -> None:
        self.harness = harness
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.done = False
        self.thread = threading.Thread(target=self._run, args=(fn, args), name=f"queue-test-{fn.__name__}")

    def _run(self, fn: Callable[..., Any], args: Any) -> None:
        try:
            self.result = fn(*args)
        except BaseException as exc:
            self.error = exc
        with self.harness.monitor:
            self.done = True
            self.harness.monitor.notify_all()


class Harness:
    """A queue whose blocking the test can see."""

    def __init__(self) -> None:
        self.monitor = threading.Condition()
        self.calls: List[Call] = []
        self.queues: List[FrameQueue[Any]] = []
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1

    def queue(self, maxsize: int = 100, maxbytes: int = 1000, *, notify: Any = True, held: bool = False) -> Any:
        """A queue (``notify``: the harness counts the calls if ``True``, else the callable given)."""
        q: FrameQueue[Any] = FrameQueue(maxsize, maxbytes, notify=self.notify if notify is True else notify, held=held)
        q._cond = WatchedCondition(self.monitor, q._lock)
        self.queues.append(q)
        return q

    def waits(self, q: Any) -> int:
        with self.monitor:
            return int(q._cond.waits)

    def wakeups(self, q: Any) -> int:
        with self.monitor:
            return int(q._cond.wakeups)

    def start(self, fn: Callable[..., Any], *args: Any) -> Call:
        """Start ``fn(*args)`` on a helper thread; return once it either returned or waits on the queue."""
        q = fn.__self__  # type: ignore[attr-defined]
        before = self.waits(q)
        call = Call(self, fn, *args)
        self.calls.append(call)
        call.thread.start()
        self.until(lambda: call.done or q._cond.waits > before, f"{fn.__name__} to return or wait")
        return call

    def until(self, predicate: Callable[[], bool], what: str) -> None:
        with self.monitor:
            assert self.monitor.wait_for(predicate, BOUND), f"timed out waiting for {what}"

    def finished(self, call: Call) -> Any:
        """Wait (bounded) for ``call`` to return; its result."""
        self.until(lambda: call.done, "the call to return")
        call.thread.join(BOUND)
        if call.error is not None:
            raise call.error
        return call.result

    def close(self) -> None:
        for q in self.queues:
            q.release()
            q.put_end(None)  # wakes a consumer left waiting by a failed test
        for call in self.calls:
            call.thread.join(BOUND)
        assert not [c for c in self.calls if c.thread.is_alive()], "helper threads left running"


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def blocked(harness: Harness, call: Call) -> bool:
    with harness.monitor:
        return not call.done


# ------------------------------------------------------------------------------------------- small types


def test_text_frame_counts_its_size() -> None:
    frame = TextFrame(17)
    assert frame.size == 17
    assert len(frame) == 17
    assert len(TextFrame(0)) == 0


def test_end_holds_its_value() -> None:
    reason = object()
    assert End(reason).value is reason
    assert End(None).value is None


def test_backlog_fields() -> None:
    backlog = Backlog(3, 120)
    assert (backlog.messages, backlog.bytes) == (3, 120)
    assert backlog == (3, 120)


# ---------------------------------------------------------------------------------------- without blocking


def test_a_new_queue_is_empty() -> None:
    q: FrameQueue[str] = FrameQueue(10, 100)
    assert len(q) == 0
    assert q.backlog() == Backlog(0, 0)
    assert q.take() == deque()
    assert q.more() is False


def test_items_come_out_in_order_with_their_bytes_counted() -> None:
    q: FrameQueue[str] = FrameQueue(10, 100)
    text = TextFrame(5)
    q.put_many([b"ab", text])
    q.put_many([b"cde"])
    assert len(q) == 3
    assert q.backlog() == Backlog(3, 10)
    batch = q.take()
    assert list(batch) == [b"ab", text, b"cde"]
    assert isinstance(batch, deque)
    assert len(q) == 0
    assert q.backlog() == Backlog(0, 0)


def test_take_leaves_an_empty_queue_that_fills_again() -> None:
    q: FrameQueue[str] = FrameQueue(10, 100)
    q.put_many([b"abc"])
    first = q.take()
    q.put_many([b"de"])
    assert list(first) == [b"abc"]  # the batch taken is not the queue's own deque
    assert q.backlog() == Backlog(1, 2)
    assert list(q.take()) == [b"de"]


def test_put_many_of_nothing() -> None:
    q: FrameQueue[str] = FrameQueue(10, 100)
    q.put_many([])
    assert len(q) == 0
    assert q.backlog() == Backlog(0, 0)


def test_the_end_is_the_last_item_and_not_in_the_backlog() -> None:
    q: FrameQueue[str] = FrameQueue(10, 100)
    q.put_many([b"abcd", b"ef"])
    q.put_end("closed")
    assert len(q) == 3
    assert q.backlog() == Backlog(2, 6)
    items = list(q.take())
    assert items[:2] == [b"abcd", b"ef"]
    assert isinstance(items[2], End)
    assert items[2].value == "closed"


def test_backlog_of_only_the_end() -> None:
    q: FrameQueue[str] = FrameQueue(10, 100)
    q.put_end("bye")
    assert len(q) == 1
    assert q.backlog() == Backlog(0, 0)


def test_backlog_counts_an_end_that_is_not_last_as_a_message() -> None:
    # only a trailing End is left out (the end is always the last item the reader queues)
    q: FrameQueue[str] = FrameQueue(10, 100)
    q.put_end("early")
    q.put_many([b"xy"])
    assert q.backlog() == Backlog(2, 2)


def test_get_batch_returns_at_once_when_items_wait() -> None:
    q: FrameQueue[str] = FrameQueue(10, 100)
    q.put_many([b"a", b"bc"])
    assert list(q.get_batch()) == [b"a", b"bc"]
    assert q.backlog() == Backlog(0, 0)


def test_wait_end_returns_the_queued_end_without_taking_it() -> None:
    q: FrameQueue[str] = FrameQueue(10, 100)
    q.put_many([b"a"])
    q.put_end("reason")
    assert q.wait_end(0.0) == "reason"
    assert q.wait_end(BOUND) == "reason"
    assert len(q) == 2
    assert q.backlog() == Backlog(1, 1)


def test_wait_end_with_no_end_times_out_with_none() -> None:
    q: FrameQueue[str] = FrameQueue(10, 100)
    assert q.wait_end(0.0) is None
    q.put_many([b"a", b"b"])
    assert q.wait_end(0.01) is None
    assert len(q) == 2


def test_wait_end_ignores_an_end_that_is_not_last() -> None:
    q: FrameQueue[str] = FrameQueue(10, 100)
    q.put_end("early")
    q.put_many([b"a"])
    assert q.wait_end(0.0) is None


def test_wait_end_of_a_none_value_is_none() -> None:
    q: FrameQueue[Optional[str]] = FrameQueue(10, 100)
    q.put_end(None)
    assert q.wait_end(0.0) is None


class StepClock:
    """Stands in for ``time`` in ``avatarsdk._deadline`` (the queue's deadline): ``monotonic()`` returns the
    given readings, then fails."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def monotonic(self) -> float:
        assert self.readings, "the clock was read more often than expected"
        return self.readings.pop(0)


def test_wait_end_does_not_wait_once_the_time_is_up(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    q = harness.queue()
    q._cond.cap = 0.0
    monkeypatch.setattr(_deadline, "time", StepClock(100.0, 101.0))  # the deadline (101), then exactly 101
    assert q.wait_end(1.0) is None
    assert q._cond.timeouts == []


def test_wait_end_waits_for_what_is_left(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    q = harness.queue()
    q._cond.cap = 0.0  # each wait "lasts" until the clock's next reading
    monkeypatch.setattr(_deadline, "time", StepClock(100.0, 100.25, 100.75, 101.5))
    assert q.wait_end(1.0) is None  # waits 0.75, then the 0.25 left, then finds the time up
    assert q._cond.timeouts == [0.75, 0.25]


# --------------------------------------------------------------------------------------------- put_end


def test_put_end_never_blocks_on_a_full_queue() -> None:
    q: FrameQueue[str] = FrameQueue(1, 1)
    q.put_many([b"x"])
    q.put_end("full")  # would deadlock the reader if it waited
    assert len(q) == 2
    assert q.backlog() == Backlog(1, 1)


def test_put_end_wakes_a_consumer_waiting_in_get_batch(harness: Harness) -> None:
    q = harness.queue()
    call = harness.start(q.get_batch)
    assert blocked(harness, call)
    q.put_end("gone")
    batch = list(harness.finished(call))
    assert len(batch) == 1 and isinstance(batch[0], End) and batch[0].value == "gone"


def test_put_end_wakes_a_consumer_in_wait_end(harness: Harness) -> None:
    q = harness.queue()
    q.put_many([b"a"])
    call = harness.start(q.wait_end, 30.0)
    assert blocked(harness, call)
    q.put_end("done")
    assert harness.finished(call) == "done"
    assert len(q) == 2  # nothing taken


def test_put_end_after_a_waiting_consumer_woke_still_wakes_the_next_one(harness: Harness) -> None:
    q = harness.queue()
    first = harness.start(q.get_batch)
    q.put_many([b"a"])
    assert list(harness.finished(first)) == [b"a"]
    second = harness.start(q.wait_end, 30.0)
    assert blocked(harness, second)
    q.put_end("end")
    assert harness.finished(second) == "end"


# ------------------------------------------------------------------------------------------ the consumer


def test_get_batch_blocks_until_an_item_arrives(harness: Harness) -> None:
    q = harness.queue()
    call = harness.start(q.get_batch)
    assert blocked(harness, call)
    assert harness.waits(q) == 1
    q.put_many([b"hello", b"!"])
    assert list(harness.finished(call)) == [b"hello", b"!"]
    assert q.backlog() == Backlog(0, 0)


def test_get_batch_wakes_on_each_put_while_waiting_again(harness: Harness) -> None:
    q = harness.queue()
    first = harness.start(q.get_batch)
    q.put_many([b"1"])
    assert list(harness.finished(first)) == [b"1"]
    second = harness.start(q.get_batch)
    assert blocked(harness, second)
    q.put_many([b"2"])
    assert list(harness.finished(second)) == [b"2"]


def test_wait_end_blocks_until_the_end_is_queued(harness: Harness) -> None:
    q = harness.queue()
    call = harness.start(q.wait_end, 30.0)
    assert blocked(harness, call)
    q.put_many([b"a"])  # wakes it; no end yet: it waits again
    harness.until(lambda: q._cond.waits >= 2, "wait_end to wait again")
    assert blocked(harness, call)
    q.put_end(7)
    assert harness.finished(call) == 7


# ----------------------------------------------------------------------------------- bound by messages


def test_put_many_blocks_at_maxsize_messages(harness: Harness) -> None:
    q = harness.queue(maxsize=2, maxbytes=1000)
    assert harness.finished(harness.start(q.put_many, [b"a"])) is None
    assert harness.finished(harness.start(q.put_many, [b"b"])) is None  # 1 < 2: goes in
    call = harness.start(q.put_many, [b"c"])  # 2 >= 2: waits
    assert blocked(harness, call)
    assert q.backlog() == Backlog(2, 2)
    assert list(q.take()) == [b"a", b"b"]  # the consumer makes room
    harness.finished(call)
    assert list(q.take()) == [b"c"]


def test_a_batch_may_pass_maxsize_by_its_own_length(harness: Harness) -> None:
    q = harness.queue(maxsize=2, maxbytes=1000)
    harness.finished(harness.start(q.put_many, [b"a"]))
    harness.finished(harness.start(q.put_many, [b"b", b"c", b"d"]))  # 1 < 2: the whole block goes in
    assert q.backlog() == Backlog(4, 4)


def test_maxsize_one(harness: Harness) -> None:
    q = harness.queue(maxsize=1, maxbytes=1000)
    harness.finished(harness.start(q.put_many, [b"a"]))
    call = harness.start(q.put_many, [b"b"])
    assert blocked(harness, call)
    assert list(q.get_batch()) == [b"a"]
    harness.finished(call)
    assert q.backlog() == Backlog(1, 1)


def test_a_producer_woken_while_still_full_waits_again(harness: Harness) -> None:
    q = harness.queue(maxsize=1, maxbytes=1000)
    harness.finished(harness.start(q.put_many, [b"a"]))
    call = harness.start(q.put_many, [b"b"])
    q.put_end("x")  # wakes everyone; the queue is still full
    harness.until(lambda: q._cond.waits >= 2, "the producer to wait again")
    assert blocked(harness, call)
    q.take()
    harness.finished(call)
    assert list(q.take()) == [b"b"]


# -------------------------------------------------------------------------------------- bound by bytes


def test_put_many_fills_up_to_exactly_maxbytes(harness: Harness) -> None:
    q = harness.queue(maxsize=100, maxbytes=10)
    harness.finished(harness.start(q.put_many, [b"x" * 4]))
    harness.finished(harness.start(q.put_many, [b"y" * 6]))  # 4 + 6 = 10: not past the bound
    assert q.backlog() == Backlog(2, 10)
    call = harness.start(q.put_many, [b"z"])  # 11 > 10: waits
    assert blocked(harness, call)
    q.take()
    harness.finished(call)
    assert q.backlog() == Backlog(1, 1)


def test_a_batch_that_would_pass_maxbytes_waits_for_room(harness: Harness) -> None:
    q = harness.queue(maxsize=100, maxbytes=10)
    harness.finished(harness.start(q.put_many, [b"x" * 5]))
    call = harness.start(q.put_many, [b"y" * 3, b"z" * 3])  # 5 + 6 > 10
    assert blocked(harness, call)
    assert q.backlog() == Backlog(1, 5)
    assert list(q.take()) == [b"xxxxx"]
    harness.finished(call)
    assert q.backlog() == Backlog(2, 6)


def test_a_batch_larger_than_maxbytes_passes_alone_into_an_empty_queue(harness: Harness) -> None:
    q = harness.queue(maxsize=100, maxbytes=10)
    harness.finished(harness.start(q.put_many, [b"x" * 50]))
    assert q.backlog() == Backlog(1, 50)
    call = harness.start(q.put_many, [b"y"])  # anything more waits
    assert blocked(harness, call)
    q.take()
    harness.finished(call)


def test_a_large_batch_waits_for_the_queue_to_empty(harness: Harness) -> None:
    q = harness.queue(maxsize=100, maxbytes=10)
    harness.finished(harness.start(q.put_many, [b"a"]))
    call = harness.start(q.put_many, [b"x" * 50])
    assert blocked(harness, call)
    q.take()
    harness.finished(call)
    assert q.backlog() == Backlog(1, 50)


def test_queued_messages_without_bytes_do_not_hold_back_a_large_batch(harness: Harness) -> None:
    q = harness.queue(maxsize=100, maxbytes=10)
    harness.finished(harness.start(q.put_many, [b"", TextFrame(0)]))
    harness.finished(harness.start(q.put_many, [b"x" * 50]))  # the queue holds no bytes: it goes in
    assert q.backlog() == Backlog(3, 50)


def test_text_frames_count_their_size_against_maxbytes(harness: Harness) -> None:
    q = harness.queue(maxsize=100, maxbytes=10)
    harness.finished(harness.start(q.put_many, [TextFrame(8)]))
    call = harness.start(q.put_many, [b"abc"])
    assert blocked(harness, call)
    assert q.backlog() == Backlog(1, 8)
    q.take()
    harness.finished(call)


# --------------------------------------------------------------------------------------------- release


def test_release_lets_a_blocked_producer_through(harness: Harness) -> None:
    q = harness.queue(maxsize=1, maxbytes=1000)
    harness.finished(harness.start(q.put_many, [b"a"]))
    call = harness.start(q.put_many, [b"b"])
    assert blocked(harness, call)
    q.release()
    harness.finished(call)
    assert q.backlog() == Backlog(2, 2)


def test_after_release_nothing_blocks(harness: Harness) -> None:
    q = harness.queue(maxsize=1, maxbytes=1)
    q.release()
    for item in (b"a", b"bb", b"ccc"):
        harness.finished(harness.start(q.put_many, [item]))
    assert q.backlog() == Backlog(3, 6)
    assert harness.waits(q) == 0


def test_release_leaves_the_items(harness: Harness) -> None:
    q = harness.queue()
    q.put_many([b"a"])
    q.release()
    assert list(q.take()) == [b"a"]


# ---------------------------------------------------------------------------------------------- notify


def test_notify_once_per_signalled_period() -> None:
    calls: List[int] = []
    q: FrameQueue[str] = FrameQueue(100, 1000, notify=lambda: calls.append(1))
    q.put_many([b"a"])
    assert len(calls) == 1
    q.put_many([b"b"])  # the consumer already knows
    assert len(calls) == 1
    assert list(q.take()) == [b"a", b"b"]
    q.put_many([b"c"])  # taken, but more() not asked yet: still signalled
    assert len(calls) == 1
    assert q.more() is True  # items came meanwhile: the consumer comes back for them
    q.put_many([b"d"])
    assert len(calls) == 1
    q.take()
    assert q.more() is False  # the consumer is done: the next item calls notify again
    assert len(calls) == 1
    q.put_many([b"e"])
    assert len(calls) == 2
    q.put_many([b"f"])
    assert len(calls) == 2


def test_more_without_items_twice() -> None:
    calls: List[int] = []
    q: FrameQueue[str] = FrameQueue(100, 1000, notify=lambda: calls.append(1))
    assert q.more() is False
    assert q.more() is False
    q.put_many([b"a"])
    assert len(calls) == 1


def test_more_does_not_take() -> None:
    q: FrameQueue[str] = FrameQueue(100, 1000)
    q.put_many([b"a"])
    assert q.more() is True
    assert q.backlog() == Backlog(1, 1)


def test_put_end_notifies_when_not_signalled() -> None:
    calls: List[int] = []
    q: FrameQueue[str] = FrameQueue(100, 1000, notify=lambda: calls.append(1))
    q.put_end("bye")
    assert len(calls) == 1


def test_put_end_does_not_notify_again_while_signalled() -> None:
    calls: List[int] = []
    q: FrameQueue[str] = FrameQueue(100, 1000, notify=lambda: calls.append(1))
    q.put_many([b"a"])
    q.put_end("bye")
    assert len(calls) == 1
    q.put_many([b"late"])
    assert len(calls) == 1


def test_put_end_then_put_many_notifies_once() -> None:
    calls: List[int] = []
    q: FrameQueue[str] = FrameQueue(100, 1000, notify=lambda: calls.append(1))
    q.put_end("bye")
    q.put_many([b"a"])
    assert len(calls) == 1


def test_put_many_of_nothing_still_signals() -> None:
    calls: List[int] = []
    q: FrameQueue[str] = FrameQueue(100, 1000, notify=lambda: calls.append(1))
    q.put_many([])
    assert len(calls) == 1


def test_a_held_queue_does_not_notify_before_a_first_more() -> None:
    calls: List[int] = []
    q: FrameQueue[str] = FrameQueue(100, 1000, notify=lambda: calls.append(1), held=True)
    q.put_many([b"a"])
    q.put_end("bye")
    assert calls == []
    assert q.more() is True  # items wait: still held (the consumer comes for them)
    q.put_many([b"b"])
    assert calls == []
    q.take()
    assert q.more() is False
    q.put_many([b"c"])
    assert calls == [1]


def test_a_held_queue_released_by_more_on_empty() -> None:
    calls: List[int] = []
    q: FrameQueue[str] = FrameQueue(100, 1000, notify=lambda: calls.append(1), held=True)
    assert q.more() is False
    q.put_end("bye")
    assert calls == [1]


def test_without_notify_nothing_is_called() -> None:
    q: FrameQueue[str] = FrameQueue(100, 1000)
    q.put_many([b"a"])
    q.put_end("x")
    assert len(q) == 2


def test_notify_runs_outside_the_lock(harness: Harness) -> None:
    seen: List[Any] = []

    def notify() -> None:
        seen.append((len(q), q.backlog(), list(q.take())))

    q: FrameQueue[str] = harness.queue(notify=notify)
    # on a helper thread: a notify called with the lock held would deadlock it, and the bounded wait would fail
    harness.finished(harness.start(q.put_many, [b"ab"]))
    assert seen == [(1, Backlog(1, 2), [b"ab"])]
    assert q.more() is False
    harness.finished(harness.start(q.put_end, "bye"))
    assert len(seen) == 2
    assert seen[1][:2] == (1, Backlog(0, 0))


def test_notify_not_called_for_a_waiting_consumer_of_a_signalled_queue(harness: Harness) -> None:
    q = harness.queue()
    q.put_many([b"a"])
    assert harness.notified == 1
    q.take()
    call = harness.start(q.get_batch)  # a consumer thread, still signalled: woken without notify
    q.put_many([b"b"])
    assert list(harness.finished(call)) == [b"b"]
    assert harness.notified == 1


def test_a_consumer_thread_started_by_notify_gets_everything(harness: Harness) -> None:
    q = harness.queue(maxsize=2, maxbytes=1000)
    batches: List[List[Any]] = []
    producer = harness.start(q.put_many, [b"1", b"2"])
    harness.finished(producer)
    blocked_producer = harness.start(q.put_many, [b"3"])
    assert blocked(harness, blocked_producer)
    batches.append(list(q.get_batch()))
    harness.finished(blocked_producer)
    q.put_end("end")
    batches.append(list(q.get_batch()))
    assert batches[0] == [b"1", b"2"]
    assert batches[1][0] == b"3" and isinstance(batches[1][1], End)
    assert harness.notified == 1


# -------------------------------------------------------------------------------- no needless wakeups
# The reader pays for waking the consumer (and the consumer for waking the reader) only while the other waits.


def test_no_wakeup_while_nobody_waits(harness: Harness) -> None:
    q = harness.queue()
    q.put_many([b"a"])
    q.put_many([b"b"])
    assert q.take()
    assert q.take() == deque()
    q.put_many([b"c"])
    assert harness.wakeups(q) == 0
    q.put_end("x")  # the end always wakes (a consumer may wait for it in wait_end)
    assert harness.wakeups(q) == 1


def test_one_wakeup_per_wait_of_the_consumer(harness: Harness) -> None:
    q = harness.queue()
    call = harness.start(q.get_batch)
    q.put_many([b"a"])
    assert list(harness.finished(call)) == [b"a"]
    assert harness.wakeups(q) == 1
    q.put_many([b"b"])  # the consumer is not waiting any more
    q.put_many([b"c"])
    assert harness.wakeups(q) == 1


def test_after_the_end_a_put_wakes_nobody(harness: Harness) -> None:
    q = harness.queue()
    call = harness.start(q.get_batch)
    q.put_end("x")
    harness.finished(call)
    assert harness.wakeups(q) == 1
    q.put_many([b"late"])
    assert harness.wakeups(q) == 1


def test_one_wakeup_per_wait_of_the_producer(harness: Harness) -> None:
    q = harness.queue(maxsize=1)
    q.put_many([b"a"])
    call = harness.start(q.put_many, [b"b"])
    assert blocked(harness, call)
    assert list(q.take()) == [b"a"]
    harness.finished(call)
    assert harness.wakeups(q) == 1
    assert list(q.take()) == [b"b"]  # the producer is not waiting any more
    q.take()
    assert harness.wakeups(q) == 1
