"""The ingress connection opened ahead of ``start()``, while the token call runs.

:class:`Preconnect` opens the TCP connection (through the proxy, as websocket-client would: the same function
opens it) and completes TLS on a short-lived thread (``avatarsdk-preconnect-N``), then waits. ``start()``
takes the socket and sends the upgrade on it: the upgrade is the first byte sent, so no session is opened,
billed or counted against the plan before ``start()``. A connect that failed is raised by ``start()`` as its
own connect would have; a socket that sat longer than :data:`MAX_AGE` or that the server closed is closed and
replaced by a fresh connect (nothing was sent on it, so nothing is lost); one never taken is closed by
:meth:`Preconnect.discard` (``close()``, a failed or repeated ``init()``, the session's garbage collection).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from typing import Any, Optional, Tuple, Union
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

MAX_AGE = 5.0  # seconds an opened connection waits for start() before a fresh one is made instead

Outcome = Union[socket.socket, BaseException, None]  # a socket to upgrade, the connect's error, or connect anew


def origin(url: str) -> Tuple[str, str]:
    """The scheme and host:port a connection to ``url`` goes to."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class Preconnect:
    """One connection to ``url``'s origin, opened on its own thread (see the module documentation).

    ``connect(url, timeout)`` opens it and returns the socket. Thread-safety: :meth:`take` and :meth:`discard`
    may be called from any thread, each once (a second call finds nothing).
    """

    __slots__ = ("_done", "_ended", "_lock", "_outcome", "_taken", "origin", "thread")

    def __init__(self, url: str, connect: Any, timeout: Optional[float], name: str) -> None:
        self.origin = origin(url)
        self._lock = threading.Lock()  # over _outcome and _taken
        self._done = threading.Event()
        self._outcome: Outcome = None
        self._taken = False  # by take() or discard(): a socket that arrives later is closed
        self._ended = 0.0
        self.thread = threading.Thread(target=self._run, args=(url, connect, timeout), name=name, daemon=True)
        self.thread.start()

    def _run(self, url: str, connect: Any, timeout: Optional[float]) -> None:
        outcome: Outcome
        try:
            outcome = connect(url, timeout)
        except BaseException as exc:  # noqa: BLE001 - kept for start() to raise
            outcome = exc
        with self._lock:
            self._ended = time.monotonic()
            if self._taken:
                close_outcome(outcome)
            else:
                self._outcome = outcome
        self._done.set()

    def take(self, url: str, wait: Optional[float]) -> Outcome:
        """For ``start()``: the open socket (for ``url``'s origin, fresh and alive), or the connect's recent
        error; ``None`` when ``start()`` should connect anew. Waits up to ``wait`` seconds for the connect."""
        if origin(url) == self.origin and self._done.wait(wait):
            self.thread.join()  # it only returns after setting _done: no thread outlives the hand-over
        with self._lock:
            outcome, self._outcome = self._outcome, None
            self._taken = True
            ended = self._ended
        if outcome is None:
            return None  # another origin, or still connecting (closed when it ends)
        fresh = time.monotonic() - ended < MAX_AGE and origin(url) == self.origin
        if isinstance(outcome, BaseException):
            return outcome if fresh else None
        if fresh and alive(outcome):
            return outcome
        logger.debug("the connection opened ahead was %s; connecting anew", "stale" if fresh else "old")
        close_outcome(outcome)
        return None

    def discard(self) -> None:
        """Close the connection if it was never taken (now, or when its connect ends)."""
        with self._lock:
            outcome, self._outcome = self._outcome, None
            self._taken = True
        close_outcome(outcome)


class Ahead:
    """A session's connection opened ahead, if any: what a finalizer of the session may hold (it references
    nothing of the session, so the session can still be collected)."""

    __slots__ = ("pre",)

    def __init__(self) -> None:
        self.pre: Optional[Preconnect] = None

    def swap(self, pre: Optional[Preconnect]) -> Optional[Preconnect]:
        """Put ``pre`` in place; return what was there."""
        old, self.pre = self.pre, pre
        return old

    def discard(self) -> None:
        """Close the connection held, if it was never taken."""
        old = self.swap(None)
        if old is not None:
            old.discard()


def alive(sock: socket.socket) -> bool:
    """Whether ``sock`` is still open with nothing received (a server says nothing before the upgrade; TLS
    session tickets are read and ignored)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    if not readable and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
        return True
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        try:
            sock.recv(1)  # data (unexpected) or b"" (closed): either way not usable
            return False
        except (ssl.SSLWantReadError, BlockingIOError):
            return True  # only TLS records of the handshake's aftermath were there
        except OSError:
            return False
    finally:
        try:
            sock.settimeout(timeout)
        except OSError:
            pass


def close_outcome(outcome: Outcome) -> None:
    """Close ``outcome`` if it is a socket."""
    if isinstance(outcome, socket.socket):
        try:
            outcome.close()
        except OSError:
            pass
