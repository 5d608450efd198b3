"""The I/O of a pool in one process: making, starting, lending, taking back and closing its sessions.

A :class:`Lender` carries out what its :class:`~avatarsdk._pool_state.LendingState` decides. It owns the
pool's condition, the state it guards, and the :class:`~avatarsdk._pool_maintainer.Maintainer`. Under the
condition it asks the state, makes sessions from the template (no I/O) and waits for a borrower's turn; outside
it, it starts, interrupts and closes sessions. A start the service refuses for its concurrency limit is
back-pressure, not a borrower's error: the borrower waits again, first in line, for a returned session or the
end of the pause the state sets. The sessions' ``on_close`` and ``on_error`` come here and become facts for the
state. A pool used in a forked child makes a new lender (the parent's lock may have been held at
the fork); sessions of another process generation are only closed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, Optional

from ._deadline import Deadline
from ._dispatch import safe_call
from ._fork import process_generation
from ._pool_config import PoolConfig
from ._pool_maintainer import Maintainer, refusal_of
from ._pool_state import ENDED, Entry, Fate, LendingState, Stale
from ._pool_types import timeout_error
from .avatar_session import AvatarSession
from .errors import AvatarSDKError

logger = logging.getLogger("avatarsdk.pool")  # the pool's records, whichever of its modules writes them

PooledSession = Entry[AvatarSession]


class Refused(NamedTuple):
    """A borrower's start the service refused for its concurrency limit: the borrower's new place in the queue,
    and the refusal."""

    ticket: object
    error: AvatarSDKError


class Lender:
    """The sessions of one pool in one process generation.

    Args:
        config: The pool's settings.
        closed: The pool is closed already (a lender made in a forked child).
    """

    def __init__(self, config: PoolConfig, *, closed: bool = False) -> None:
        self.config = config
        self._number = config.number
        self.lock = threading.Lock()  # `with` takes this, not the condition (ARCHITECTURE.md, Locks)
        self.cond = threading.Condition(self.lock)  # guards the state; no I/O or user code under it
        self.state: LendingState[AvatarSession] = LendingState(
            max_size=config.max_size,
            min_idle=config.min_idle,
            lifetime=config.lifetime,
            margin=config.margin,
            generation=process_generation(),
            make=self._new_session,
            closed=closed,
            max_idle=config.max_idle,
            max_age=config.max_age,
        )
        self._refusal: Optional[AvatarSDKError] = None  # the latest refusal for the concurrency limit
        self.maintainer = Maintainer(
            self.cond,
            self.state,
            start=functools.partial(self.start, lend=False),
            dispose=self.dispose,
            on_error=config.on_error,
            number=self._number,
        )

    def keep_warm(self) -> None:
        """Start the maintenance thread now if ``min_idle`` asks for warm sessions."""
        if self.config.min_idle:
            with self.lock:
                self.maintainer.ensure()

    # ------------------------------------------------------------------------------------- lending

    def acquire(self, deadline: Deadline, limit: Optional[float], op: str) -> PooledSession:
        """Lend an idle healthy session, or start one in this thread, or wait until ``deadline`` (``limit``
        seconds from the borrow: named in the timeout's message). Waiting borrowers are served first come, first
        served: one that arrives while others wait queues behind them instead of taking the next returned
        session. A start the service refuses for its concurrency limit puts the borrower back first in line."""
        state = self.state
        ticket: Optional[object] = None  # this borrower's place in the queue, once it waits
        refusal: Optional[AvatarSDKError] = None  # the last refusal of this borrower's own start
        try:
            while True:
                with self.lock:
                    while True:
                        if state.closed:
                            raise ValueError(f"{op}(): the pool is closed")
                        now = time.monotonic()
                        # A borrower refused before starts again only within its time.
                        step = state.borrow(ticket, now, may_start=refusal is None or not deadline.passed())
                        if step.stale or step.lent is not None or step.start is not None:
                            break
                        ticket = state.queue(ticket)
                        if deadline.passed():
                            raise self._gave_up(op, limit, refusal)
                        self.cond.wait(_until(deadline, step.wake - now))
                    if step.lent is not None or step.start is not None:
                        ticket = None  # served, and out of the queue: the next in line may find a session too
                        self.cond.notify_all()  # (and the maintenance thread: fewer idle than before)
                self.dispose(step.stale)
                if step.lent is not None:
                    logger.debug("pool #%d: lent session %s", self._number, step.lent.session.connection_id)
                    return step.lent
                if step.start is not None:
                    outcome = self.start(step.start, lend=True)
                    if outcome is None:
                        return step.start
                    ticket, refusal = outcome
                # Only unfit idle sessions were found (closed now), or the start was refused: look again.
        finally:
            if ticket is not None:  # leaving the queue without a session (timeout, closed pool, interrupt)
                with self.lock:
                    state.leave(ticket)
                    self.cond.notify_all()

    def _gave_up(self, op: str, limit: Optional[float], refusal: Optional[AvatarSDKError]) -> AvatarSDKError:
        """The error of a borrower that waited ``limit`` seconds in vain (called with the lock held)."""
        state = self.state
        cause = refusal or (self._refusal if state.refusals else None)
        held = state.timed_out()
        if cause is None:
            why = f"all {state.max_size} sessions (max_size) are in use ({held})"
        else:
            why = (
                f"new sessions were refused for the plan's concurrency limit ({cause}; {state.refused} refusals so"
                f" far; {held})"
            )
        err = timeout_error(f"{op}(): no session available within {limit:g}s: {why}", cause)
        err.__cause__ = cause
        return err

    def start(self, entry: PooledSession, *, lend: bool) -> Optional[Refused]:
        """Start ``entry`` (outside the lock), then lend it or put it in the idle set; ``None``. A borrower's start
        (``lend``) the service refuses for its concurrency limit returns the refusal and the borrower's new place
        in the queue instead of raising (the maintenance thread's raises)."""
        session = entry.session
        try:
            session.init()
            session.start()
        except BaseException as exc:
            refusal = refusal_of(exc)
            with self.lock:
                ticket = None
                if refusal is not None and not self.state.closed:
                    self._refusal = refusal
                    ticket = self.state.start_refused(entry, time.monotonic(), requeue=lend)
                else:
                    self.state.start_failed(entry)
                closed = self.state.closed
                wait = self.state.hold_until - time.monotonic()
                self.cond.notify_all()
            session.close()
            if closed and isinstance(exc, (ValueError, AvatarSDKError)):
                raise ValueError("the pool was closed while a session was starting") from exc
            if ticket is not None and refusal is not None:
                logger.debug(
                    "pool #%d: the service refused a new session (%s); waiting for one (new starts in %.2fs)",
                    self._number,
                    refusal,
                    wait,
                )
                return Refused(ticket, refusal)
            raise
        with self.lock:
            kept = self.state.started(entry, lend=lend, now=time.monotonic())
            self.cond.notify_all()  # waiting borrowers, the maintenance thread, or close()
        if not kept:
            session.close()
            raise ValueError("the pool was closed while a session was starting")
        logger.debug(
            "pool #%d: started session %s (%s)", self._number, session.connection_id, "lent" if lend else "idle"
        )
        return None

    def release(self, entry: PooledSession, failure: Optional[str] = None) -> None:
        """Take back a lent session: keep it idle if it may be lent again, otherwise close it."""
        session = entry.session
        if entry.generation != self.state.generation:  # lent before a fork: this process may only let it go
            session.close()
            return
        # A request left open (audio sent without end=True): the session has no public signal for it.
        if failure is None and session.current_req_id is not None and not session.closed:
            try:
                session.interrupt()
            except (AvatarSDKError, ValueError) as exc:
                failure = f"interrupting the request left open failed ({exc})"
        with self.lock:
            fate, reason = self.state.give_back(entry, failure, time.monotonic())
            if fate is Fate.KEPT:
                self.maintainer.ensure()
            self.cond.notify_all()
        if fate is Fate.KEPT:
            logger.debug("pool #%d: session %s returned", self._number, session.connection_id)
        elif fate is Fate.DISCARDED:
            self.dispose([(entry, reason)])
        elif fate is Fate.CLOSE:
            session.close()

    def dispose(self, entries: Stale[AvatarSession]) -> None:
        """Close discarded sessions (outside the lock); they count against ``max_size`` until closed."""
        for entry, reason in entries:
            logger.debug("pool #%d: discarding session %s: %s", self._number, entry.session.connection_id, reason)
            try:
                entry.session.close()
            finally:
                with self.lock:
                    self.state.closed_one()
                    self.cond.notify_all()

    # ------------------------------------------------------------------------------------- closing

    def close(self, deadline: Deadline) -> None:
        """Close the idle sessions, wait until ``deadline`` for starts to end (then cut them short), for the
        maintenance thread, and for the lent sessions to come back."""
        remaining = deadline.remaining
        state = self.state
        with self.lock:
            first = not state.closed
            idle = state.close()
            self.cond.notify_all()
        if first:
            logger.debug("pool #%d: closing (%d idle, %d lent)", self._number, len(idle), len(state.lent))
        for entry in idle:
            entry.session.close()
        with self.lock:
            self.cond.wait_for(lambda: not state.starting, remaining())
            starting = [entry.session for entry in state.starting]
        for session in starting:
            session.close()  # still starting: cut short (its start() fails and its starter lets it go)
        self.maintainer.join(remaining())
        with self.lock:
            done = self.cond.wait_for(lambda: not state.busy, remaining())
            lent = len(state.lent)
        if not done:
            logger.debug("pool #%d: %d sessions still lent; each is closed when returned", self._number, lent)

    def close_lent(self) -> None:
        """Close the sessions still lent (at interpreter exit: nothing will return them)."""
        with self.lock:
            lent = [entry.session for entry in self.state.lent]
        for session in lent:
            session.close()

    # ---------------------------------------------------------------------------- the sessions' side

    def _new_session(self, entry: PooledSession) -> AvatarSession:
        """``entry``'s session (not started), with the pool's callbacks and a token lifetime from now."""
        config = dataclasses.replace(
            self.config.template,
            expire_at=datetime.now(timezone.utc) + timedelta(seconds=self.config.lifetime),
            on_error=functools.partial(self._session_error, entry),
            on_close=functools.partial(self._session_ended, entry),
        )
        # Warnings about the configuration and options came once, from the pool's construction.
        return AvatarSession._create(config, self.config.options)

    def _session_ended(self, entry: PooledSession) -> None:
        """A session's ``on_close`` (its dispatcher thread): its connected time ends; an idle one is dropped at
        once."""
        with self.lock:
            self.state.disconnected(entry, time.monotonic())
            dropped = self.state.spoiled(entry, ENDED, ended=True)
            if dropped:
                self.cond.notify_all()
        if dropped:
            logger.debug(
                "pool #%d: idle session %s ended (server or network); discarded",
                self._number,
                entry.session.connection_id,
            )

    def _session_error(self, entry: PooledSession, error: AvatarSDKError) -> None:
        """A session's ``on_error`` (its dispatcher thread): the session is not lent again."""
        with self.lock:
            dropped = self.state.spoiled(entry, f"it reported an error ({error.code.value})", ended=False)
            if dropped:
                self.cond.notify_all()
        if dropped:
            self.dispose([(entry, entry.failure or "")])
        safe_call("on_error", self.config.on_error, error)


def _until(deadline: Deadline, wake: float) -> Optional[float]:
    """The wait for the sooner of ``deadline`` and ``wake`` seconds (``inf``: none); ``None``: no limit."""
    left = deadline.remaining()
    if left is None:
        return None if math.isinf(wake) else wake
    return min(left, wake)
