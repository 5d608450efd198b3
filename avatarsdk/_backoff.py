"""Capped exponential backoff: one immutable value for the token call's retries, reconnects and the pool.

A :class:`Backoff` only computes; it never sleeps and holds no state, so the loops that use it (``_token``,
``_reconnector``, ``_pool_maintainer``) stay small and the policy is tested on its own (in the manner of
urllib3's ``Retry``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Backoff:
    """How long to wait before each retry, and whether another is allowed.

    Retry ``n`` (1-based) waits ``min(cap, initial * multiplier ** (n - 1))`` seconds less a random part of up
    to ``jitter`` of it (1: anywhere from 0 to the wait, "full jitter"; 0: exact waits), and at least the
    server's ``Retry-After``. At most ``retries`` retries (``None``: no limit), each starting within
    ``deadline`` seconds of the first attempt (``None``: no limit).
    """

    initial: float = 0.5
    cap: float = 10.0
    multiplier: float = 2.0
    jitter: float = 1.0
    retries: Optional[int] = None
    deadline: Optional[float] = None

    def delay(
        self, retry: int, retry_after: Optional[float] = None, *, rand: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1-based), ``Retry-After`` honoured."""
        try:
            base = min(self.cap, self.initial * self.multiplier ** (retry - 1))
        except OverflowError:  # a long run of failures (the pool retries without limit): the cap holds
            base = self.cap
        wait = base * (1.0 - self.jitter * rand())
        return wait if retry_after is None or retry_after < wait else retry_after

    def next_delay(
        self,
        retry: int,
        elapsed: float,
        retry_after: Optional[float] = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> Optional[float]:
        """The wait before retry ``retry`` when ``elapsed`` seconds have passed since the first attempt, or
        ``None`` when no retry is left: ``retries`` are used up, or it would start after ``deadline``."""
        if self.retries is not None and retry > self.retries:
            return None
        wait = self.delay(retry, retry_after, rand=rand)
        if self.deadline is not None and elapsed + wait > self.deadline:
            return None
        return wait


#: The token call without retries (a reconnect's own backoff stands in for them).
NO_RETRIES = Backoff(retries=0)
