"""A session's concurrency slot: taken from its limiter before the token call, given back once its connection has
closed, never twice.

A session holds at most one slot: from ``init()`` (or a ``start()`` without one) until its end, whatever
ends it; a reconnect keeps it, because the dropped connection is closed before the next one is asked for. A
failed ``init()`` or ``start()`` gives it back (the session then holds no connection); so does a session dropped
unclosed before it started (``Core.drop_unused_slot``, from a finalizer).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, TypeVar

from ._fork import process_generation
from .errors import AvatarSDKErrorCode, SessionTokenError
from .limiter import Limiter

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SlotHolder:
    """The slot of one session (no slot ever without a ``limiter``)."""

    __slots__ = ("_cancel", "_done", "_held", "_limiter", "_lock", "_number", "_process", "_slot", "_timeout")

    def __init__(
        self, limiter: Optional[Limiter], timeout: Optional[float], *, cancel: threading.Event, number: int
    ) -> None:
        self._limiter = limiter
        self._timeout = timeout
        self._cancel = cancel  # set by close(): a slot that arrives after it goes back at once
        self._number = number
        self._lock = threading.Lock()  # over the fields below
        self._slot: Optional[object] = None
        self._held = False
        self._done = False  # the session has ended: no slot any more
        self._process = process_generation()  # a forked child never gives back its parent's slot

    @property
    def held(self) -> bool:
        return self._held

    def take(self, op: str) -> None:
        """Hold a slot (if not holding one already), waiting for it up to ``limiter_timeout``.

        Raises:
            SessionTokenError: no slot within ``limiter_timeout`` (code ``concurrencyLimit``, retryable), or the
                limiter's own error.
            ValueError: the session was closed meanwhile.
        """
        limiter = self._limiter
        if limiter is None:
            return
        with self._lock:
            if self._held:
                return
            if self._done:
                raise ValueError(f"{op}(): the session is closed")
        began = time.monotonic()
        slot = limiter.acquire(self._timeout)
        waited = time.monotonic() - began
        if slot is None:
            limit = "no time limit" if self._timeout is None else f"{self._timeout:g}s (limiter_timeout)"
            raise SessionTokenError(
                f"{op}(): no slot of {limiter!r} came free within {limit}: as many sessions as its limit are"
                " connected or starting; try again later",
                code=AvatarSDKErrorCode.concurrencyLimit,
                retryable=True,
            )
        with self._lock:
            closed = self._done or self._cancel.is_set()
            keep = not self._held and not closed
            if keep:
                self._slot, self._held, self._process = slot, True, process_generation()
        if keep:
            logger.debug("session #%d: took %r of %r after %.3fs", self._number, slot, limiter, waited)
            return
        limiter.release(slot)  # another call took one meanwhile, or close() came while this one waited
        if closed:
            raise ValueError(f"{op}(): the session was closed while waiting for a slot of {limiter!r}")

    def around(self, op: str, call: Callable[[], T]) -> T:
        """:meth:`take` a slot, then ``call()`` (the token call); if it fails, give the slot back."""
        self.take(op)
        try:
            return call()
        except BaseException:
            self.give_back()
            raise

    def give_back(self, *, final: bool = False) -> None:
        """Give the slot back, if one is held (``final``: the session has ended, it takes none again). Never
        raises: a limiter's failure is logged."""
        with self._lock:
            slot, held = self._slot, self._held
            self._slot, self._held = None, False
            self._done = self._done or final
        if not held or self._limiter is None or self._process != process_generation():
            return
        try:
            self._limiter.release(slot)
        except Exception:
            logger.warning("session #%d: %r failed to take its slot back", self._number, self._limiter, exc_info=True)
        else:
            logger.debug("session #%d: gave %r back to %r", self._number, slot, self._limiter)
