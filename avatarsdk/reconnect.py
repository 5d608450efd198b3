"""Opt-in automatic reconnect: the policy (:class:`ReconnectPolicy`) and what the hook is told
(:class:`ReconnectEvent`).

A session created with ``reconnect=True`` (or a :class:`ReconnectPolicy`) that loses its connection to a fault
worth retrying (a drop: close code 1006 or no close at all, 1011, 1001/1012/1013/1014, a dead peer found by
the keepalive, a failed send; the service's 4002 and 4503) asks for a new session token, opens a new
connection and completes a new handshake, with capped, jittered exponential backoff between attempts. Other
ends (a normal close, 4001, 4003, 4010, a protocol error) end the session as without reconnect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional, Tuple, Union

from ._backoff import Backoff
from ._validation import check_timeout
from .errors import AvatarSDKError

__all__ = ["ReconnectEvent", "ReconnectPolicy", "ReconnectState"]


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a dropped session reconnects.

    Attempt ``n`` (1-based) starts after ``min(max_delay, initial_delay * multiplier ** (n - 1))`` seconds,
    less a random part of up to ``jitter`` of it (so that many sessions dropped together do not reconnect in
    step). The first attempt also waits: a service that just dropped every connection is not hit by all of
    them at once.

    Args:
        max_attempts: Attempts after one drop before the session gives up (at least 1). A successful
            reconnect starts the count again for the next drop.
        initial_delay: Seconds before the first attempt (0 or more).
        max_delay: Longest wait between attempts, in seconds (at least ``initial_delay``).
        multiplier: Growth of the wait from one attempt to the next (at least 1).
        jitter: Fraction of each wait that is randomised away (0: exact waits, 1: anywhere from 0 to the wait).
        deadline: Seconds from the drop within which attempts after the first may start (``None``: no limit).
    """

    max_attempts: int = 5
    initial_delay: float = 0.5
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5
    deadline: Optional[float] = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts: expected an int of at least 1, got {self.max_attempts!r}")
        for name in ("initial_delay", "max_delay", "multiplier", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: expected a number of 0 or more, got {value!r}")
        if self.max_delay < self.initial_delay:
            raise ValueError(
                f"max_delay: expected at least initial_delay ({self.initial_delay!r}), got {self.max_delay!r}"
            )
        if self.multiplier < 1:
            raise ValueError(f"multiplier: expected 1 or more, got {self.multiplier!r}")
        if self.jitter > 1:
            raise ValueError(f"jitter: expected a fraction from 0 to 1, got {self.jitter!r}")
        check_timeout("deadline", self.deadline)

    @property
    def backoff(self) -> Backoff:
        """The policy as the SDK's :class:`~avatarsdk._backoff.Backoff` (attempt ``n`` is its retry ``n``)."""
        return Backoff(
            initial=self.initial_delay,
            cap=self.max_delay,
            multiplier=self.multiplier,
            jitter=self.jitter,
            retries=self.max_attempts,
            deadline=self.deadline,
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (1-based)."""
        return self.backoff.delay(attempt)


def reconnect_policy(value: Union[bool, ReconnectPolicy, None]) -> Optional[ReconnectPolicy]:
    """The policy a session's ``reconnect`` argument stands for (``None``: no reconnect)."""
    if value is None or value is False:
        return None
    if value is True:
        return ReconnectPolicy()
    if isinstance(value, ReconnectPolicy):
        return value
    raise TypeError(f"reconnect: expected a bool or a ReconnectPolicy, got {type(value).__name__}")


class ReconnectState(str, Enum):
    """Where a reconnect stands, as told to ``on_reconnect``."""

    reconnecting = "reconnecting"
    """An attempt is about to start (after ``delay`` seconds)."""
    reconnected = "reconnected"
    """The attempt succeeded: ``connection_id`` is the new connection's."""
    failed = "failed"
    """The session gave up (attempts, deadline, or a failure not worth retrying); it is closing."""


@dataclass(frozen=True)
class ReconnectEvent:
    """What ``on_reconnect`` receives, on the session's dispatcher thread.

    Attributes:
        state: :class:`ReconnectState`.
        attempt: The attempt this event is about (1-based; for ``failed``, the number of attempts made).
        cause: The fault that dropped the connection.
        error: Why the previous attempt failed (``None`` before the first and once reconnected).
        delay: Seconds waited before this attempt (``reconnecting``).
        connection_id: The new connection's id (``reconnected``).
        previous_connection_id: The id of the connection that dropped.
        cut_req_ids: Requests in flight at the drop: they were failed with a retryable error naming them
            (their frames will not come; send their audio again to replay them).
    """

    state: ReconnectState
    attempt: int
    cause: AvatarSDKError = field(repr=False)
    error: Optional[AvatarSDKError] = field(default=None, repr=False)
    delay: float = 0.0
    connection_id: Optional[str] = None
    previous_connection_id: Optional[str] = None
    cut_req_ids: Tuple[str, ...] = ()
