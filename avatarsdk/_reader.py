"""The reader thread of a started connection: ``recv`` → parse → queue, with the keepalive, until the stream ends.

It never runs user code and knows nothing of what consumes its queue: binary payloads go in as they came, text
messages as :class:`~avatarsdk._queue.TextFrame` markers, pings are answered, a close frame is echoed, and the
end of the stream (a close, a drop, a protocol error, a dead peer, a local shutdown) is the last item it puts.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Callable, List, Optional, Union

import websocket

from . import _protocol
from ._connection import Connection, StreamEnd
from ._faults import CLOSE_ABNORMAL, CLOSE_NORMAL
from ._frames import OP_CLOSE, OP_PING, OP_TEXT, Control, FrameError, Message
from ._queue import FrameQueue, TextFrame
from .errors import PHASE_WEBSOCKET_RUNTIME, AvatarSDKError, AvatarSDKErrorCode

logger = logging.getLogger(__name__)


class ParkedThread:
    """A named daemon thread started ahead of its work, parked until :meth:`run` gives it the work.

    ``init()`` starts the reader's thread this way, so that ``start()`` hands the connection over instead of
    paying for a thread start. While parked it holds nothing of the session, so a session dropped without
    ``close()`` lets it go (the session cancels it from a ``weakref.finalize``).
    """

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()  # `with` takes this, not the condition (ARCHITECTURE.md, Locks)
        self._cond = threading.Condition(self._lock)
        self._work: Optional[Callable[[], None]] = None
        self._cancelled = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def run(self, work: Callable[[], None]) -> None:
        """Give the thread its work (once)."""
        with self._lock:
            self._work = work
            self._cond.notify()

    def cancel(self) -> None:
        """Let the thread end without work (no effect once :meth:`run` was called)."""
        with self._lock:
            self._cancelled = True
            self._cond.notify()

    def _run(self) -> None:
        with self._lock:
            while self._work is None and not self._cancelled:
                self._cond.wait()
            work, self._work = self._work, None
        if work is not None:
            work()


class Reader:
    """The receive side of a started connection: ``recv`` → parse → queue, until the stream ends.

    It runs on the session's reader thread (a :class:`ParkedThread`). The queue tells its consumer of the items
    (a dispatcher thread starts with the first one, so an idle session has a single thread).
    """

    def __init__(self, conn: Connection, queue: FrameQueue[StreamEnd]) -> None:
        self._conn = conn
        self._queue = queue

    def run(self) -> None:
        self._receive()

    def _receive(self) -> None:
        conn, queue = self._conn, self._queue
        parser = conn.parser
        keepalive = _Keepalive()
        end = StreamEnd(None, "", RuntimeError("reader stopped"))
        try:
            messages, conn.pending = conn.pending, []
            parser.saw_control = bool(messages)
            while True:
                if parser.saw_control:
                    parser.saw_control = False
                    stop = self._deliver_with_controls(messages)
                    if stop is not None:
                        end = stop
                        break
                elif messages:
                    self._queue.put_many(messages)
                if conn.ping_interval is not None and not keepalive.wait(conn):
                    end = keepalive.dead_end(conn)
                    break
                try:
                    messages = conn.receive(conn.ping_interval is not None)
                except socket.timeout:
                    messages = []  # idle: the socket timeout bounds sends, not silence
                    continue
                keepalive.heard()
        except FrameError as exc:
            logger.debug("invalid frame from the server: %s", exc)
            if exc.messages:  # complete before the fault: still delivered (a close among them wins)
                stop = self._deliver_with_controls(exc.messages)
                if stop is not None:
                    end = stop
                    return
            conn.send_close(exc.close_code)
            fault = AvatarSDKError(
                AvatarSDKErrorCode.protocolError,
                f"invalid WebSocket frame from the server: {exc}",
                phase=PHASE_WEBSOCKET_RUNTIME,
                close_code=exc.close_code,
            )
            end = StreamEnd(exc.close_code, "", exc, fault)
        except (EOFError, OSError, ssl.SSLError, websocket.WebSocketException) as exc:
            end = StreamEnd(None, "", exc)
            logger.debug("receive side ended: %s", type(exc).__name__)
        except Exception as exc:
            end = StreamEnd(None, "", exc)
            logger.exception("unexpected error in the reader thread")
        finally:
            conn.end = end
            conn.shutdown()
            queue.put_end(end)

    def _deliver_with_controls(self, messages: List[Message]) -> Optional[StreamEnd]:
        """Queue the data messages, answer pings; return the end if a close frame came."""
        conn = self._conn
        data: List[Union[bytes, TextFrame]] = []
        for message in messages:
            if type(message) is bytes:
                data.append(message)
                continue
            assert isinstance(message, Control)
            if message.opcode == OP_PING:
                conn.pong(message.payload)
            elif message.opcode == OP_TEXT:
                data.append(TextFrame(len(message.payload)))
            elif message.opcode == OP_CLOSE:
                if data:
                    self._queue.put_many(data)
                code, reason = _protocol.parse_close(message.payload)
                logger.debug("close frame received (code %s)", code)
                conn.send_close(code if code is not None and _sendable_close_code(code) else CLOSE_NORMAL)
                return StreamEnd(code, reason)
        if data:
            self._queue.put_many(data)
        return None


class _Keepalive:
    """Pings the server after ``ping_interval`` seconds without hearing from it; a ping that ``ping_timeout``
    seconds bring no byte back means a dead peer (anything received proves the peer alive)."""

    def __init__(self) -> None:
        self._last_heard = time.monotonic()
        self._ping_sent: Optional[float] = None

    def heard(self) -> None:
        self._last_heard = time.monotonic()
        self._ping_sent = None

    def wait(self, conn: Connection) -> bool:
        """Wait until bytes can be read, pinging on the way; ``False`` if the peer is dead."""
        assert conn.ping_interval is not None
        while True:
            now = time.monotonic()
            if self._ping_sent is None:
                until = self._last_heard + conn.ping_interval
            elif conn.ping_timeout is None:
                until = now + conn.ping_interval  # no limit on the answer: ping again later
            else:
                until = self._ping_sent + conn.ping_timeout
            if conn.wait_readable(until - now):
                return True
            if self._ping_sent is not None and conn.ping_timeout is not None:
                return False
            logger.debug("no data for %ss: ping", conn.ping_interval)
            conn.ping(b"avatarsdk")
            self._ping_sent = time.monotonic()

    def dead_end(self, conn: Connection) -> StreamEnd:
        fault = AvatarSDKError(
            AvatarSDKErrorCode.connectionClosed,
            f"no answer from {conn.host} to a ping within {conn.ping_timeout}s: the connection is dead",
            phase=PHASE_WEBSOCKET_RUNTIME,
            close_code=CLOSE_ABNORMAL,
            retryable=True,
        )
        return StreamEnd(None, "", TimeoutError("keepalive"), fault)


def _sendable_close_code(code: int) -> bool:
    """Whether RFC 6455 lets an endpoint send ``code`` (so it can be echoed)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code <= 4999
