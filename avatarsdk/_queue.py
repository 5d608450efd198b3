"""The bounded queue between a session's reader thread and its dispatcher, without threads of its own.

The reader appends what it received (binary payloads, :class:`TextFrame` markers, then the end of the stream);
the dispatcher takes everything waiting at once. The queue is bounded by messages and by bytes: a full queue
blocks the reader, so a consumer slower than the stream pushes back on TCP instead of growing memory. The
consumer is told of new items through one callback, so the reader never needs to know what consumes them.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Deque, Generic, List, NamedTuple, Optional, TypeVar

from ._deadline import Deadline

E = TypeVar("E")


class Backlog(NamedTuple):
    """Received messages waiting for a session's callbacks."""

    messages: int
    bytes: int


class TextFrame:
    """A text WebSocket message (the protocol only uses binary ones); only its size is kept."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


class End(Generic[E]):
    """The last item of a queue: why the stream ended."""

    __slots__ = ("value",)

    def __init__(self, value: E) -> None:
        self.value = value


class FrameQueue(Generic[E]):
    """A bounded FIFO for one producer (the reader) and one consumer (a dispatcher).

    ``put_many`` blocks while ``maxsize`` messages, or ``maxbytes`` bytes of them, are waiting, until the
    consumer takes them or ``release()`` is called; a batch that would pass the byte bound waits for the queue
    to empty, then goes in alone (so one message larger than the bound still passes). ``put_end`` never blocks
    and is the last item.

    ``notify`` is called (outside the lock) when items arrive while the consumer has not been told of any:
    once for a consumer thread blocked in ``get_batch`` (it starts that thread), each time for a shared
    consumer, which takes items with ``take`` and then asks ``more``. A ``held`` queue calls ``notify`` only
    after a first ``more``.
    """

    def __init__(
        self,
        maxsize: int,
        maxbytes: int,
        *,
        notify: Optional[Callable[[], None]] = None,
        held: bool = False,
    ) -> None:
        self._items: Deque[Any] = deque()
        self._bytes = 0
        self._maxsize = maxsize
        self._maxbytes = maxbytes
        self._lock = threading.Lock()  # `with` takes this, not the condition (ARCHITECTURE.md, Locks)
        self._cond = threading.Condition(self._lock)
        self._released = False
        self._consumer_waiting = False
        self._producer_waiting = False
        self._notify = notify
        self._signalled = held  # the consumer knows of the waiting items (or is held off)

    def put_many(self, items: List[Any]) -> None:
        """Append ``items`` in order; blocks first while the queue is full (it may then exceed ``maxsize``
        by up to ``len(items)``: one block of the socket's bytes is queued at once)."""
        size = sum(map(len, items))
        with self._lock:
            while (
                len(self._items) >= self._maxsize or (self._bytes and self._bytes + size > self._maxbytes)
            ) and not self._released:
                self._producer_waiting = True
                self._cond.wait()
            self._items.extend(items)
            self._bytes += size
            if self._consumer_waiting:
                self._consumer_waiting = False
                self._cond.notify_all()
            notify = None if self._signalled else self._notify
            self._signalled = True
        if notify is not None:
            notify()

    def put_end(self, value: E) -> None:
        with self._lock:
            self._items.append(End(value))
            self._consumer_waiting = False
            self._cond.notify_all()
            notify = None if self._signalled else self._notify
            self._signalled = True
        if notify is not None:
            notify()

    def take(self) -> Deque[Any]:
        """Every waiting item, oldest first (maybe none); never blocks. For a shared consumer."""
        with self._lock:
            return self._take_locked()

    def _take_locked(self) -> Deque[Any]:
        batch = self._items
        self._items = deque()
        self._bytes = 0
        if self._producer_waiting:
            self._producer_waiting = False
            self._cond.notify_all()
        return batch

    def more(self) -> bool:
        """After ``take``: whether items came meanwhile (the consumer stays signalled and comes back for them);
        if not, the next item calls ``notify`` again."""
        with self._lock:
            if self._items:
                return True
            self._signalled = False
            return False

    def release(self) -> None:
        """Let a blocked ``put_many`` through, now and from now on (the session is closing)."""
        with self._lock:
            self._released = True
            self._cond.notify_all()

    def get_batch(self) -> Deque[Any]:
        """Every waiting item, oldest first; blocks until there is at least one."""
        with self._lock:
            while not self._items:
                self._consumer_waiting = True
                self._cond.wait()
            return self._take_locked()

    def wait_end(self, timeout: float) -> Optional[E]:
        """For the consumer: the end's value once it is queued (waiting up to ``timeout`` seconds for it), or
        ``None``. Nothing is taken."""
        deadline = Deadline(timeout)
        with self._lock:
            while not (self._items and isinstance(self._items[-1], End)):
                remaining = deadline.remaining() or 0.0  # (a number: timeout is one)
                if remaining <= 0:
                    return None
                self._consumer_waiting = True
                self._cond.wait(remaining)
            return self._items[-1].value  # type: ignore[no-any-return]

    def backlog(self) -> Backlog:
        """What is waiting now: messages (the end not counted) and their bytes."""
        with self._lock:
            count = len(self._items)
            if count and isinstance(self._items[-1], End):
                count -= 1
            return Backlog(count, self._bytes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
