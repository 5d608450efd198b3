"""Concurrency limiters: at most ``limit`` sessions connected at once, in one process or across many.

The service caps a plan's concurrent sessions and refuses the next one (``concurrencyLimit``). A session given
a ``limiter=`` takes a slot before its token call and gives it back once its connection has closed, so the
service never sees more sessions than the slots. :class:`Limiter` is the protocol a session uses;
:class:`LocalLimiter` counts the threads of one process, :class:`~avatarsdk.RedisLimiter` (``_redis_limiter``)
the processes and hosts that share one Redis. This module also resets the limiters in a forked child: the
parent's slots are the parent's.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections import deque
from typing import Any, Deque, Optional, Protocol, Set, runtime_checkable

from ._deadline import Deadline
from ._redis_limiter import RedisLimiter
from ._validation import check_int

__all__ = ["Limiter", "LocalLimiter", "RedisLimiter"]


@runtime_checkable
class Limiter(Protocol):
    """What a session needs from a limiter (bring your own: any object with these two methods).

    Thread-safety: both methods are called from any thread, concurrently.
    """

    def acquire(self, timeout: Optional[float]) -> Optional[object]:
        """Wait up to ``timeout`` seconds (``None``: no limit; ``0``: do not wait) for a slot and return it, or
        return ``None`` when the time is up. Waiters should be served first come, first served. An exception
        (the limiter's store unreachable, say) goes to the session's caller as it is."""
        ...

    def release(self, slot: Any) -> None:
        """Give back ``slot`` (returned by :meth:`acquire`). Called once per slot; should not raise."""
        ...


class _Slot:
    """A slot of a :class:`LocalLimiter`: its identity is the slot (a number alone could repeat after a fork)."""

    __slots__ = ("number",)

    def __init__(self, number: int) -> None:
        self.number = number

    def __repr__(self) -> str:
        return f"<slot {self.number}>"


class LocalLimiter:
    """At most ``limit`` slots held at once by the threads of this process, waiters served in arrival order.

    One per process: every session (and pool) of the process given the same limiter shares its ``limit``.
    Several processes (pre-fork servers, several hosts) need a :class:`~avatarsdk.RedisLimiter` instead; a
    ``LocalLimiter`` inherited by a forked child starts empty there, with the same limit.

    Args:
        limit: How many slots (sessions) at once, at least 1.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, limit: int) -> None:
        if check_int("limit", limit) < 1:
            raise ValueError(f"limit: expected at least 1 concurrent session, got {limit!r}")
        self._limit = limit
        self._reset()
        _made.add(self)

    def _reset(self) -> None:
        self._lock = threading.RLock()  # `with` takes this, not the condition (ARCHITECTURE.md, Locks)
        self._cond = threading.Condition(self._lock)  # over the held slots and the queue
        self._held: Set[_Slot] = set()
        self._queue: Deque[object] = deque()  # the waiters' tickets, first come first
        self._numbers = itertools.count(1)

    @property
    def limit(self) -> int:
        return self._limit

    def in_use(self) -> int:
        """Slots held now."""
        with self._lock:
            return len(self._held)

    def waiting(self) -> int:
        """Callers waiting for a slot now."""
        with self._lock:
            return len(self._queue)

    def acquire(self, timeout: Optional[float] = None) -> Optional[object]:
        """A slot, waiting up to ``timeout`` seconds (``None``: no limit), or ``None`` when the time is up."""
        deadline = Deadline(timeout)
        ticket = object()
        with self._lock:
            self._queue.append(ticket)
            try:
                while True:
                    # First come first served: a waiter goes only if everyone ahead of it fits too.
                    if self._queue.index(ticket) < self._limit - len(self._held):
                        slot = _Slot(next(self._numbers))
                        self._held.add(slot)
                        return slot
                    remaining = deadline.remaining()
                    if remaining is not None and remaining <= 0:
                        return None
                    self._cond.wait(remaining)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the waiters behind it may fit now

    def release(self, slot: Any) -> None:
        """Give ``slot`` back; a slot not held (given back already, or a parent's after a fork) is ignored."""
        with self._lock:
            if slot in self._held:
                self._held.discard(slot)
                self._cond.notify_all()

    def __repr__(self) -> str:
        return f"LocalLimiter(limit={self._limit})"


_made: weakref.WeakSet[LocalLimiter] = weakref.WeakSet()


def _reset_in_child() -> None:
    for limiter in list(_made):
        limiter._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
