"""RedisLimiter: one plan's concurrency limit shared by processes and hosts through one Redis.

It owns the I/O of the limiter (the scripts are in ``_redis_scripts``): a waiter's loop (the acquire script,
then a bounded BLPOP on its wake list), giving slots back, and the renewal thread ``avatarsdk-limiter-N``
that extends the leases of the slots this process holds, so that the slots of a process that died come back
within a lease. After a fork the child holds none of the parent's slots and starts no thread until it takes one.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import threading
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Set, Tuple

from . import _redis_scripts as scripts
from ._deadline import Deadline
from ._validation import check_int, check_text
from .errors import AvatarSDKErrorCode, SessionTokenError

if TYPE_CHECKING:
    from redis import Redis

logger = logging.getLogger(__name__)

DEFAULT_LEASE = 30.0
MIN_LEASE = 0.5
POLL = 0.5  # the longest a waiter blocks in one BLPOP before it asks again (and keeps its ticket alive)
TICKET_TTL = 4 * POLL  # a waiter that stopped asking this long (its process died) leaves the queue

_numbers = itertools.count(1)
_HOST = socket.gethostname()


class RedisLimiter:
    """At most ``limit`` slots held at once by every process (on any host) that uses the same Redis and ``name``.

    Slots are leases in Redis, renewed by a thread of the holding process (``avatarsdk-limiter-N``, every third of
    ``lease``, running while this process holds slots): the slots of a process that died (``kill -9``, a lost
    host) come back at most ``lease`` seconds later. Waiters, in every process, are served first come first served
    (a Redis queue of tickets). Every change is one atomic Lua script timed by Redis's clock. Needs Redis 6.2 or
    newer (standalone, or Sentinel's primary) and the ``redis`` extra (``pip install "avatarsdk[redis]"``).

    Args:
        redis: A ``redis.Redis`` client (its ``socket_timeout``, if any, above 0.5 s: waiters block that long).
        limit: How many slots (sessions) at once, at least 1; every process sharing ``name`` must use the same.
        name: Names the limit in Redis (keys ``avatarsdk:limiter:{name}:*``): one per plan.
        lease: Seconds a slot outlives its holder's last renewal (at least 0.5; default 30).

    Raises (from :meth:`acquire`, hence from a session's ``init()``):
        SessionTokenError: Redis is unreachable (code ``connectionFailed``, retryable) or refused a command.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, redis: Redis, limit: int, *, name: str = "avatarsdk", lease: float = DEFAULT_LEASE) -> None:
        try:
            import redis as redis_module  # noqa: PLC0415 - optional extra
        except ImportError:
            raise ImportError('RedisLimiter needs redis-py: pip install "avatarsdk[redis]"') from None
        if not isinstance(redis, redis_module.Redis):
            raise TypeError(f"redis: expected a redis.Redis client, got {type(redis).__name__}")
        if check_int("limit", limit) < 1:
            raise ValueError(f"limit: expected at least 1 concurrent session, got {limit!r}")
        check_text("name", name)
        if "{" in name or "}" in name:
            raise ValueError(f"name: expected no braces (the keys put it in a hash tag), got {name!r}")
        if isinstance(lease, bool) or not isinstance(lease, (int, float)):
            raise TypeError(f"lease: expected seconds as a number, got {type(lease).__name__}")
        if not (math.isfinite(lease) and MIN_LEASE <= lease <= 86400):
            raise ValueError(f"lease: expected {MIN_LEASE} to 86400 seconds, got {lease!r}")
        self._redis = redis
        self._errors = redis_module.exceptions
        self._limit = limit
        self._name = name
        self._lease_ms = int(lease * 1000)
        prefix = f"avatarsdk:limiter:{{{name}}}:"
        self._keys = tuple(prefix + key for key in ("slots", "queue", "tickets", "seq"))
        self._wake = prefix + "wake:"
        self._scripts = {
            key: redis.register_script(text)
            for key, text in (
                ("acquire", scripts.ACQUIRE),
                ("release", scripts.RELEASE),
                ("leave", scripts.LEAVE),
                ("renew", scripts.RENEW),
                ("status", scripts.STATUS),
            )
        }
        self._number = next(_numbers)
        self._reset()
        _made.add(self)

    def _reset(self) -> None:
        self._lock = threading.RLock()  # `with` takes this, not the condition (ARCHITECTURE.md, Locks)
        self._cond = threading.Condition(self._lock)  # over the held slots and the renewer
        self._held: Set[str] = set()  # this process's slots
        self._renewer: Optional[threading.Thread] = None
        self._io = threading.Lock()  # one renewal or release at a time: a slot given back is never renewed after

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def name(self) -> str:
        return self._name

    @property
    def lease(self) -> float:
        return self._lease_ms / 1000

    def in_use(self) -> int:
        """Slots held now by every process (leases not run out)."""
        return int(self._status()[0])

    def waiting(self) -> int:
        """Callers waiting for a slot now, in every process."""
        return int(self._status()[1])

    def held(self) -> int:
        """Slots held now by this process."""
        with self._lock:
            return len(self._held)

    def _status(self) -> Sequence[Any]:
        slots, _, tickets, _ = self._keys
        result: Sequence[Any] = self._run("status", (slots, tickets), ())
        return result

    # -- taking and giving back

    def acquire(self, timeout: Optional[float] = None) -> Optional[str]:
        """A slot, waiting up to ``timeout`` seconds (``None``: no limit) behind earlier waiters, or ``None`` when
        the time is up.

        Raises:
            SessionTokenError: Redis is unreachable or refused a command (see the class documentation).
        """
        deadline = Deadline(timeout)
        ticket = uuid.uuid4().hex
        slot = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"  # who holds it, for whoever looks into Redis
        args = (self._limit, self._lease_ms, ticket, slot, int(TICKET_TTL * 1000), self._wake)
        try:
            while True:
                granted, until_free = self._run("acquire", self._keys, args)
                if int(granted):
                    self._hold(slot)
                    return slot
                remaining = deadline.remaining()
                if remaining is not None and remaining <= 0:
                    self._leave(ticket)
                    return None
                pause = POLL if int(until_free) < 0 else min(POLL, int(until_free) / 1000 + 0.002)
                if remaining is not None:
                    pause = min(pause, remaining)
                self._wait(ticket, max(pause, 0.01))
        except BaseException:
            # Best effort: the place in the queue would otherwise lapse after TICKET_TTL, and a slot granted by a
            # script whose answer was lost after a lease.
            undo: Tuple[Callable[[], None], ...] = (lambda: self._leave(ticket), lambda: self._give_back(slot))
            for step in undo:
                try:
                    step()
                except SessionTokenError:
                    logger.debug("%r: could not clean up after a failed wait", self, exc_info=True)
            raise

    def release(self, slot: Any) -> None:
        """Give ``slot`` back; a slot this process does not hold is ignored. A Redis failure is logged (the lease
        then runs out by itself), never raised."""
        with self._io:
            with self._lock:
                if slot not in self._held:
                    return
                self._held.discard(slot)
                self._cond.notify_all()  # the renewer ends once nothing is held
            try:
                self._give_back(slot)
            except SessionTokenError as err:
                logger.warning("%r: could not give slot %s back (%s); its lease runs out by itself", self, slot, err)

    def _wait(self, ticket: str, seconds: float) -> None:
        """Block until this waiter is woken (a slot may be free for it) or ``seconds`` pass."""
        self._call(lambda: self._redis.blpop([self._wake + ticket], seconds))

    def _give_back(self, slot: str) -> None:
        slots, queue, tickets, _ = self._keys
        self._run("release", (slots, queue, tickets), (slot, self._limit, self._wake, int(TICKET_TTL * 1000)))

    def _leave(self, ticket: str) -> None:
        slots, queue, tickets, _ = self._keys
        self._run("leave", (slots, queue, tickets), (ticket, self._limit, self._wake, int(TICKET_TTL * 1000)))

    # -- renewal

    def _hold(self, slot: str) -> None:
        with self._lock:
            self._held.add(slot)
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_while_held, name=f"avatarsdk-limiter-{self._number}", daemon=True
                )
                self._renewer.start()

    def _renew_while_held(self) -> None:
        """The renewal thread: every third of a lease, extend the leases of this process's slots; end when none
        is held."""
        cond, every = self._cond, self._lease_ms / 3000
        while True:
            deadline = Deadline(every)
            with cond:
                while self._held and not deadline.passed():
                    cond.wait(deadline.remaining())
                if not self._held:
                    if self._renewer is threading.current_thread():
                        self._renewer = None
                    return
            with self._io:
                with cond:
                    held = sorted(self._held)
                if not held:
                    continue
                try:
                    lapsed = self._run("renew", self._keys[:1], (self._lease_ms, *held))
                except SessionTokenError as err:
                    logger.warning("%r: could not renew %d slot leases (%s); retrying", self, len(held), err)
                    continue
            for slot in lapsed:
                logger.warning(
                    "%r: the lease of slot %s had run out before it was renewed (this process paused longer than"
                    " the lease?); it counts again, but another process may have taken its place meanwhile",
                    self,
                    slot.decode() if isinstance(slot, bytes) else slot,
                )

    # -- Redis calls

    def _run(self, script: str, keys: Tuple[str, ...], args: Tuple[Any, ...]) -> Any:
        return self._call(lambda: self._scripts[script](keys=keys, args=args))

    def _call(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, its Redis errors as :class:`SessionTokenError`."""
        errors = self._errors
        try:
            return fn()
        except errors.RedisError as exc:
            unreachable = isinstance(exc, (errors.ConnectionError, errors.TimeoutError))
            denied = isinstance(exc, errors.AuthenticationError)  # a ConnectionError that trying again will not mend
            raise SessionTokenError(
                f"limiter {self!r}: "
                + ("Redis is unreachable" if unreachable and not denied else "Redis refused a command")
                + f" ({type(exc).__name__}: {exc})",
                code=AvatarSDKErrorCode.connectionFailed if unreachable else AvatarSDKErrorCode.unknown,
                retryable=unreachable and not denied,
            ) from exc

    def __repr__(self) -> str:
        return f"RedisLimiter(name={self._name!r}, limit={self._limit})"


_made: weakref.WeakSet[RedisLimiter] = weakref.WeakSet()


def _reset_in_child() -> None:
    for limiter in list(_made):
        limiter._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)

__all__: List[str] = ["RedisLimiter"]
