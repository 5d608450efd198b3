"""The hand-off between the reader thread and user code: a bounded frame queue and the dispatcher thread.

The reader appends received payloads; the dispatcher takes them in batches, in arrival order, and runs the
handlers (which call user callbacks) outside every lock. A full queue blocks the reader, so a consumer slower
than the stream pushes back on TCP instead of growing memory.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable, Deque, Generic, List, Optional, TypeVar, Union

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUED = 4096
E = TypeVar("E")


class TextFrame:
    """A text WebSocket message (the protocol only uses binary ones); only its size is kept."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class _End(Generic[E]):
    __slots__ = ("value",)

    def __init__(self, value: E) -> None:
        self.value = value


Item = Union[bytes, TextFrame, "_End[Any]"]


class FrameQueue(Generic[E]):
    """A bounded FIFO for one producer (the reader) and one consumer (the dispatcher).

    ``put_many`` blocks while ``maxsize`` items are waiting, until the consumer takes them or ``release()``
    is called; ``put_end`` never blocks and is the last item.
    """

    def __init__(self, maxsize: int = DEFAULT_MAX_QUEUED) -> None:
        self._items: Deque[Any] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition(threading.Lock())
        self._released = False
        self._consumer_waiting = False
        self._producer_waiting = False

    def put_many(self, items: List[Any]) -> None:
        """Append ``items`` in order; blocks first while the queue is full (it may then exceed ``maxsize``
        by up to ``len(items)``: one block of the socket's bytes is queued at once)."""
        with self._cond:
            while len(self._items) >= self._maxsize and not self._released:
                self._producer_waiting = True
                self._cond.wait()
            self._items.extend(items)
            if self._consumer_waiting:
                self._consumer_waiting = False
                self._cond.notify_all()

    def put_end(self, value: E) -> None:
        with self._cond:
            self._items.append(_End(value))
            self._consumer_waiting = False
            self._cond.notify_all()

    def release(self) -> None:
        """Let a blocked ``put_many`` through, now and from now on (the session is closing)."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    def get_batch(self) -> Deque[Any]:
        """Every waiting item, oldest first; blocks until there is at least one."""
        with self._cond:
            while not self._items:
                self._consumer_waiting = True
                self._cond.wait()
            batch = self._items
            self._items = deque()
            if self._producer_waiting:
                self._producer_waiting = False
                self._cond.notify_all()
            return batch

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def safe_call(label: str, fn: Optional[Callable[..., Any]], *args: Any) -> None:
    """Call a user callback; log (never raise) what it raises."""
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        logger.exception("%s callback raised; the session carries on", label)


class Dispatcher(Generic[E]):
    """The thread that takes items off a :class:`FrameQueue` and hands them to the session's handlers.

    ``on_frame(bytes)`` for binary messages, ``on_text(TextFrame)`` for text ones, then ``on_end(value)``
    with the value given to ``put_end``. The thread ends after ``on_end`` returns, unless it returns a new
    queue (a reconnected session's): the thread then goes on with that one.
    """

    def __init__(
        self,
        queue: FrameQueue[E],
        *,
        on_frame: Callable[[bytes], None],
        on_text: Callable[[TextFrame], None],
        on_end: Callable[[E], Optional[FrameQueue[E]]],
        name: str,
    ) -> None:
        self._queue = queue
        self._on_frame = on_frame
        self._on_text = on_text
        self._on_end = on_end
        self._name = name
        self._thread: Optional[threading.Thread] = None  # created with the first start()
        self._start_lock = threading.Lock()
        self.started = False

    def start(self) -> None:
        """Start the thread (once; later calls do nothing)."""
        if self.started:
            return
        with self._start_lock:
            if not self.started:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
                self.started = True

    def join(self, timeout: Optional[float]) -> None:
        """Join the thread if it was started."""
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def name(self) -> str:
        return self._name

    def is_current(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _run(self) -> None:
        get_batch = self._queue.get_batch
        on_frame = self._on_frame
        while True:
            for item in get_batch():
                try:
                    if type(item) is bytes:
                        on_frame(item)
                    elif isinstance(item, _End):
                        following = self._on_end(item.value)
                        if following is None:
                            return
                        self._queue = following  # the end is a queue's last item: nothing of the batch is left
                        get_batch = following.get_batch
                    else:
                        self._on_text(item)
                except Exception:
                    logger.exception("internal error while dispatching; continuing")
