"""The pool's lending state without I/O: which sessions are idle, lent, starting or closing, and who waits.

:class:`LendingState` makes every decision of :class:`~avatarsdk.pool.SessionPool` that needs no I/O: whether
an entry may be lent (:meth:`~LendingState.unfit`), what a borrower gets (an idle entry, a slot to start a new
one in, or its turn to wait, first come first served), what becomes of a returned entry, which idle entries
must go (unfit, near ``max_session_age``, or idle ``max_idle_time``), when the maintenance thread warms one, how
long new starts wait after the service refused one for its concurrency limit, what ``close()`` closes, and the
counts of ``PoolStats`` (with the connected session-seconds). It holds no lock (the pool calls it with its
condition held), starts and closes nothing (it returns the entries its caller must start or close) and reads no
clock (``now`` is a ``time.monotonic()`` value from the caller).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Generic, List, Optional, Protocol, Set, Tuple, TypeVar

from ._backoff import Backoff
from ._pool_types import PoolStats

ENDED = "the session has ended"
DUE = "its token expires within refresh_margin"
AGED = "it is near max_session_age"
IDLE = "it was idle for max_idle_time"
POOL_CLOSED = "the pool is closed"

AGE_MARGIN = 60.0
"""Seconds before ``max_session_age`` from which a session is no longer lent (a quarter of ``max_session_age``
when that is shorter): a borrower has this long to give it back before the pool's age bound."""

REFUSAL_BACKOFF = Backoff(initial=0.5, cap=5.0, multiplier=2.0, jitter=0.5)
"""The pause of new starts after the service refused one for its concurrency limit: 0.5 s doubling to 5 s (less
up to half at random, so that the pools of several processes do not retry in step), lent sessions returned
meanwhile going to the waiting borrowers at once."""


def age_margin(max_age: float) -> float:
    """How long before ``max_age`` seconds of age a session stops being lent."""
    return min(AGE_MARGIN, max_age / 4)


class _Session(Protocol):
    @property
    def closed(self) -> bool: ...


S = TypeVar("S", bound=_Session)


class Entry(Generic[S]):
    """A session the pool owns, with what the pool knows about it."""

    __slots__ = (
        "failure",
        "from_idle",
        "generation",
        "idle_since",
        "refresh_at",
        "retire_at",
        "session",
    )

    session: S  # set by the state's ``make`` as the entry is made

    def __init__(self, refresh_at: float, generation: int, retire_at: float = math.inf) -> None:
        self.refresh_at = refresh_at  # the monotonic time from which it is due for a new token
        self.retire_at = retire_at  # the monotonic time from which it is too old to lend (max_session_age)
        self.generation = generation  # the process generation it was made in
        self.failure: Optional[str] = None  # why it must not be lent again (set by its callbacks)
        self.from_idle = False  # lent from the idle set (not started for its borrower)
        self.idle_since = math.inf  # when it last went idle

    @property
    def ended(self) -> bool:
        """Its session has ended (the server, the network or ``close()`` ended it)."""
        return self.session.closed

    def due(self, now: float) -> bool:
        """Its token expires within the refresh margin at ``now``."""
        return now >= self.refresh_at

    def aged(self, now: float) -> bool:
        """It is within its age margin of ``max_session_age`` at ``now``."""
        return now >= self.retire_at


Stale = List[Tuple[Entry[S], str]]  # entries taken out of the idle set, and why


@dataclass
class Step(Generic[S]):
    """What a borrower or the maintenance thread does next, outside the lock (nothing set: wait)."""

    stale: Stale[S] = field(default_factory=list)  # unfit idle entries to close (each then closed_one())
    lent: Optional[Entry[S]] = None  # an idle entry, now lent to the borrower
    start: Optional[Entry[S]] = None  # a new entry counted as starting: start it (then started() or start_failed())
    wake: float = math.inf  # nothing to do before this time unless something changes (then: ask again)


class Fate(enum.Enum):
    """What becomes of a returned entry (see :meth:`LendingState.give_back`)."""

    KEPT = enum.auto()  # idle again
    DISCARDED = enum.auto()  # unfit: counted (by its reason) and closing; close it, then closed_one()
    CLOSE = enum.auto()  # the pool is closed: close it (not counted)
    NOT_LENT = enum.auto()  # already returned: nothing to do


class LendingState(Generic[S]):
    """The entries of one pool in one process, its waiting borrowers and its counts.

    Args:
        max_size: Most entries at once: idle, lent, starting, and closing (discarded, not yet closed).
        min_idle: Idle entries the maintenance thread keeps.
        lifetime, margin: Seconds of each session's token, and how long before it expires the session is due.
        generation: The process generation (``_fork.process_generation()``) the state belongs to.
        make: Makes an entry's session (no I/O), called as the entry is made.
        closed: The pool is closed already (a state made anew in a forked child).
        max_idle: Seconds an idle entry beyond ``min_idle`` is kept after it was returned (``None``: no limit).
        max_age: Seconds of age before which an entry is retired (``None``: no limit); it is not lent from
            :func:`age_margin` before that.
        refusal_backoff: The pause of new starts after refusals for the service's concurrency limit.
    """

    def __init__(
        self,
        *,
        max_size: int,
        min_idle: int,
        lifetime: float,
        margin: float,
        generation: int,
        make: Callable[[Entry[S]], S],
        closed: bool = False,
        max_idle: Optional[float] = None,
        max_age: Optional[float] = None,
        refusal_backoff: Backoff = REFUSAL_BACKOFF,
    ) -> None:
        self.max_size = max_size
        self.min_idle = min_idle
        self.lifetime = lifetime
        self.margin = margin
        self.generation = generation
        self._make = make
        self.closed = closed
        self.max_idle = max_idle
        self.max_age = max_age
        self.refusal_backoff = refusal_backoff
        self.idle: Deque[Entry[S]] = deque()  # the right end is the most recently returned (LIFO)
        self.lent: Set[Entry[S]] = set()
        self.starting: Set[Entry[S]] = set()
        self.waiters: Deque[object] = deque()  # tickets of the borrowers waiting, first come first served
        self.closing = 0  # discarded entries whose session's close() has not returned yet
        self.created = self.discarded = self.waits = self.timeouts = self.failed = 0
        self.refused = self.closed_idle = self.closed_age = 0
        self.refusals = 0  # refusals for the concurrency limit since the last start that succeeded
        self.hold_until = -math.inf  # no new start before this time (after a refusal)
        self.online: Dict[Entry[S], float] = {}  # entries started and not yet ended: when each started
        self.offline_seconds = 0.0  # the connected time of the entries that have ended

    # ------------------------------------------------------------------------------------ queries

    def size(self) -> int:
        """Entries counted against ``max_size``."""
        return len(self.idle) + len(self.lent) + len(self.starting) + self.closing

    def unfit(self, entry: Entry[S], now: float) -> Optional[str]:
        """Why ``entry`` must not be lent at ``now`` (``None``: it may be)."""
        if entry.failure is not None:
            return entry.failure
        if entry.ended:
            return ENDED
        if entry.due(now):
            return DUE
        if entry.aged(now):
            return AGED
        return None

    @property
    def busy(self) -> bool:
        """Entries are lent, starting or closing (``close()`` waits for none to be)."""
        return bool(self.lent or self.starting or self.closing)

    def entries(self) -> List[Entry[S]]:
        """Every entry idle, lent or starting."""
        return [*self.idle, *self.lent, *self.starting]

    def counts(self, now: float) -> PoolStats:
        """The pool's :class:`PoolStats` at ``now``."""
        return PoolStats(
            idle=len(self.idle),
            in_use=len(self.lent),
            creating=len(self.starting),
            created=self.created,
            discarded=self.discarded,
            waits=self.waits,
            timeouts=self.timeouts,
            failed=self.failed,
            refused=self.refused,
            closed_idle=self.closed_idle,
            closed_age=self.closed_age,
            connected_seconds=self.offline_seconds + sum(now - began for began in self.online.values()),
        )

    # ----------------------------------------------------------------------------------- borrowing

    def borrow(self, ticket: Optional[object], now: float, *, may_start: bool = True) -> Step[S]:
        """A borrower's turn (``ticket``: its place in the queue, ``None`` until it waits). Unless a borrower
        is ahead of it: the most recently returned fit idle entry, lent (unfit ones are taken out on the way),
        or else a new entry to start while there are fewer than ``max_size`` (unless ``may_start`` is false, or
        new starts pause after a refusal: then ``wake`` is when they may start again). A borrower served leaves
        the queue; one given nothing waits (:meth:`queue`), one given only stale entries closes them and asks
        again.
        """
        step: Step[S] = Step()
        if self.waiters and self.waiters[0] is not ticket:
            return step
        while self.idle:
            entry = self.idle.pop()
            reason = self.unfit(entry, now)
            if reason is None:
                entry.from_idle = True
                self.lent.add(entry)
                step.lent = entry
                break
            self._discard(entry, reason, step.stale)
        if step.lent is None and not step.stale and may_start and self.size() < self.max_size:
            if now >= self.hold_until:
                step.start = self._new_entry(now)
            else:
                step.wake = self.hold_until
        if (step.lent or step.start) and ticket is not None:
            self.waiters.remove(ticket)
        return step

    def queue(self, ticket: Optional[object]) -> object:
        """The borrower's ticket: ``ticket``, or a new one at the end of the queue (counted in ``waits``)."""
        if ticket is None:
            ticket = object()
            self.waiters.append(ticket)
            self.waits += 1
        return ticket

    def leave(self, ticket: object) -> None:
        """A waiting borrower goes without a session (timeout, closed pool, interrupt)."""
        self.waiters.remove(ticket)

    def timed_out(self) -> str:
        """A borrower gives up (counted in ``timeouts``); what held every slot, for its error."""
        self.timeouts += 1
        return (
            f"{len(self.lent)} lent, {len(self.starting)} starting, {self.closing} closing;"
            f" {len(self.waiters)} borrowers waiting"
        )

    # -------------------------------------------------------------------------------- starts, ends

    def started(self, entry: Entry[S], *, lend: bool, now: float) -> bool:
        """``entry``'s session started at ``now`` (connected from then on): lent (``lend``) or idle. New starts no
        longer pause. ``False``: the pool was closed meanwhile, and the caller closes it."""
        self.starting.discard(entry)
        self.online[entry] = now
        self.refusals, self.hold_until = 0, -math.inf
        if self.closed:
            return False
        self.created += 1
        if lend:
            self.lent.add(entry)
        else:
            entry.idle_since = now
            self.idle.append(entry)
        return True

    def start_failed(self, entry: Entry[S]) -> None:
        """Starting ``entry``'s session raised: its slot is free (counted in ``failed`` while the pool is open)."""
        self.starting.discard(entry)
        if not self.closed:
            self.failed += 1

    def start_refused(self, entry: Entry[S], now: float, *, requeue: bool) -> Optional[object]:
        """The service refused ``entry``'s start for its concurrency limit: its slot is free, and new starts
        pause for the refusal backoff (longer after each refusal in a row); counted in ``refused`` while the pool
        is open. ``requeue``: a borrower's start; the borrower waits again, first in the queue (its new ticket
        is returned)."""
        self.starting.discard(entry)
        if self.closed:
            return None
        self.refused += 1
        self.refusals += 1
        self.hold_until = now + self.refusal_backoff.delay(self.refusals)
        if not requeue:
            return None
        ticket = object()
        self.waiters.appendleft(ticket)
        return ticket

    def disconnected(self, entry: Entry[S], now: float) -> None:
        """``entry``'s session ended at ``now``: its connected time is added up (once)."""
        began = self.online.pop(entry, None)
        if began is not None:
            self.offline_seconds += now - began

    def give_back(self, entry: Entry[S], failure: Optional[str], now: float) -> Tuple[Fate, str]:
        """A borrower returns ``entry`` (``failure``: why it must not be lent again); its fate, and why."""
        if entry not in self.lent:
            return Fate.NOT_LENT, ""
        self.lent.discard(entry)
        if self.closed:
            return Fate.CLOSE, POOL_CLOSED
        reason = failure or self.unfit(entry, now)
        if reason is None:
            entry.idle_since = now
            self.idle.append(entry)
            return Fate.KEPT, ""
        self._count(reason)
        self.closing += 1
        return Fate.DISCARDED, reason

    def spoiled(self, entry: Entry[S], reason: str, *, ended: bool) -> bool:
        """``entry``'s session reported an error or (``ended``) ended: it is never lent again. ``True`` if it was
        idle and is taken out (discarded; unless it ended, also closing: the caller closes it)."""
        if entry.failure is None:
            entry.failure = reason
        if entry not in self.idle:
            return False
        self.idle.remove(entry)
        self.discarded += 1
        if not ended:
            self.closing += 1
        return True

    def closed_one(self) -> None:
        """The session of a discarded entry (counted as closing) is closed: its slot is free."""
        self.closing -= 1

    # -------------------------------------------------------------------------- maintenance, close

    def upkeep(self, now: float, retry_at: float) -> Step[S]:
        """The maintenance thread's turn: the idle entries to close (unfit, or idle ``max_idle`` beyond the
        ``min_idle`` most recently returned), or else a new entry to warm (fewer than ``min_idle`` idle and fewer
        than ``max_size`` in all, and ``now`` is past ``retry_at``, the end of its backoff, and past any pause
        after a refusal), or else the time to look again (the next refresh, retirement, idle expiry, or the end
        of a backoff or pause)."""
        step: Step[S] = Step()
        for entry in list(self.idle):
            reason = self.unfit(entry, now)
            if reason is not None:
                self.idle.remove(entry)
                self._discard(entry, reason, step.stale)
        for entry, until in self._expiring():
            if now >= until:
                self.idle.remove(entry)
                self._discard(entry, IDLE, step.stale)
        if step.stale:
            return step
        step.wake = min(
            [
                *(min(entry.refresh_at, entry.retire_at) for entry in self.idle),
                *(until for _, until in self._expiring()),
            ],
            default=math.inf,
        )
        if len(self.idle) < self.min_idle and self.size() < self.max_size:
            start_at = max(retry_at, self.hold_until)
            if now >= start_at:
                step.start = self._new_entry(now)
            else:
                step.wake = min(step.wake, start_at)
        return step

    def close(self) -> List[Entry[S]]:
        """The pool closes: the idle entries, for the caller to close (lent ones are closed when returned)."""
        self.closed = True
        idle = list(self.idle)
        self.idle.clear()
        return idle

    # ------------------------------------------------------------------------------------- private

    def _new_entry(self, now: float) -> Entry[S]:
        retire_at = math.inf if self.max_age is None else now + self.max_age - age_margin(self.max_age)
        entry: Entry[S] = Entry(now + self.lifetime - self.margin, self.generation, retire_at)
        entry.session = self._make(entry)
        self.starting.add(entry)
        return entry

    def _expiring(self) -> List[Tuple[Entry[S], float]]:
        """The idle entries ``max_idle`` applies to (all but the ``min_idle`` most recently returned), each with
        the time it has been idle that long."""
        max_idle = self.max_idle
        if max_idle is None:
            return []
        surplus = list(self.idle)[: max(0, len(self.idle) - self.min_idle)]
        return [(entry, entry.idle_since + max_idle) for entry in surplus]

    def _discard(self, entry: Entry[S], reason: str, stale: Stale[S]) -> None:
        self._count(reason)
        self.closing += 1
        stale.append((entry, reason))

    def _count(self, reason: str) -> None:
        """An entry closed for ``reason``: counted by its reason."""
        if reason == IDLE:
            self.closed_idle += 1
        elif reason == AGED:
            self.closed_age += 1
        else:
            self.discarded += 1
