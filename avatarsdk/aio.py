"""The blocking SDK from asyncio code (ASGI servers: Starlette, FastAPI, Django under ASGI) without blocking
the event loop: a blocking iterator driven on a thread of its own, read as an async iterator.

Each :class:`ThreadedIterator` owns one worker thread (``avatarsdk-aio-N``), not a thread of the event loop's
default executor: a stream waits up to ``frame_timeout`` for each frame, and a few of them would otherwise
fill that small executor and stall every ``asyncio.to_thread`` call of the application.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
from types import TracebackType
from typing import Any, AsyncIterator, Callable, Iterator, Optional, Type, TypeVar, Union

from .avatar_session import DEFAULT_CHUNK_MS, DEFAULT_FRAME_TIMEOUT
from .pool import SessionPool
from .request import Frame
from .tracing import TraceContext

__all__ = ["ThreadedIterator", "stream_async"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_END: Any = object()  # next()'s default: the blocking iterator is exhausted
_numbers = itertools.count(1)


class ThreadedIterator(AsyncIterator[T]):
    """An async iterator over a blocking iterator, each ``next()`` run on the iterator's own worker thread.

    Stopping early closes the blocking iterator on that thread (for :func:`stream_async`: the session goes
    back to the pool and the request is interrupted at the service): :meth:`aclose` (also at the end of an
    ``async with`` block), :meth:`close` (what a server calls on a response body; it does not wait), or the
    cancellation of a task awaiting the next item (a client that went away). A ``next()`` in progress cannot
    be cut short: the close follows it, at the latest after the blocking iterator's own timeout
    (``frame_timeout`` for frames). An error of the blocking iterator is raised from ``__anext__``.

    Thread-safety: one consumer at a time, as for any iterator.
    """

    def __init__(self, iterator: Iterator[T]) -> None:
        self._adopt(iterator, _new_worker())

    def _adopt(self, iterator: Iterator[T], worker: concurrent.futures.ThreadPoolExecutor) -> None:
        self._iterator = iterator
        self._worker = worker
        self._closing: Optional[concurrent.futures.Future[None]] = None
        self._lock = threading.Lock()

    @classmethod
    async def open(cls, factory: Callable[[], Iterator[T]]) -> ThreadedIterator[T]:
        """Call ``factory`` on a new worker thread (it may block: borrow a session, send audio) and iterate
        what it returns on that thread. An exception of ``factory`` is raised here; cancelled while
        ``factory`` runs, the iterator it returns is closed as soon as it returns."""
        worker = _new_worker()
        future = worker.submit(factory)
        try:
            iterator = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda done: _close_result(done, worker))
            raise
        except BaseException:
            worker.shutdown(wait=False)
            raise
        made = cls.__new__(cls)
        made._adopt(iterator, worker)
        return made

    def __aiter__(self) -> ThreadedIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._closing is not None:
            raise StopAsyncIteration
        future = self._worker.submit(next, self._iterator, _END)
        try:
            item = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.close()  # runs on the worker after the next() in progress
            raise
        except BaseException:
            self.close()
            raise
        if item is _END:
            self.close()
            raise StopAsyncIteration
        result: T = item
        return result

    def close(self) -> None:
        """Close the blocking iterator on the worker thread, after any ``next()`` in progress; return at once.
        Idempotent."""
        with self._lock:
            if self._closing is not None:
                return
            closer = getattr(self._iterator, "close", None)
            self._closing = self._worker.submit(closer if callable(closer) else _nothing)
        self._closing.add_done_callback(_log_failure)
        self._worker.shutdown(wait=False)  # the thread ends after the close

    async def aclose(self) -> None:
        """Close the blocking iterator (as :meth:`close`) and wait until it is closed."""
        self.close()
        assert self._closing is not None
        await asyncio.wrap_future(self._closing)

    async def __aenter__(self) -> ThreadedIterator[T]:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()


async def stream_async(
    pool: SessionPool,
    audio: Union[bytes, bytearray, memoryview],
    *,
    timeout: Optional[float] = None,
    chunk_ms: int = DEFAULT_CHUNK_MS,
    frame_timeout: Optional[float] = DEFAULT_FRAME_TIMEOUT,
    deadline: Optional[float] = None,
    trace_context: Optional[TraceContext] = None,
) -> ThreadedIterator[Frame]:
    """:meth:`SessionPool.stream` for asyncio code: borrow a session and send ``audio`` on a worker thread,
    then return an async iterator over the frames (``async for frame in await stream_async(pool, pcm)``).

    The event loop is never blocked. Closing the iterator early (``aclose()``, ``close()``, or cancelling
    the task that reads it) gives the session back and interrupts the request, as closing
    :meth:`SessionPool.stream`'s iterator does.

    Errors are those of :meth:`SessionPool.stream` (``PoolTimeoutError``, ``AvatarSDKError``, ``ValueError`` for
    bad arguments), raised by the ``await``; the iterator raises what the frames' iterator raises.
    """
    return await ThreadedIterator.open(
        lambda: pool.stream(
            audio,
            timeout=timeout,
            chunk_ms=chunk_ms,
            frame_timeout=frame_timeout,
            deadline=deadline,
            trace_context=trace_context,
        )
    )


def _new_worker() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"avatarsdk-aio-{next(_numbers)}")


def _nothing() -> None:
    return None


def _close_result(done: concurrent.futures.Future[Any], worker: concurrent.futures.ThreadPoolExecutor) -> None:
    """After a cancelled :meth:`ThreadedIterator.open`: close what the factory returned, if anything."""
    if not done.cancelled() and done.exception() is None:
        closer = getattr(done.result(), "close", None)
        if callable(closer):
            worker.submit(closer).add_done_callback(_log_failure)
    worker.shutdown(wait=False)


def _log_failure(done: concurrent.futures.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.warning("closing a blocking iterator failed: %r", done.exception())
