"""The pool's maintenance thread ``avatarsdk-pool-N``: it closes idle sessions that may not be lent any more
(due for a new token, near ``max_session_age``, failed, ended) or have been idle ``max_idle_time``, and keeps
``min_idle`` sessions warm, one start at a time.

:class:`Maintainer` owns the thread and its backoff after failed starts (``_START_BACKOFF``). It decides nothing
itself: under the pool's condition it asks the pool's :class:`~avatarsdk._pool_state.LendingState` what to do
(:meth:`~avatarsdk._pool_state.LendingState.upkeep`) and sleeps on the condition until the next time an idle
session is due to go, the end of its backoff or a change; outside it, it calls back the pool to start and to
close sessions.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable, Generic, Optional

from ._backoff import Backoff
from ._dispatch import safe_call
from ._pool_state import Entry, LendingState, S, Stale, Step
from .errors import AvatarSDKError, AvatarSDKErrorCode

logger = logging.getLogger("avatarsdk.pool")  # the pool's records, whichever of its modules writes them

# The pause after failed starts: 1 s, doubling to at most 30 s, without limit.
_START_BACKOFF = Backoff(initial=1.0, cap=30.0, multiplier=2.0, jitter=0.0)


def refusal_of(exc: BaseException) -> Optional[AvatarSDKError]:
    """``exc`` if it is a refusal of a new session for the plan's concurrency limit (the service's: HTTP 429 on the
    token call or the upgrade, or ServerError and close 4003 in the handshake; or the session's ``limiter``
    finding no slot within ``limiter_timeout``), else ``None``."""
    if isinstance(exc, AvatarSDKError) and exc.code is AvatarSDKErrorCode.concurrencyLimit:
        return exc
    return None


class Maintainer(Generic[S]):
    """The maintenance thread of one pool state (a forked child's pool makes a new one).

    Args:
        cond: The pool's condition; it guards ``state``.
        state: The pool's lending state.
        start: Starts an entry's session and puts it in the idle set (outside the lock); raises if it fails.
            (A refusal for the service's concurrency limit is not given to ``on_error``: it is back-pressure,
            and the state pauses new starts.)
        dispose: Closes sessions taken out of the idle set (outside the lock).
        on_error: The pool's ``on_error`` (``None``: none), for the errors of failed starts.
        number: The pool's number, for the thread's name and the log.
    """

    def __init__(
        self,
        cond: threading.Condition,
        state: LendingState[S],
        *,
        start: Callable[[Entry[S]], object],
        dispose: Callable[[Stale[S]], None],
        on_error: Optional[Callable[[AvatarSDKError], None]],
        number: int,
    ) -> None:
        self._cond = cond
        self._state = state
        self._start = start
        self._dispose = dispose
        self._on_error = on_error
        self._number = number
        self._thread: Optional[threading.Thread] = None

    def ensure(self) -> None:
        """Start the thread unless it runs or the pool is closed (called with the lock held)."""
        if self._thread is None and not self._state.closed:
            self._thread = threading.Thread(target=self._run, name=f"avatarsdk-pool-{self._number}", daemon=True)
            self._thread.start()

    def join(self, timeout: Optional[float]) -> None:
        """Wait up to ``timeout`` seconds for the thread to end (once the pool is closed)."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("pool #%d: thread %s still running after close()", self._number, thread.name)

    def _next(self, retry_at: float) -> Optional[Step[S]]:
        """Sleep on the condition until there is work (``None``: the pool is closed)."""
        with self._cond:
            while not self._state.closed:
                now = time.monotonic()
                step = self._state.upkeep(now, retry_at)
                if step.stale or step.start is not None:
                    return step
                self._cond.wait(None if step.wake == math.inf else step.wake - now)
        return None

    def _run(self) -> None:
        failures, retry_at = 0, 0.0
        while True:
            step = self._next(retry_at)
            if step is None:
                return
            self._dispose(step.stale)
            warm = step.start
            if warm is None:
                continue
            try:
                self._start(warm)
            except Exception as exc:  # noqa: BLE001  # the thread outlives any failed start: logged, retried later
                if self._state.closed:  # close() may have cut the start short
                    return
                failures += 1
                backoff = _START_BACKOFF.delay(failures)
                retry_at = time.monotonic() + backoff
                if refusal_of(exc) is not None:
                    logger.info(
                        "pool #%d: the service refused a warm session (%s); next try in %gs", self._number, exc, backoff
                    )
                    continue
                logger.warning(
                    "pool #%d: starting a warm session failed (%s); next try in %gs", self._number, exc, backoff
                )
                if isinstance(exc, AvatarSDKError):
                    safe_call("on_error", self._on_error, exc)
                continue
            now = time.monotonic()
            if warm.due(now) or warm.aged(now):
                # Sessions are unfit to lend as soon as they start: do not replace them in a loop.
                failures += 1
                retry_at = now + _START_BACKOFF.delay(failures)
                logger.warning(
                    "pool #%d: a new session is already due for replacement (token_lifetime %gs, refresh_margin %gs,"
                    " max_session_age %s)",
                    self._number,
                    self._state.lifetime,
                    self._state.margin,
                    self._state.max_age,
                )
            else:
                failures = 0
