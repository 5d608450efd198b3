"""The pool's public values: :class:`PoolStats` (a snapshot) and :class:`PoolTimeoutError` (a borrow that gave
up); both are exported from :mod:`avatarsdk.pool` and the package."""

from __future__ import annotations

import dataclasses
from typing import Optional

from .errors import AvatarSDKError, AvatarSDKErrorCode

__all__ = ["PoolStats", "PoolTimeoutError", "timeout_error"]


class PoolTimeoutError(AvatarSDKError, TimeoutError):
    """No session could be borrowed within the borrow timeout: all ``max_size`` sessions were in use, or the
    service refused new ones for its concurrency limit.

    Its ``code`` is ``timeout`` and ``retryable`` is ``True``; it is also a builtin ``TimeoutError``.

    Attributes:
        last_error: The service's refusal for its concurrency limit (code ``concurrencyLimit``) that kept the
            borrower waiting, also the ``__cause__``; ``None`` when the pool's own ``max_size`` did.
    """

    last_error: Optional[AvatarSDKError] = None


@dataclasses.dataclass(frozen=True)
class PoolStats:
    """A snapshot of a :class:`SessionPool`.

    Attributes:
        idle: Started sessions waiting to be lent.
        in_use: Sessions lent to borrowers now.
        creating: Sessions being started now (by borrowers or the maintenance thread).
        created: Sessions started successfully so far.
        discarded: Sessions dropped because they ended, failed, or were due for a new token (sessions closed
            by ``close()`` are not counted, nor those in ``closed_idle`` and ``closed_age``).
        waits: Borrows that had to wait for a session to be returned.
        timeouts: Borrows that gave up (:class:`PoolTimeoutError`).
        failed: Session starts that raised (the borrower got the error, or the maintenance thread logged it).
        refused: Session starts the service refused for its concurrency limit (the borrowers waited on).
        closed_idle: Idle sessions closed after ``max_idle_time``.
        closed_age: Sessions retired for ``max_session_age``.
        connected_seconds: The connected time of the pool's sessions, open and closed, in seconds: roughly what
            the service bills (1 credit per started 6 s of each session).
    """

    idle: int
    in_use: int
    creating: int
    created: int
    discarded: int
    waits: int
    timeouts: int
    failed: int
    refused: int = 0
    closed_idle: int = 0
    closed_age: int = 0
    connected_seconds: float = 0.0


def timeout_error(message: str, last_error: Optional[AvatarSDKError]) -> PoolTimeoutError:
    """A :class:`PoolTimeoutError` saying ``message``, naming the refusal that kept the borrower waiting."""
    err = PoolTimeoutError(AvatarSDKErrorCode.timeout, message, retryable=True)
    err.last_error = last_error
    return err
