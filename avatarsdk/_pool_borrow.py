"""A borrower's side of the pool: the ``with`` block of ``SessionPool.session()`` and the utterance of
``SessionPool.stream()``.

Both are built on two callables of the pool: ``acquire`` lends a session (or raises), ``release`` takes it back
with the failure that rules it out, if any (both first check for a fork). They return every session they
borrow, however the borrower's code ends.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Callable, Generator, Optional, Type

from ._deadline import Deadline
from ._pool_lender import PooledSession
from .avatar_session import AvatarSession
from .errors import AvatarSDKError
from .request import Frame
from .tracing import TraceContext

logger = logging.getLogger("avatarsdk.pool")  # the pool's records, whichever of its modules writes them

Acquire = Callable[[Deadline, Optional[float], str], PooledSession]  # (deadline, limit, op)
Release = Callable[[PooledSession, Optional[str]], None]  # (entry, failure)


class Borrow:
    """The context manager :meth:`SessionPool.session` returns: ``limit`` seconds to wait (``None``: no limit)."""

    def __init__(self, acquire: Acquire, release: Release, limit: Optional[float]) -> None:
        self._acquire = acquire
        self._release = release
        self._limit = limit
        self._entry: Optional[PooledSession] = None

    def __enter__(self) -> AvatarSession:
        if self._entry is not None:
            raise ValueError("session(): this borrow is already in use; call pool.session() again")
        self._entry = self._acquire(Deadline(self._limit), self._limit, "session")
        return self._entry.session

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return
        failure = None
        if isinstance(exc, AvatarSDKError):
            failure = f"the borrower's block raised {type(exc).__name__} ({exc.code.value})"
        self._release(entry, failure)


def stream_frames(
    acquire: Acquire,
    release: Release,
    data: bytes,
    limit: Optional[float],
    *,
    chunk_ms: int,
    frame_timeout: Optional[float],
    deadline: Optional[float],
    trace_context: Optional[TraceContext] = None,
    number: int,
) -> Generator[Optional[Frame], None, None]:
    """Borrow a session and send ``data`` on it at the first ``next()`` (which yields ``None``), then yield its
    frames. Sending on a session taken from the idle set that fails is tried once more on another (``number``:
    the pool's, for the log)."""
    borrow_by = Deadline(limit)
    for attempt in (1, 2):
        entry = acquire(borrow_by, limit, "stream")
        try:
            # A generator: closing it abandons the request.
            frames = entry.session.stream(
                data, chunk_ms=chunk_ms, frame_timeout=frame_timeout, deadline=deadline, trace_context=trace_context
            )
        except AvatarSDKError as exc:
            release(entry, f"sending failed ({exc.code.value})")
            if attempt == 2 or not entry.from_idle:
                raise
            logger.debug("pool #%d: sending on an idle session failed (%s); trying another", number, exc)
            continue
        except BaseException:
            release(entry, None)
            raise
        break
    failure: Optional[str] = None
    try:
        yield None  # stream() stops here: the session is lent and the audio sent
        yield from frames
    except AvatarSDKError as exc:
        failure = f"its request failed ({exc.code.value})"
        raise
    finally:
        frames.close()  # abandons (interrupts) the request unless its last frame arrived
        release(entry, failure)
