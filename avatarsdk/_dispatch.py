"""The dispatchers: they take a session's received messages off its :class:`~avatarsdk._queue.FrameQueue` and
run the session's handlers (which call user callbacks) in arrival order, outside every lock.

A session's dispatcher is its own thread by default. With a :class:`SharedDispatcher`, the dispatchers of many
sessions run on a few shared threads instead: a session is scheduled when its queue gets items, and a worker
takes one batch of it at a time (never two workers for one session, so each session's order holds). With
hundreds of sessions this saves a thread and a wakeup per frame and session: every busy worker takes the next
ready session without sleeping.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable, Deque, Generic, List, Optional, Tuple, TypeVar

from ._deadline import Deadline
from ._fork import process_generation
from ._queue import End, FrameQueue, TextFrame

logger = logging.getLogger(__name__)

E = TypeVar("E")

#: What a user callback may raise without ending anything: every ``Exception``, and ``SystemExit`` (a callback's
#: ``sys.exit()`` would only end the SDK's thread it runs on). It is logged, and the session carries on.
CALLBACK_FAULTS = (Exception, SystemExit)


def safe_call(label: str, fn: Optional[Callable[..., Any]], *args: Any) -> None:
    """Call a user callback; log (never raise) what it raises."""
    if fn is None:
        return
    try:
        fn(*args)
    except CALLBACK_FAULTS:
        logger.exception("%s callback raised; the session carries on", label)


class Dispatcher(Generic[E]):
    """Takes items off a session's :class:`FrameQueue` and hands them to the session's handlers.

    ``on_frame(bytes)`` for binary messages, ``on_text(TextFrame)`` for text ones, then ``on_end(value)``
    with the value given to ``put_end``. The dispatcher ends after ``on_end`` returns, unless it returns a new
    queue (a reconnected session's, made by :meth:`new_queue`): it then goes on with that one. Made by
    :func:`new_dispatcher`: a :class:`_ThreadDispatcher` (the session's own thread) or a
    :class:`_SharedSlot` (a :class:`SharedDispatcher`'s threads).
    """

    def __init__(
        self,
        *,
        limits: Tuple[int, int],
        on_frame: Callable[[bytes], None],
        on_text: Callable[[TextFrame], None],
        on_end: Callable[[E], Optional[FrameQueue[E]]],
        name: str,
    ) -> None:
        self._limits = limits  # (messages, bytes) each queue holds at most
        self._on_frame = on_frame
        self._on_text = on_text
        self._on_end = on_end
        self._batch: Deque[Any] = deque()  # the batch being handled
        self._name = name
        self.started = False  # a first item arrived (its queue told the dispatcher)
        self.queue: FrameQueue[E] = self.new_queue(first=True)

    @property
    def name(self) -> str:
        return self._name

    def new_queue(self, *, first: bool = False) -> FrameQueue[E]:
        """A queue for this dispatcher: the first one, or the one ``on_end`` returns (a reconnected session's).
        The queue tells the dispatcher of its items: the reader only fills it."""
        raise NotImplementedError

    def join(self, timeout: Optional[float]) -> None:
        """Wait (at most ``timeout`` seconds) until the dispatcher has ended, if it was started."""
        raise NotImplementedError

    def is_alive(self) -> bool:
        raise NotImplementedError

    def is_current(self) -> bool:
        """Whether ``close()`` on the calling thread must not wait for this dispatcher (a callback is calling)."""
        raise NotImplementedError

    def _handle(self, batch: Deque[Any]) -> Optional[End[E]]:
        """Run the handlers for ``batch``, in order; return its end, if it holds one (always its last item)."""
        self._batch = batch
        on_frame = self._on_frame
        for item in batch:
            try:
                if type(item) is bytes:
                    on_frame(item)
                elif isinstance(item, End):
                    return item
                else:
                    self._on_text(item)
            except CALLBACK_FAULTS:
                logger.exception("internal error while dispatching; continuing")
        return None

    def peek_end(self, timeout: float) -> Optional[E]:
        """For a handler: the end of the stream, if it is already received (later in the batch being handled, or
        queued) or arrives within ``timeout`` seconds; ``None`` otherwise. Nothing is taken."""
        batch = self._batch
        if batch and isinstance(batch[-1], End):  # an end is always the last item of its batch
            return batch[-1].value  # type: ignore[no-any-return]
        return self.queue.wait_end(timeout)

    def _end(self, end: End[E]) -> Optional[FrameQueue[E]]:
        """``on_end``: the queue to go on with, or ``None`` when the dispatcher is done."""
        try:
            return self._on_end(end.value)
        except Exception:
            logger.exception("internal error while ending the dispatch")
            return None


def new_dispatcher(
    shared: Optional[SharedDispatcher],
    *,
    limits: Tuple[int, int],
    on_frame: Callable[[bytes], None],
    on_text: Callable[[TextFrame], None],
    on_end: Callable[[E], Optional[FrameQueue[E]]],
    name: str,
) -> Dispatcher[E]:
    """A session's dispatcher: on ``shared``'s threads, or (``None``) on a thread of its own."""
    handlers = {"on_frame": on_frame, "on_text": on_text, "on_end": on_end, "name": name}
    if shared is None:
        return _ThreadDispatcher(limits=limits, **handlers)
    return _SharedSlot(shared, limits=limits, **handlers)


class _ThreadDispatcher(Dispatcher[E]):
    """The session's own thread, started with the first item, blocked in ``get_batch`` between items."""

    def __init__(self, **kwargs: Any) -> None:
        self._thread: Optional[threading.Thread] = None  # created when the first item arrives
        self._start_lock = threading.Lock()
        super().__init__(**kwargs)

    def new_queue(self, *, first: bool = False) -> FrameQueue[E]:
        return FrameQueue(*self._limits, notify=self._start)

    def _start(self) -> None:
        """The queue's first item: start the thread (an idle session has only its reader thread)."""
        with self._start_lock:
            if not self.started:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
                self.started = True

    def join(self, timeout: Optional[float]) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def is_current(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _run(self) -> None:
        while True:
            end = self._handle(self.queue.get_batch())
            if end is not None:
                following = self._end(end)
                if following is None:
                    return
                self.queue = following  # the end is a queue's last item: nothing of the batch is left


class _SharedSlot(Dispatcher[E]):
    """A session's place on a :class:`SharedDispatcher`: scheduled when its queue gets items, drained one batch
    at a time by a shared thread. ``on_end`` runs on a thread of its own (it may block: a reconnect, the user's
    ``on_close``), so that it never holds a shared thread; a reconnected session's new queue is held until
    ``on_end`` returns, so that nothing of it is handled before."""

    def __init__(self, shared: SharedDispatcher, **kwargs: Any) -> None:
        self._shared = shared
        self._running: Optional[threading.Thread] = None  # the thread running this session's handlers
        self._end_thread: Optional[threading.Thread] = None
        self._done = threading.Event()  # on_end returned None
        super().__init__(**kwargs)

    def new_queue(self, *, first: bool = False) -> FrameQueue[E]:
        return FrameQueue(*self._limits, notify=self._schedule, held=not first)

    def join(self, timeout: Optional[float]) -> None:
        if not self.started:
            return
        deadline = Deadline(timeout)
        if self._done.wait(timeout) and self._end_thread is not None:  # its last act was to set _done
            self._end_thread.join(deadline.remaining())

    def is_alive(self) -> bool:
        if not self.started:
            return False
        thread = self._end_thread
        return not self._done.is_set() or (thread is not None and thread.is_alive())

    def is_current(self) -> bool:
        # Any shared thread counts: its callback must not wait for this session, which may need that very thread.
        current = threading.current_thread()
        return self._running is current or current in self._shared._workers

    def _schedule(self) -> None:
        self.started = True
        self._shared._schedule(self)

    def _drain(self) -> None:
        """On a shared thread: handle one batch, then stay scheduled if more came, or hand the end over. Whatever
        escapes, the session is never left signalled but unscheduled (its later items would never be handled)."""
        queue = self.queue
        self._running = threading.current_thread()
        end: Optional[End[E]] = None
        try:
            end = self._handle(queue.take())
        finally:
            self._running = None
            if end is not None:  # the queue's last item: the session stays scheduled until on_end returns
                self._end_thread = threading.Thread(target=self._finish, args=(end,), name=self._name, daemon=True)
                self._end_thread.start()
            elif queue.more():
                self._schedule()  # behind the sessions already waiting

    def _finish(self, end: End[E]) -> None:
        self._running = threading.current_thread()
        try:
            following = self._end(end)
        finally:
            self._running = None
        if following is None:
            self._done.set()
            return
        self.queue = following
        if following.more():  # the hold ends: what came meanwhile is scheduled
            self._schedule()


class SharedDispatcher:
    """Runs the callbacks of many sessions on a few shared threads instead of one thread per session.

    Give it to sessions (``dispatcher=`` of :class:`~avatarsdk.AvatarSession`, :func:`~avatarsdk.new_avatar_session`
    or :class:`~avatarsdk.SessionPool`) when one process runs hundreds of sessions: each frame then costs a
    fraction of a thread wakeup instead of two, and the process runs about half the threads. Each session's
    callbacks still run one at a time, in arrival order, outside every lock; those of different sessions may
    run at the same time on different threads. ``on_close`` and a reconnect run on a short-lived thread of
    their own, never on a shared one.

    A callback that blocks holds one of the threads: the other sessions go on with the rest, and when all of
    them are blocked every session's frames wait in its queue (then, past ``max_queued_frames``, in TCP), never
    dropped. Keep callbacks short (forward the frame and return), or use a session's own thread (the default).
    A ``close()`` called on a shared thread (from any session's callback) returns at once, as from a session's
    own callback: waiting there for another session's callbacks could wait for the very thread it holds.

    Threads (``avatarsdk-shared-N``, daemon) start when frames first need them, up to ``threads``.
    :meth:`close` stops them once nothing is waiting (later frames start them again); it is also the exit of
    ``with SharedDispatcher() as dispatcher:``. Safe across ``fork()``: a child starts threads of its own.

    Args:
        threads: Most threads running callbacks at once (1 or more).
    """

    def __init__(self, threads: int = 2) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int):
            raise TypeError(f"threads: expected an int, got {type(threads).__name__}")
        if threads < 1:
            raise ValueError(f"threads: expected at least 1, got {threads!r}")
        self._max_threads = threads
        self._reset()

    def _reset(self) -> None:
        self._process = process_generation()
        self._lock = threading.Lock()  # `with` takes this, not the condition (ARCHITECTURE.md, Locks)
        self._cond = threading.Condition(self._lock)
        self._ready: Deque[_SharedSlot[Any]] = deque()
        self._workers: List[threading.Thread] = []  # read without the lock by _SharedSlot.is_current
        self._idle = 0  # workers waiting, not yet notified
        self._stopping = False

    @property
    def threads(self) -> int:
        """The most threads that run callbacks at once."""
        return self._max_threads

    def __repr__(self) -> str:
        return f"<SharedDispatcher threads={self._max_threads} running={len(self._workers)}>"

    def __enter__(self) -> SharedDispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _schedule(self, dispatcher: _SharedSlot[Any]) -> None:
        if self._process != process_generation():  # a forked child: the parent's threads and lock state are not ours
            self._reset()
        with self._lock:
            self._ready.append(dispatcher)
            if self._idle:
                self._idle -= 1
                self._cond.notify()
            elif len(self._workers) < self._max_threads:
                self._start_worker()

    def _start_worker(self) -> None:
        """One more worker, with the lowest free number (called with the lock held, below ``threads``)."""
        taken = {thread.name for thread in self._workers}
        number = next(n for n in range(1, self._max_threads + 1) if f"avatarsdk-shared-{n}" not in taken)
        thread = threading.Thread(target=self._work, name=f"avatarsdk-shared-{number}", daemon=True)
        self._workers.append(thread)
        thread.start()

    def _work(self) -> None:
        cond, ready = self._cond, self._ready
        try:
            while True:
                with cond:
                    while not ready:
                        if self._stopping:
                            return
                        self._idle += 1  # the notifier takes it back off
                        cond.wait()
                    dispatcher = ready.popleft()
                try:
                    dispatcher._drain()
                except Exception:  # _drain's handlers catch what callbacks raise; this keeps the thread
                    logger.exception("internal error in a shared dispatcher thread; continuing")
        finally:  # however the thread ends, it is no longer a worker; sessions still ready get a new one
            with cond:
                self._workers.remove(threading.current_thread())
                if ready and not self._stopping:
                    self._start_worker()

    def close(self, timeout: Optional[float] = None) -> None:
        """Stop the threads once nothing is waiting for them (at most ``timeout`` seconds each). Sessions
        still open may go on: their next frames start threads again."""
        if self._process != process_generation():
            self._reset()
            return
        with self._lock:
            self._stopping = True
            self._idle = 0
            self._cond.notify_all()
            workers = list(self._workers)
        for thread in workers:
            if thread is not threading.current_thread():
                thread.join(timeout)
        with self._lock:
            self._stopping = False
