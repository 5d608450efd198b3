"""The dispatchers without sockets: real FrameQueues and real threads, handlers that record what they see.

A session's own thread (``new_dispatcher(None, ...)``) and a slot on a SharedDispatcher run the same handlers in
arrival order: frames, text, then ``on_end``, which ends the dispatch or hands over a new queue. The shared
dispatcher's workers are counted (started up to ``threads``, reused once idle, stopped by ``close()``, started
again by later frames), and so are the idle ones, which a new ready session wakes instead of starting a worker.

Nothing sleeps to guess: handlers block on events that the test sets, helper threads report when their call
returned, and every wait is bounded (``BOUND``). ``SETTLE`` only bounds checks that something has *not* happened
yet (a join still waiting, a frame not yet handled): correct code passes them whatever the timing. The idle count
of a SharedDispatcher has no public view, so the tests that wait for workers to be idle read it (``idle()``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import in_forked_child, wait_until

from avatarsdk._dispatch import Dispatcher, SharedDispatcher, new_dispatcher, safe_call
from avatarsdk._queue import FrameQueue, TextFrame

pytestmark = pytest.mark.timeout(30)  # every wait is bounded; a mutant that hangs anyway fails in 30 s, not 120

BOUND = 2.0  # seconds: the longest any wait here may take before the test fails
SETTLE = 0.05  # seconds: how long a check that something has NOT happened (yet) looks
LIMITS = (64, 1 << 20)
KINDS = ("own-thread", "shared")
LOGGER = "avatarsdk._dispatch"

Logged = Tuple[Any, ...]


def threads_named(prefix: str) -> List[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(prefix))


def idle(shared: SharedDispatcher) -> int:
    """The workers waiting for a ready session (not yet notified): the count that has no public view."""
    return shared._idle


class Log:
    """What every handler saw, in order: ``(label, what, ...)`` tuples. Waits on a condition, never sleeps."""

    def __init__(self) -> None:
        self.events: List[Logged] = []
        self._cond = threading.Condition()

    def add(self, *event: Any) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, BOUND):
                raise AssertionError(f"timed out waiting for {what}; events so far: {self.events}")

    def within(self, timeout: float, *event: Any) -> bool:
        """Whether ``event`` is logged within ``timeout`` seconds (for checks that it is not, or not yet)."""
        with self._cond:
            return self._cond.wait_for(lambda: event in self.events, timeout)

    def wait_event(self, *event: Any) -> None:
        self.wait_for(lambda: event in self.events, repr(event))

    def of(self, label: str) -> List[Logged]:
        with self._cond:
            return [event[1:] for event in self.events if event[0] == label]


class Probe:
    """One session's handlers on a dispatcher: they log each call (frame, text, end) with the thread it ran on,
    then run the test's hook for it, if any. ``on_end`` returns what its hook returns (``None`` without one)."""

    def __init__(self, harness: Harness, label: str, shared: Optional[SharedDispatcher], limits: Tuple[int, int]):
        self.log = harness.log
        self.label = label
        self.hooks: Dict[bytes, Callable[[], None]] = {}
        self.text_hook: Optional[Callable[[], None]] = None
        self.end_hook: Optional[Callable[[Any], Optional[FrameQueue[Any]]]] = None
        self.threads: List[Tuple[str, threading.Thread]] = []  # (what, thread) of each handler call
        self.closing = False  # teardown: on_end returns None whatever its hook says
        self.stuck = False  # the test knows this dispatcher never ends: teardown does not wait for it
        self.dispatcher: Dispatcher[Any] = new_dispatcher(
            shared,
            limits=limits,
            on_frame=self._frame,
            on_text=self._text,
            on_end=self._end,
            name=f"avatarsdk-dispatch-{label}",
        )

    def _frame(self, data: bytes) -> None:
        self.threads.append(("frame", threading.current_thread()))
        self.log.add(self.label, "frame", data)
        hook = self.hooks.get(data)
        if hook is not None:
            hook()

    def _text(self, text: TextFrame) -> None:
        self.threads.append(("text", threading.current_thread()))
        self.log.add(self.label, "text", text)
        if self.text_hook is not None:
            self.text_hook()

    def _end(self, value: Any) -> Optional[FrameQueue[Any]]:
        self.threads.append(("end", threading.current_thread()))
        self.log.add(self.label, "end", value)
        following = self.end_hook(value) if self.end_hook is not None else None
        return None if self.closing else following

    def thread_names(self, what: str) -> List[str]:
        return [thread.name for kind, thread in self.threads if kind == what]

    def send(self, *items: Any) -> None:
        self.dispatcher.queue.put_many(list(items))

    def end(self, value: Any) -> None:
        self.dispatcher.queue.put_end(value)

    def wait_end(self, value: Any) -> None:
        """Wait until ``on_end(value)`` was called and the dispatcher is over."""
        self.log.wait_event(self.label, "end", value)
        self.dispatcher.join(BOUND)
        assert not self.dispatcher.is_alive()


class Call:
    """A call on a helper thread (``dispatch-test-call``), which reports its return."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, args=(fn, args), name="dispatch-test-call", daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        try:
            self.result = fn(*args)
        except BaseException as exc:  # reported to the test by wait()
            self.error = exc
        finally:
            self.done.set()

    def wait(self) -> Any:
        assert self.done.wait(BOUND), "the call did not return"
        self.thread.join(BOUND)
        if self.error is not None:
            raise self.error
        return self.result


class Harness:
    """Probes, gates (events handlers block on), helper calls and shared dispatchers of one test; ``close()``
    releases and ends them all, so that a failing test (or a mutant) leaves no thread behind."""

    def __init__(self) -> None:
        self.log = Log()
        self._gates: List[threading.Event] = []
        self._probes: List[Probe] = []
        self._calls: List[Call] = []
        self._shared: List[SharedDispatcher] = []

    def gate(self) -> threading.Event:
        event = threading.Event()
        self._gates.append(event)
        return event

    def blocker(self, label: str, gate: threading.Event) -> Callable[[], None]:
        """A hook that logs ``(label, "blocked")`` then waits (bounded) for ``gate``."""

        def block() -> None:
            self.log.add(label, "blocked")
            assert gate.wait(BOUND), f"{label}: the gate was never opened"

        return block

    def shared(self, threads: int = 2) -> SharedDispatcher:
        dispatcher = SharedDispatcher(threads)
        self._shared.append(dispatcher)
        return dispatcher

    def probe(self, label: str, shared: Optional[SharedDispatcher] = None, limits: Tuple[int, int] = LIMITS) -> Probe:
        probe = Probe(self, label, shared, limits)
        self._probes.append(probe)
        return probe

    def probe_of(self, kind: str, label: str, limits: Tuple[int, int] = LIMITS) -> Probe:
        """A probe on its own thread, or on this test's first shared dispatcher (made with 2 threads)."""
        if kind == "own-thread":
            return self.probe(label, None, limits)
        return self.probe(label, self._shared[0] if self._shared else self.shared(2), limits)

    def call(self, fn: Callable[..., Any], *args: Any) -> Call:
        call = Call(fn, *args)
        self._calls.append(call)
        return call

    def close(self) -> None:
        for gate in self._gates:
            gate.set()
        for probe in self._probes:
            probe.closing = True
            dispatcher = probe.dispatcher
            if dispatcher.is_alive():
                dispatcher.queue.release()
                dispatcher.queue.put_end("teardown")
        deadline = time.monotonic() + BOUND
        for probe in self._probes:
            if not probe.stuck:
                probe.dispatcher.join(max(0.0, deadline - time.monotonic()))
        for call in self._calls:
            call.thread.join(max(0.0, deadline - time.monotonic()))
        for shared in self._shared:
            shared.close(BOUND)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    try:
        yield harness
    finally:
        harness.close()


def exc_records(caplog: pytest.LogCaptureFixture) -> List[Tuple[str, Any]]:
    """What the dispatchers logged: (message, class of the exception logged with it)."""
    return [
        (record.getMessage(), record.exc_info[0] if record.exc_info else None)
        for record in caplog.records
        if record.name == LOGGER
    ]


# ------------------------------------------------------------------------------------------ safe_call


def test_safe_call_calls_with_the_arguments_and_returns_none() -> None:
    seen: List[Tuple[Any, ...]] = []
    assert safe_call("on_x", lambda *args: seen.append(args) or "ignored", 1, "two") is None
    assert seen == [(1, "two")]


def test_safe_call_without_a_callback_does_nothing() -> None:
    assert safe_call("on_x", None, 1) is None


def test_safe_call_logs_what_the_callback_raises(caplog: pytest.LogCaptureFixture) -> None:
    def boom(value: int) -> None:
        raise KeyError(value)

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert safe_call("on_frame", boom, 7) is None
    assert exc_records(caplog) == [("on_frame callback raised; the session carries on", KeyError)]
    assert caplog.records[0].levelno == logging.ERROR


# ----------------------------------------------------------------------------------------- base class


def test_the_base_dispatcher_leaves_its_queue_and_threads_to_subclasses() -> None:
    handlers: Dict[str, Any] = {"on_frame": print, "on_text": print, "on_end": print, "name": "base"}
    with pytest.raises(NotImplementedError):
        Dispatcher(limits=LIMITS, **handlers)

    class QueueOnly(Dispatcher[Any]):
        def new_queue(self, *, first: bool = False) -> FrameQueue[Any]:
            return FrameQueue(*self._limits)

    dispatcher = QueueOnly(limits=LIMITS, **handlers)
    assert (dispatcher.name, dispatcher.started) == ("base", False)
    for call in (lambda: dispatcher.join(None), dispatcher.is_alive, dispatcher.is_current):
        with pytest.raises(NotImplementedError):
            call()


# ------------------------------------------------------------------------------------ either dispatcher


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_starts_before_the_first_item(h: Harness, kind: str) -> None:
    probe = h.probe_of(kind, "a")
    dispatcher = probe.dispatcher
    assert (dispatcher.name, dispatcher.started) == ("avatarsdk-dispatch-a", False)
    assert (dispatcher.is_alive(), dispatcher.is_current()) == (False, False)
    assert dispatcher.peek_end(0) is None  # no batch yet, no end queued
    h.call(dispatcher.join, None).wait()  # returns at once: there is nothing to wait for
    h.call(dispatcher.join, 0.5).wait()
    assert threads_named("avatarsdk-") == []
    assert h.log.events == []


@pytest.mark.parametrize("kind", KINDS)
def test_handlers_run_in_arrival_order_then_on_end(h: Harness, kind: str) -> None:
    probe = h.probe_of(kind, "a")
    text = TextFrame(5)
    probe.send(b"one", text, b"two")
    probe.send(b"three")
    probe.end("bye")
    probe.wait_end("bye")
    assert probe.dispatcher.started is True
    assert h.log.of("a") == [("frame", b"one"), ("text", text), ("frame", b"two"), ("frame", b"three"), ("end", "bye")]
    assert not probe.dispatcher.is_current()


def test_a_sessions_own_thread_runs_every_handler_and_ends_after_on_end(h: Harness) -> None:
    probe = h.probe("a")
    probe.send(b"one", TextFrame(1))
    probe.end(None)
    probe.wait_end(None)
    threads = {thread for _, thread in probe.threads}
    assert len(threads) == 1
    (thread,) = threads
    assert (thread.name, thread.daemon, thread.is_alive()) == ("avatarsdk-dispatch-a", True, False)
    assert [what for what, _ in probe.threads] == ["frame", "text", "end"]


def test_shared_workers_run_the_handlers_and_on_end_runs_on_a_thread_of_its_own(h: Harness) -> None:
    probe = h.probe("a", h.shared(2))
    probe.send(b"one", TextFrame(1))
    probe.end(None)
    probe.wait_end(None)
    assert probe.thread_names("frame") == probe.thread_names("text") == ["avatarsdk-shared-1"]
    assert probe.thread_names("end") == ["avatarsdk-dispatch-a"]
    assert all(thread.daemon for _, thread in probe.threads)
    assert threads_named("avatarsdk-") == ["avatarsdk-shared-1"]  # the worker waits for more; on_end's ended


@pytest.mark.parametrize("kind", KINDS)
def test_a_handler_that_raises_is_logged_and_its_batch_goes_on(
    h: Harness, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    probe = h.probe_of(kind, "a")

    def frame_fails() -> None:
        raise RuntimeError("frame handler failed")

    def text_fails() -> None:
        raise ValueError("text handler failed")

    probe.hooks[b"bad"] = frame_fails
    probe.text_hook = text_fails
    text = TextFrame(2)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        probe.send(b"bad", text, b"good")  # one batch: the queue tells the dispatcher once its items are in
        probe.end("over")
        probe.wait_end("over")
    assert h.log.of("a") == [("frame", b"bad"), ("text", text), ("frame", b"good"), ("end", "over")]
    assert exc_records(caplog) == [
        ("internal error while dispatching; continuing", RuntimeError),
        ("internal error while dispatching; continuing", ValueError),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_an_on_end_that_raises_is_logged_and_ends_the_dispatch(
    h: Harness, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    probe = h.probe_of(kind, "a")

    def end_fails(value: Any) -> Optional[FrameQueue[Any]]:
        raise OSError("on_end failed")

    probe.end_hook = end_fails
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        probe.send(b"one")
        probe.end("closed")
        probe.wait_end("closed")
    assert exc_records(caplog) == [("internal error while ending the dispatch", OSError)]
    assert h.log.of("a") == [("frame", b"one"), ("end", "closed")]


@pytest.mark.parametrize("kind", KINDS)
def test_on_end_returning_a_new_queue_goes_on_with_it(h: Harness, kind: str) -> None:
    probe = h.probe_of(kind, "a")
    dispatcher = probe.dispatcher
    first = dispatcher.queue
    made: List[FrameQueue[Any]] = []

    def reconnect(value: Any) -> Optional[FrameQueue[Any]]:
        if value != "reconnect":
            return None
        following = dispatcher.new_queue()
        following.put_many([b"held"])  # came while on_end runs: handled after it returned
        made.append(following)
        h.log.add("a", "on_end returns", dispatcher.is_alive())
        return following

    probe.end_hook = reconnect
    probe.send(b"first")
    probe.end("reconnect")
    h.log.wait_event("a", "frame", b"held")
    assert dispatcher.queue is made[0] is not first
    assert dispatcher.is_alive()
    probe.send(b"later")
    probe.end("done")
    probe.wait_end("done")
    assert h.log.of("a") == [
        ("frame", b"first"),
        ("end", "reconnect"),
        ("on_end returns", True),
        ("frame", b"held"),
        ("frame", b"later"),
        ("end", "done"),
    ]
    if kind == "own-thread":
        assert len({thread for _, thread in probe.threads}) == 1  # the new queue did not start another thread
    else:
        assert probe.thread_names("end") == ["avatarsdk-dispatch-a", "avatarsdk-dispatch-a"]


@pytest.mark.parametrize("kind", KINDS)
def test_items_that_come_while_a_batch_is_handled_are_the_next_batch(h: Harness, kind: str) -> None:
    probe = h.probe_of(kind, "a")
    gate = h.gate()
    probe.hooks[b"one"] = h.blocker("a", gate)
    probe.hooks[b"three"] = lambda: h.log.add("a", "end in this batch", probe.dispatcher.peek_end(0))
    probe.send(b"one")
    h.log.wait_event("a", "blocked")
    probe.send(b"two")
    probe.send(b"three")
    probe.end("v")
    gate.set()
    probe.wait_end("v")
    assert h.log.of("a") == [
        ("frame", b"one"),
        ("blocked",),
        ("frame", b"two"),
        ("frame", b"three"),
        ("end in this batch", "v"),  # the end is later in this batch: nothing is left in the queue
        ("end", "v"),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_peek_end_waits_within_its_timeout_for_an_end_to_arrive(h: Harness, kind: str) -> None:
    probe = h.probe_of(kind, "a")

    def peek() -> None:
        h.log.add("a", "peeking")
        began = time.monotonic()
        value = probe.dispatcher.peek_end(BOUND)
        h.log.add("a", "peeked", value, time.monotonic() - began < BOUND)

    probe.hooks[b"one"] = peek
    probe.send(b"one")
    h.log.wait_event("a", "peeking")
    probe.end("late")
    probe.wait_end("late")
    assert h.log.of("a") == [("frame", b"one"), ("peeking",), ("peeked", "late", True), ("end", "late")]


@pytest.mark.parametrize("kind", KINDS)
def test_peek_end_without_an_end_is_none_after_its_timeout(h: Harness, kind: str) -> None:
    probe = h.probe_of(kind, "a")

    def peek() -> None:
        began = time.monotonic()
        value = probe.dispatcher.peek_end(SETTLE)
        h.log.add("a", "peeked", probe.dispatcher.peek_end(0), value, time.monotonic() - began >= SETTLE)

    probe.hooks[b"one"] = peek
    probe.send(b"one", b"two")
    h.log.wait_event("a", "frame", b"two")
    probe.end(None)
    probe.wait_end(None)
    assert h.log.of("a") == [("frame", b"one"), ("peeked", None, None, True), ("frame", b"two"), ("end", None)]


@pytest.mark.parametrize(
    ("limits", "queued", "blocked"),
    [((1, 1 << 20), b"two", b"three"), ((64, 4), b"two", b"33")],
    ids=["messages", "bytes"],
)
@pytest.mark.parametrize("kind", KINDS)
def test_the_queue_is_bounded_by_the_limits(
    h: Harness, kind: str, limits: Tuple[int, int], queued: bytes, blocked: bytes
) -> None:
    probe = h.probe_of(kind, "a", limits)
    gate = h.gate()
    probe.hooks[b"one"] = h.blocker("a", gate)
    probe.send(b"one")
    h.log.wait_event("a", "blocked")
    probe.send(queued)  # the queue is empty again: it goes in
    producer = h.call(probe.send, blocked)
    assert not producer.done.wait(SETTLE)  # one more would pass the bound: it waits for the handlers
    gate.set()
    producer.wait()
    probe.end(None)
    probe.wait_end(None)
    assert h.log.of("a") == [("frame", b"one"), ("blocked",), ("frame", queued), ("frame", blocked), ("end", None)]


def test_own_thread_is_current_only_on_itself(h: Harness) -> None:
    probe = h.probe("a")
    dispatcher = probe.dispatcher
    gate = h.gate()

    def check() -> None:
        h.log.add("a", "in handler", dispatcher.is_current(), dispatcher.is_alive())
        assert gate.wait(BOUND)

    probe.hooks[b"one"] = check
    probe.end_hook = lambda value: h.log.add("a", "in on_end", dispatcher.is_current())
    probe.send(b"one")
    h.log.wait_event("a", "in handler", True, True)
    assert (dispatcher.is_current(), dispatcher.is_alive()) == (False, True)
    assert h.call(dispatcher.is_current).wait() is False
    gate.set()
    probe.end(None)
    probe.wait_end(None)
    assert h.log.of("a")[-1] == ("in on_end", True)
    assert (dispatcher.is_current(), dispatcher.is_alive()) == (False, False)


def test_own_thread_join_waits_as_long_as_it_is_told(h: Harness) -> None:
    probe = h.probe("a")
    dispatcher = probe.dispatcher
    gate = h.gate()
    probe.hooks[b"one"] = h.blocker("a", gate)
    probe.send(b"one")
    h.log.wait_event("a", "blocked")
    began = time.monotonic()
    dispatcher.join(SETTLE)
    assert time.monotonic() - began >= SETTLE
    assert dispatcher.is_alive()
    joiner = h.call(lambda: (dispatcher.join(None), dispatcher.is_alive())[1])
    assert not joiner.done.wait(SETTLE)
    gate.set()
    assert not joiner.done.wait(SETTLE)  # the handler returned; the thread waits for more
    probe.end(None)
    assert joiner.wait() is False


def test_shared_slot_is_current_on_its_threads_and_on_every_shared_worker(h: Harness) -> None:
    shared = h.shared(2)
    a, b = h.probe("a", shared), h.probe("b", shared)
    gate_a, gate_end = h.gate(), h.gate()

    def in_handler() -> None:
        h.log.add("a", "in handler", a.dispatcher.is_current(), a.dispatcher.is_alive())
        assert gate_a.wait(BOUND)

    def in_on_end(value: Any) -> None:
        h.log.add("a", "in on_end", a.dispatcher.is_current(), a.dispatcher.is_alive())
        assert gate_end.wait(BOUND)

    a.hooks[b"a1"] = in_handler
    a.end_hook = in_on_end
    b.hooks[b"b1"] = lambda: h.log.add("b", "a is current", a.dispatcher.is_current(), b.dispatcher.is_current())
    a.send(b"a1")
    h.log.wait_event("a", "in handler", True, True)
    assert (a.dispatcher.is_current(), a.dispatcher.is_alive()) == (False, True)
    assert h.call(a.dispatcher.is_current).wait() is False
    b.send(b"b1")  # the other worker: a callback there must not wait for a either
    h.log.wait_event("b", "a is current", True, True)
    assert {a.thread_names("frame")[0], b.thread_names("frame")[0]} == {"avatarsdk-shared-1", "avatarsdk-shared-2"}
    gate_a.set()
    a.end("closed")
    h.log.wait_event("a", "in on_end", True, True)
    assert (a.dispatcher.is_current(), a.dispatcher.is_alive()) == (False, True)
    gate_end.set()
    a.wait_end("closed")
    assert (a.dispatcher.is_current(), a.dispatcher.is_alive()) == (False, False)


def test_shared_slot_join_waits_for_on_end_with_a_timeout_or_none(h: Harness) -> None:
    probe = h.probe("a", h.shared(1))
    dispatcher = probe.dispatcher
    gate_frame, gate_end = h.gate(), h.gate()
    probe.hooks[b"one"] = h.blocker("a", gate_frame)
    probe.end_hook = lambda value: h.blocker("a", gate_end)()
    probe.send(b"one")
    h.log.wait_event("a", "blocked")
    began = time.monotonic()
    dispatcher.join(SETTLE)  # a handler runs
    assert time.monotonic() - began >= SETTLE and dispatcher.is_alive()
    probe.end("closed")
    gate_frame.set()
    h.log.wait_event("a", "end", "closed")
    began = time.monotonic()
    dispatcher.join(SETTLE)  # on_end runs
    assert time.monotonic() - began >= SETTLE and dispatcher.is_alive()
    forever = h.call(lambda: (dispatcher.join(None), dispatcher.is_alive())[1])
    bounded = h.call(lambda: (dispatcher.join(BOUND), dispatcher.is_alive())[1])
    assert not forever.done.wait(SETTLE)
    assert not bounded.done.is_set()
    gate_end.set()
    assert forever.wait() is False  # join(None) returned once on_end had returned and its thread ended
    assert bounded.wait() is False
    assert threads_named("avatarsdk-dispatch-") == []


def test_shared_slot_join_and_is_alive_wait_for_the_end_thread_itself(h: Harness) -> None:
    """on_end's thread sets the slot's done event as its last act. Here the event holds that thread just after it
    is set (the one private hook of these tests: nothing public stops a thread between two statements), so that
    ``join`` is seen to wait for the thread itself, within its timeout, and ``is_alive`` to see it."""
    probe = h.probe("a", h.shared(1))
    dispatcher = probe.dispatcher
    gate = h.gate()

    class LingeringDone(threading.Event):
        def set(self) -> None:
            super().set()
            h.log.add("a", "done")
            assert gate.wait(BOUND)

    dispatcher._done = LingeringDone()  # type: ignore[attr-defined]
    probe.send(b"one")
    probe.end("closed")
    h.log.wait_event("a", "done")
    assert dispatcher.is_alive()  # on_end returned None; its thread has not ended yet
    began = time.monotonic()
    h.call(dispatcher.join, SETTLE).wait()
    assert SETTLE <= time.monotonic() - began < 0.5
    assert dispatcher.is_alive()
    bounded = h.call(lambda: (dispatcher.join(BOUND), dispatcher.is_alive())[1])
    forever = h.call(lambda: (dispatcher.join(None), dispatcher.is_alive())[1])
    assert not bounded.done.wait(SETTLE)
    assert not forever.done.is_set()
    gate.set()
    assert bounded.wait() is False
    assert forever.wait() is False


def test_a_new_queue_is_held_until_on_end_returns_so_the_session_runs_on_one_worker(h: Harness) -> None:
    """Items put in a reconnected session's new queue while on_end runs must not schedule the session: it is
    scheduled once, when on_end returns. Scheduled twice, two workers would run its handlers at once."""
    shared = h.shared(2)
    s, x, y = (h.probe(label, shared) for label in "sxy")
    proceed, busy, held = h.gate(), h.gate(), h.gate()
    made: List[FrameQueue[Any]] = []

    def reconnect(value: Any) -> Optional[FrameQueue[Any]]:
        if value != "reconnect":
            return None
        assert proceed.wait(BOUND)
        following = s.dispatcher.new_queue()
        following.put_many([b"held"])
        made.append(following)
        return following

    s.end_hook = reconnect
    s.hooks[b"held"] = h.blocker("s", held)
    x.hooks[b"x"] = h.blocker("x", busy)
    y.hooks[b"y"] = h.blocker("y", busy)
    s.send(b"first")
    s.end("reconnect")
    h.log.wait_event("s", "end", "reconnect")
    x.send(b"x")
    y.send(b"y")
    h.log.wait_event("x", "blocked")
    h.log.wait_event("y", "blocked")  # both workers are busy while on_end fills the new queue and returns
    proceed.set()
    wait_until(lambda: made and threads_named("avatarsdk-dispatch-s") == [], "on_end's thread to end", BOUND)
    busy.set()
    h.log.wait_event("s", "blocked")  # a worker runs the held item's handler
    s.send(b"later")
    assert not h.log.within(SETTLE, "s", "frame", b"later")  # and the other worker runs nothing of s meanwhile
    held.set()
    h.log.wait_event("s", "frame", b"later")
    s.end(None)
    s.wait_end(None)
    assert h.log.of("s") == [
        ("frame", b"first"),
        ("end", "reconnect"),
        ("frame", b"held"),
        ("blocked",),
        ("frame", b"later"),
        ("end", None),
    ]


# ------------------------------------------------------------------------ the shared dispatcher's threads


def test_threads_is_the_most_workers_and_two_by_default() -> None:
    assert SharedDispatcher().threads == 2
    assert SharedDispatcher(1).threads == 1
    assert SharedDispatcher(threads=7).threads == 7


@pytest.mark.parametrize(
    ("threads", "error", "message"),
    [
        ("2", TypeError, "threads: expected an int, got str"),
        (2.0, TypeError, "threads: expected an int, got float"),
        (None, TypeError, "threads: expected an int, got NoneType"),
        (True, TypeError, "threads: expected an int, got bool"),
        (False, TypeError, "threads: expected an int, got bool"),
        (0, ValueError, "threads: expected at least 1, got 0"),
        (-3, ValueError, "threads: expected at least 1, got -3"),
    ],
)
def test_threads_must_be_an_int_of_at_least_one(threads: Any, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        SharedDispatcher(threads)
    assert str(info.value) == message


def test_repr_counts_the_running_workers(h: Harness) -> None:
    shared = h.shared(3)
    assert repr(shared) == "<SharedDispatcher threads=3 running=0>"
    gate = h.gate()
    probes = [h.probe(label, shared) for label in "ab"]
    for probe in probes:
        probe.hooks[b"x"] = h.blocker(probe.label, gate)
        probe.send(b"x")
    for probe in probes:
        h.log.wait_event(probe.label, "blocked")
    assert repr(shared) == "<SharedDispatcher threads=3 running=2>"
    gate.set()
    shared.close(BOUND)
    assert repr(shared) == "<SharedDispatcher threads=3 running=0>"


def test_context_manager_closes_the_workers(h: Harness) -> None:
    with SharedDispatcher(1) as shared:
        assert isinstance(shared, SharedDispatcher) and shared.threads == 1
        probe = h.probe("a", shared)
        probe.send(b"x")
        probe.end(None)
        probe.wait_end(None)
        assert threads_named("avatarsdk-shared-") == ["avatarsdk-shared-1"]
    assert threads_named("avatarsdk-shared-") == []
    assert repr(shared) == "<SharedDispatcher threads=1 running=0>"


def test_ready_sessions_wake_the_idle_workers_and_never_start_more_than_threads(h: Harness) -> None:
    shared = h.shared(3)
    gate1, gate2 = h.gate(), h.gate()
    first = [h.probe(f"s{n}", shared) for n in range(4)]
    for probe in first:
        probe.hooks[b"x"] = h.blocker(probe.label, gate1)
    for probe in first[:3]:
        probe.send(b"x")
    for probe in first[:3]:
        h.log.wait_event(probe.label, "blocked")
    workers = {probe.thread_names("frame")[0] for probe in first[:3]}
    assert workers == {"avatarsdk-shared-1", "avatarsdk-shared-2", "avatarsdk-shared-3"}
    first[3].send(b"x")  # every worker is busy: it waits, and no fourth worker starts
    assert threads_named("avatarsdk-shared-") == sorted(workers)
    assert not h.log.within(SETTLE, "s3", "blocked")
    assert idle(shared) == 0
    gate1.set()
    h.log.wait_event("s3", "blocked")
    wait_until(lambda: idle(shared) == 3, "3 idle workers", BOUND)
    threads_before = {thread for probe in first for _, thread in probe.threads}
    assert len(threads_before) == 3

    # Three idle workers, three sessions ready at once: the three are woken (none started), all busy at once.
    second = [h.probe(f"t{n}", shared) for n in range(3)]
    for probe in second:
        probe.hooks[b"y"] = h.blocker(probe.label, gate2)
        probe.send(b"y")
    for probe in second:
        h.log.wait_event(probe.label, "blocked")
    assert {thread for probe in second for _, thread in probe.threads} == threads_before  # the same workers
    assert idle(shared) == 0
    assert threads_named("avatarsdk-shared-") == sorted(workers)
    gate2.set()
    wait_until(lambda: idle(shared) == 3, "3 idle workers again", BOUND)
    assert repr(shared) == "<SharedDispatcher threads=3 running=3>"


def test_one_ready_session_takes_one_of_the_idle_workers(h: Harness) -> None:
    shared = h.shared(3)
    warm = [h.probe(f"w{n}", shared) for n in range(3)]
    gate = h.gate()
    for probe in warm:
        probe.hooks[b"x"] = h.blocker(probe.label, gate)
        probe.send(b"x")
    for probe in warm:
        h.log.wait_event(probe.label, "blocked")
    gate.set()
    wait_until(lambda: idle(shared) == 3, "3 idle workers", BOUND)
    gate_a = h.gate()
    probe = h.probe("a", shared)
    probe.hooks[b"a1"] = h.blocker("a", gate_a)
    probe.send(b"a1")
    h.log.wait_event("a", "blocked")
    assert idle(shared) == 2  # exactly one woken
    gate_a.set()
    wait_until(lambda: idle(shared) == 3, "the worker idle again", BOUND)
    assert threads_named("avatarsdk-shared-") == ["avatarsdk-shared-1", "avatarsdk-shared-2", "avatarsdk-shared-3"]


def test_one_worker_serves_ready_sessions_in_arrival_order(h: Harness) -> None:
    shared = h.shared(1)
    gate = h.gate()
    a, b, c = (h.probe(label, shared) for label in "abc")
    a.hooks[b"a1"] = h.blocker("a", gate)
    a.send(b"a1")
    h.log.wait_event("a", "blocked")
    b.send(b"b1")
    c.send(b"c1")
    a.send(b"a2")  # more for a while it is handled: a goes behind the sessions already waiting
    b.send(b"b2")
    gate.set()
    h.log.wait_for(lambda: len(h.log.events) == 6, "6 events")
    assert [event for event in h.log.events if event[1] == "frame"] == [
        ("a", "frame", b"a1"),
        ("b", "frame", b"b1"),
        ("b", "frame", b"b2"),
        ("c", "frame", b"c1"),
        ("a", "frame", b"a2"),
    ]
    names = {name for probe in (a, b, c) for name in probe.thread_names("frame")}
    assert names == {"avatarsdk-shared-1"}


def test_close_stops_the_workers_and_later_frames_start_them_again(h: Harness) -> None:
    shared = h.shared(2)
    gate = h.gate()
    a, b = h.probe("a", shared), h.probe("b", shared)
    for probe in (a, b):
        probe.hooks[b"x"] = h.blocker(probe.label, gate)
        probe.send(b"x")
    for probe in (a, b):
        h.log.wait_event(probe.label, "blocked")
    gate.set()
    wait_until(lambda: idle(shared) == 2, "2 idle workers", BOUND)
    shared.close()
    assert threads_named("avatarsdk-shared-") == []
    assert repr(shared) == "<SharedDispatcher threads=2 running=0>"
    assert idle(shared) == 0
    a.send(b"again")  # the sessions go on: a worker starts again, and stays for later frames
    h.log.wait_event("a", "frame", b"again")
    wait_until(lambda: idle(shared) == 1, "the new worker idle", BOUND)
    assert threads_named("avatarsdk-shared-") == ["avatarsdk-shared-1"]
    b.send(b"more")
    h.log.wait_event("b", "frame", b"more")
    assert b.thread_names("frame")[-1] == "avatarsdk-shared-1"
    wait_until(lambda: idle(shared) == 1, "the worker idle again", BOUND)
    assert threads_named("avatarsdk-shared-") == ["avatarsdk-shared-1"]
    for probe in (a, b):
        probe.end(None)
        probe.wait_end(None)
    shared.close(BOUND)
    assert threads_named("avatarsdk-shared-") == []


def test_close_serves_the_ready_sessions_before_stopping(h: Harness) -> None:
    shared = h.shared(1)
    gate = h.gate()
    a, b = h.probe("a", shared), h.probe("b", shared)
    a.hooks[b"a1"] = h.blocker("a", gate)
    a.send(b"a1")
    h.log.wait_event("a", "blocked")
    b.send(b"b1")
    closing = h.call(lambda: (shared.close(None), h.log.add("test", "closed"))[1])
    assert not closing.done.wait(SETTLE)  # the worker is busy, and b waits for it
    gate.set()
    closing.wait()
    assert [event[:2] for event in h.log.events] == [
        ("a", "frame"),
        ("a", "blocked"),
        ("b", "frame"),
        ("test", "closed"),
    ]
    assert threads_named("avatarsdk-shared-") == []


def test_close_with_a_timeout_leaves_a_busy_worker_and_a_new_one_takes_the_free_name(h: Harness) -> None:
    shared = h.shared(2)
    gate_busy, gate_b = h.gate(), h.gate()
    busy, b = h.probe("busy", shared), h.probe("b", shared)
    busy.hooks[b"x"] = h.blocker("busy", gate_busy)
    b.hooks[b"x"] = h.blocker("b", gate_b)
    busy.send(b"x")
    b.send(b"x")
    h.log.wait_event("busy", "blocked")
    h.log.wait_event("b", "blocked")
    gate_b.set()
    wait_until(lambda: idle(shared) == 1, "the other worker idle", BOUND)
    busy_name = busy.thread_names("frame")[0]
    free_name = ({"avatarsdk-shared-1", "avatarsdk-shared-2"} - {busy_name}).pop()
    began = time.monotonic()
    h.call(shared.close, SETTLE).wait()  # the idle worker stops; the busy one is waited for SETTLE seconds
    assert time.monotonic() - began >= SETTLE
    assert threads_named("avatarsdk-shared-") == [busy_name]
    assert repr(shared) == "<SharedDispatcher threads=2 running=1>"
    c = h.probe("c", shared)
    c.send(b"c1")  # one worker of two is left, and it is busy: a second one starts, with the free number
    h.log.wait_event("c", "frame", b"c1")
    assert c.thread_names("frame") == [free_name]
    assert threads_named("avatarsdk-shared-") == ["avatarsdk-shared-1", "avatarsdk-shared-2"]
    gate_busy.set()
    wait_until(lambda: idle(shared) == 2, "both workers idle", BOUND)


def test_close_from_a_handler_returns_and_its_worker_goes_on(h: Harness) -> None:
    shared = h.shared(2)
    gate = h.gate()
    a, b = h.probe("a", shared), h.probe("b", shared)
    b.hooks[b"x"] = h.blocker("b", gate)
    a.hooks[b"x"] = h.blocker("a", gate)
    for probe in (a, b):
        probe.send(b"x")
    for probe in (a, b):
        h.log.wait_event(probe.label, "blocked")
    gate.set()
    wait_until(lambda: idle(shared) == 2, "2 idle workers", BOUND)

    def close_here() -> None:
        try:
            shared.close(BOUND)  # must not wait for the worker it runs on
        except BaseException as exc:  # recorded: the handler's own exceptions would only be logged
            h.log.add("a", "close raised", type(exc).__name__)
        else:
            h.log.add("a", "close returned", threading.current_thread().name in threads_named("avatarsdk-shared-"))

    a.hooks[b"close"] = close_here
    a.send(b"close")
    h.log.wait_event("a", "close returned", True)
    closer = a.thread_names("frame")[-1]
    wait_until(lambda: threads_named("avatarsdk-shared-") == [closer], "the other worker to stop", BOUND)
    a.send(b"after")
    h.log.wait_event("a", "frame", b"after")
    assert a.thread_names("frame")[-1] == closer


def test_a_forked_child_starts_workers_of_its_own(h: Harness) -> None:
    shared = h.shared(1)
    parent = h.probe("parent", shared)
    parent.send(b"p1")
    h.log.wait_event("parent", "frame", b"p1")
    wait_until(lambda: idle(shared) == 1, "the parent's worker idle", BOUND)

    def child() -> Dict[str, Any]:
        # The parent's worker does not exist here, and its idle count is not ours: the child starts its own.
        probe = h.probe("child", shared)
        probe.send(b"c1", b"c2")
        probe.end("end")
        probe.wait_end("end")
        running = repr(shared)
        shared.close(BOUND)
        return {
            "events": [list(map(repr, event)) for event in h.log.of("child")],
            "names": probe.thread_names("frame"),
            "running": running,
            "after": repr(shared),
            "left": threads_named("avatarsdk-"),
        }

    report = in_forked_child(child)
    assert report == {
        "events": [["'frame'", "b'c1'"], ["'frame'", "b'c2'"], ["'end'", "'end'"]],
        "names": ["avatarsdk-shared-1", "avatarsdk-shared-1"],
        "running": "<SharedDispatcher threads=1 running=1>",
        "after": "<SharedDispatcher threads=1 running=0>",
        "left": [],
    }
    # The parent's dispatcher is untouched: its worker still serves it.
    parent.send(b"p2")
    h.log.wait_event("parent", "frame", b"p2")
    assert parent.thread_names("frame") == ["avatarsdk-shared-1", "avatarsdk-shared-1"]


def test_close_in_a_forked_child_forgets_the_parents_workers(h: Harness) -> None:
    shared = h.shared(2)
    probe = h.probe("parent", shared)
    probe.send(b"p1")
    h.log.wait_event("parent", "frame", b"p1")

    def child() -> Dict[str, Any]:
        before = repr(shared)
        shared.close(BOUND)
        return {"before": before, "after": repr(shared)}

    assert in_forked_child(child) == {
        "before": "<SharedDispatcher threads=2 running=1>",  # the parent's worker, which the child lacks
        "after": "<SharedDispatcher threads=2 running=0>",
    }
    assert repr(shared) == "<SharedDispatcher threads=2 running=1>"


@contextlib.contextmanager
def faulty_log_filter(*, end_the_worker: bool = False) -> Iterator[None]:
    """A filter on the dispatcher's logger that raises while a handler's error is logged (once): an exception
    that escapes the batch. With ``end_the_worker``, also SystemExit while the worker logs that: it ends the
    worker."""
    raised: List[str] = []

    def faulty(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("internal error while dispatching") and not raised:
            raised.append(message)
            raise LookupError("the filter failed")
        if end_the_worker and message.startswith("internal error in a shared dispatcher thread"):
            raise SystemExit(0)
        return True

    logger = logging.getLogger(LOGGER)
    logger.addFilter(faulty)
    try:
        yield
    finally:
        logger.removeFilter(faulty)


def handler_fails() -> None:
    raise RuntimeError("handler failed")


def test_an_exception_escaping_a_batch_is_logged_and_the_worker_goes_on(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """_drain catches what handlers raise; what escapes it anyway (here: a logging filter that raises while the
    handler's error is logged) is logged by the worker, which goes on serving the other sessions."""
    shared = h.shared(1)
    a, b = h.probe("a", shared), h.probe("b", shared)
    a.hooks[b"bad"] = handler_fails
    with faulty_log_filter(), caplog.at_level(logging.ERROR, logger=LOGGER):
        a.send(b"bad")
        h.log.wait_event("a", "frame", b"bad")
        b.send(b"b1")
        h.log.wait_event("b", "frame", b"b1")
    assert exc_records(caplog) == [("internal error in a shared dispatcher thread; continuing", LookupError)]
    assert b.thread_names("frame") == a.thread_names("frame") == ["avatarsdk-shared-1"]


def test_a_session_whose_batch_raised_past_drain_is_served_again(h: Harness) -> None:
    shared = h.shared(1)
    a = h.probe("a", shared)
    a.hooks[b"bad"] = handler_fails
    with faulty_log_filter():
        a.send(b"bad")
        h.log.wait_event("a", "frame", b"bad")
        wait_until(lambda: idle(shared) == 1, "the worker to go on", BOUND)
    a.send(b"more")
    assert h.log.within(0.5, "a", "frame", b"more"), "a's later frame was never handled"


def test_sys_exit_in_a_handler_ends_neither_the_worker_nor_the_session(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback calling sys.exit() (SystemExit) would only end the thread it runs on: it is logged like any
    failing callback, and the shared worker goes on with this session and the others."""
    shared = h.shared(1)
    a, b = h.probe("a", shared), h.probe("b", shared)

    def exits() -> None:
        raise SystemExit(0)

    a.hooks[b"exit"] = exits
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        a.send(b"exit")
        h.log.wait_event("a", "frame", b"exit")
        b.send(b"b1")
        h.log.wait_event("b", "frame", b"b1")
        a.send(b"a2")
        h.log.wait_event("a", "frame", b"a2")
    assert exc_records(caplog) == [("internal error while dispatching; continuing", SystemExit)]
    assert threads_named("avatarsdk-shared-") == ["avatarsdk-shared-1"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the worker's SystemExit
def test_a_worker_that_ends_is_replaced_for_the_sessions_still_ready(h: Harness) -> None:
    """Whatever ends a shared worker (here a logging filter raising SystemExit while the worker logs a fault),
    it stops counting as a worker, and a session still ready gets a new one: nothing waits forever."""
    shared = h.shared(1)
    a, b = h.probe("a", shared), h.probe("b", shared)

    def fails() -> None:
        b.send(b"b1")  # b is ready while a's batch is being handled
        handler_fails()

    a.hooks[b"bad"] = fails
    with faulty_log_filter(end_the_worker=True):
        a.send(b"bad")
        h.log.wait_event("a", "frame", b"bad")
        h.log.wait_event("b", "frame", b"b1")  # on the replacement
    a.send(b"a2")
    h.log.wait_event("a", "frame", b"a2")
    assert b.thread_names("frame") == a.thread_names("frame")[1:] == ["avatarsdk-shared-1"]
    assert a.threads[0][1] is not b.threads[0][1]  # a new thread, with the free name
    wait_until(lambda: len(threads_named("avatarsdk-shared-")) == 1, "one worker", BOUND)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the worker's SystemExit
def test_a_worker_that_ends_with_nothing_ready_is_not_replaced(h: Harness) -> None:
    shared = h.shared(2)
    a = h.probe("a", shared)
    a.hooks[b"bad"] = handler_fails
    with faulty_log_filter(end_the_worker=True):
        a.send(b"bad")
        h.log.wait_event("a", "frame", b"bad")
        wait_until(lambda: threads_named("avatarsdk-shared-") == [], "the worker to end", BOUND)
    assert not h.log.within(0.05, "no", "event")  # a moment for a replacement that must not come
    assert threads_named("avatarsdk-shared-") == [] and "running=0" in repr(shared)
    a.send(b"a2")  # a later frame starts a worker again
    h.log.wait_event("a", "frame", b"a2")
