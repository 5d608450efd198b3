"""Pull-style requests: send one utterance and iterate over that request's frames.

``AvatarSession.open_request()`` reserves a request id and subscribes to its frames *before* any audio is
sent, so no frame can be lost to a race between sending and subscribing. Frames are routed to the request by
``req_id`` on the session's dispatcher thread; the iterator hands them over in arrival order and ends after
the frame with ``end=true``::

    with session.open_request(frame_timeout=5, deadline=60) as request:
        for chunk, end in chunk_pcm(pcm):
            request.send(chunk, end=end)          # from this thread or any other
        for frame in request:                     # Frame(data, last, req_id)
            client.write(frame.data)

``AvatarSession.stream(pcm)`` does both for a whole utterance and returns the iterator, which fits
a streaming ``flask.Response`` (with ``response.call_on_close(frames.close)``) and Django's
``StreamingHttpResponse`` directly: when the web
server closes the response (the client went away), the request is abandoned, its buffer released and the
service told to stop (``interrupt``).

The ``transport_frames`` callback, when configured, still sees every frame of the session, pulled or not.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from types import TracebackType
from typing import Callable, Deque, Generator, List, NamedTuple, Optional, Protocol, Type, Union

from .errors import PHASE_WEBSOCKET_RUNTIME, AvatarSDKError, AvatarSDKErrorCode, RequestTimeoutError
from .playback import PlaybackState

__all__ = ["AvatarRequest", "Frame"]


class RequestChannel(Protocol):
    """What a pull request needs of its session (the session gives it one; the request knows nothing else)."""

    @property
    def connection_id(self) -> Optional[str]: ...

    def send(self, req_id: str, audio: Union[bytes, bytearray, memoryview], end: bool) -> None:
        """Send one chunk of request ``req_id``'s audio."""

    def release(self, req_id: str, *, abandoned: bool) -> None:
        """The request is done (``abandoned``: before its last frame; the service is then told to stop it)."""


class Frame(NamedTuple):
    """One animation frame of a request."""

    data: bytes
    """The message exactly as received (forward these bytes to the client-side SDK)."""
    last: bool
    """``True`` on the request's last frame."""
    req_id: str
    """The request it belongs to."""


class RequestInbox:
    """Where one request's frames and playback states wait: filled on the session's dispatcher (:meth:`push`,
    :meth:`event`, :meth:`fail`), read by the request's iterator. The session routes to it by ``req_id``."""

    def __init__(self, req_id: str) -> None:
        self.req_id = req_id
        self._lock = threading.Lock()  # `with` takes this, not the condition (ARCHITECTURE.md, Locks)
        self._cond = threading.Condition(self._lock)
        self._items: Deque[Union[Frame, PlaybackState]] = deque()  # frames, and playback states between them
        self._error: Optional[AvatarSDKError] = None
        self.finished = False  # the last frame arrived
        self.closed = False  # abandoned or done: no more frames are kept

    def __len__(self) -> int:
        return len(self._items)

    def push(self, data: bytes, last: bool) -> None:
        """A frame of this request arrived."""
        with self._lock:
            if self.closed or self.finished:
                return  # abandoned, or a repeated end (egress mode can send two)
            self._items.append(Frame(data, last, self.req_id))
            self.finished = last
            self._cond.notify()

    def event(self, state: PlaybackState) -> None:
        """A playback state of this request arrived."""
        with self._lock:
            if self.closed or self.finished:
                return
            self._items.append(state)
            self._cond.notify()

    def fail(self, error: AvatarSDKError) -> None:
        """The request failed, or the session ended before its last frame."""
        with self._lock:
            if self.closed or self.finished or self._error is not None:
                return
            self._error = error
            self._cond.notify()

    def take(self, until: Optional[float], timeout: Callable[[], AvatarSDKError]) -> Union[Frame, PlaybackState]:
        """The next item, waiting until ``until`` (``time.monotonic()``; ``None``: no limit), then raising
        what ``timeout`` makes; raises the request's error once its items are taken."""
        with self._lock:
            while not self._items:
                if self._error is not None:
                    raise self._error
                if self.closed:
                    raise ValueError(f"request {self.req_id} is closed")
                if self.finished:
                    raise ValueError(f"request {self.req_id} has no more frames")
                if until is None:
                    self._cond.wait()
                    continue
                remaining = until - time.monotonic()
                if remaining <= 0:
                    raise timeout()
                self._cond.wait(remaining)
            return self._items.popleft()

    def close(self) -> Optional[bool]:
        """Keep nothing more; return whether the request was abandoned before its last frame (and without an
        error), or ``None`` if it was already closed."""
        with self._lock:
            if self.closed:
                return None
            self.closed = True
            abandoned = not self.finished and self._error is None
            self._items.clear()
            self._cond.notify_all()
        return abandoned


class AvatarRequest:
    """One request (utterance) of a session, with an iterator over its frames.

    Create it with :meth:`AvatarSession.open_request`. Iterate it once (``for frame in request``), from one
    thread at a time; :meth:`send` may be called from any thread, also while another thread iterates.

    Args:
        frame_timeout: Seconds to wait for each frame (the first one included); ``None`` for no limit.
        deadline: Seconds from opening until the last frame; ``None`` for no limit.
    """

    def __init__(
        self,
        channel: RequestChannel,
        inbox: RequestInbox,
        *,
        frame_timeout: Optional[float],
        deadline: Optional[float],
    ) -> None:
        self.req_id = inbox.req_id
        self._channel = channel
        self._inbox = inbox
        self._frame_timeout = frame_timeout
        self._deadline = None if deadline is None else time.monotonic() + deadline

    def __repr__(self) -> str:
        inbox = self._inbox
        state = "closed" if inbox.closed else ("finished" if inbox.finished else "open")
        return f"<AvatarRequest {self.req_id} {state}, {len(inbox)} frames buffered>"

    # ---------------------------------------------------------------------------------- sending

    def send(self, audio: Union[bytes, bytearray, memoryview], end: bool = False) -> None:
        """Send one chunk of this request's audio (``end=True`` on the last).

        Raises:
            ValueError: the request's last chunk was already sent, it was interrupted, or it is closed.
            TypeError, ValueError, AvatarSDKError: as :meth:`AvatarSession.send_audio`.
        """
        if self._inbox.closed:
            raise ValueError(f"send(): request {self.req_id} is closed")
        self._channel.send(self.req_id, audio, end)

    # ---------------------------------------------------------------------------------- frames

    def __iter__(self) -> Generator[Frame, None, None]:
        return self.frames()

    def frames(self) -> Generator[Frame, None, None]:
        """The request's frames (see :meth:`events`, which also yields playback states)."""
        for event in self.events():
            if type(event) is Frame:
                yield event

    def events(self) -> Generator[Union[Frame, PlaybackState], None, None]:
        """The request's frames and :class:`~avatarsdk.PlaybackState` events (the service's newer generation
        answers ``pause()``/``resume()`` with them), in arrival order, ending after the last frame.

        Raises (from the iterator):
            AvatarSDKError: the service reported an error for this request, or the session ended first.
            RequestTimeoutError: no frame within ``frame_timeout``, or the ``deadline`` passed.

        Leaving the loop early (``break``, an exception, or a web server closing the response) abandons the
        request: buffered frames are dropped and the service is told to stop it.
        """
        try:
            while True:
                event = self._inbox.take(self._wait_until(), self._timeout)
                yield event
                if type(event) is Frame and event.last:
                    return
        finally:
            self.close()

    def collect(self) -> List[Frame]:
        """Every frame of the request, once the last one has arrived."""
        return list(self.frames())

    def _wait_until(self) -> Optional[float]:
        """When waiting for the next frame must stop (``time.monotonic()``; ``None``: never)."""
        limits = []
        if self._frame_timeout is not None:
            limits.append(time.monotonic() + self._frame_timeout)
        if self._deadline is not None:
            limits.append(self._deadline)
        return min(limits) if limits else None

    def _timeout(self) -> RequestTimeoutError:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            what = "the request's deadline passed before its last frame"
        else:
            what = f"no frame within {self._frame_timeout}s"
        return RequestTimeoutError(
            AvatarSDKErrorCode.timeout,
            f"request {self.req_id}: {what}",
            phase=PHASE_WEBSOCKET_RUNTIME,
            req_id=self.req_id,
            connection_id=self._channel.connection_id,
            retryable=True,
        )

    # ---------------------------------------------------------------------------------- lifecycle

    @property
    def finished(self) -> bool:
        """``True`` once the last frame has arrived."""
        return self._inbox.finished

    def close(self) -> None:
        """Stop following the request: drop buffered frames; if its last frame has not arrived (and the
        service reported no error for it), tell the service to stop it (``interrupt``). Idempotent."""
        abandoned = self._inbox.close()
        if abandoned is not None:
            self._channel.release(self.req_id, abandoned=abandoned)

    def __enter__(self) -> AvatarRequest:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()
