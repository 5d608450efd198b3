"""An open WebSocket to the ingress: sending, the handshake, and the receive primitives the reader uses.

websocket-client frames what is sent (its lock keeps each frame whole); receiving is ours: large blocks read
from the socket and cut into messages by ``_frames.FrameParser`` (one system call per block instead of three per
frame).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import websocket

from . import _protocol
from ._deadline import Deadline
from ._faults import CLOSE_NORMAL, closed_error, server_error, type_of
from ._frames import OP_CLOSE, OP_PING, OP_TEXT, Control, FrameError, FrameParser, Message
from ._preconnect import Outcome
from ._upgrade import abort, open_websocket
from .errors import (
    PHASE_WEBSOCKET_HANDSHAKE,
    PHASE_WEBSOCKET_SEND,
    AvatarSDKError,
    AvatarSDKErrorCode,
)

# Bytes asked of each read: many frames per system call in a burst. Kept under glibc's mmap threshold (128 KiB):
# CPython allocates the whole size for each call, and a larger buffer would be mapped and unmapped every time.
RECV_SIZE = 64 * 1024
_POLL = hasattr(select, "poll")  # poll() has no FD_SETSIZE limit: hundreds of sessions may be open


@dataclass(frozen=True)
class StreamEnd:
    """Why the receive side ended: a close frame from the peer, or a lost connection."""

    close_code: Optional[int]
    close_reason: str
    error: Optional[BaseException] = None  # the transport exception, for a lost connection
    fault: Optional[AvatarSDKError] = None  # the error to report, when the reader already knows it

    @property
    def peer_closed(self) -> bool:
        return self.error is None


class Connection:
    """An open WebSocket to the ingress. Sends are thread-safe (websocket-client locks each frame)."""

    def __init__(
        self,
        ws: websocket.WebSocket,
        host: str,
        secrets: Tuple[str, ...] = (),
        max_message_size: Optional[int] = None,
    ) -> None:
        self._ws = ws
        self.secrets = secrets  # removed from any text the server sends back
        sock = ws.sock
        assert sock is not None, "websocket-client returned without a socket"
        self._sock: socket.socket = sock
        # Once poll() said the socket is readable, a plain (not TLS) socket is read with os.read(): a socket
        # with a timeout would poll once more inside recv(). TLS reads go through the SSL object.
        self._direct_read = os.name == "posix" and not isinstance(sock, ssl.SSLSocket)
        self._poller: Optional[Any] = None  # select.poll() with the socket registered, made on first use
        self._polled_fd = -1
        self.host = host
        self.parser = FrameParser(max_message_size)
        self.pending: List[Message] = []  # received during the handshake, after its reply
        self.end: Optional[StreamEnd] = None  # set by the reader when the receive side ends
        self.close_sent = False
        self.ping_interval: Optional[float] = None
        self.ping_timeout: Optional[float] = None
        self._closed = False
        self._close_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        url: str,
        headers: Dict[str, str],
        *,
        connect_timeout: Optional[float],
        secrets: Tuple[str, ...],
        max_message_size: Optional[int] = None,
        options: Optional[Dict[str, Any]] = None,
        keepalive: Tuple[Optional[float], Optional[float]] = (None, None),
        preconnected: Outcome = None,
    ) -> Connection:
        """Connect and upgrade; raise :class:`AvatarSDKError` (phase ``websocket_connect``) on failure.

        ``options`` are websocket-client ``connect`` options (TLS, proxy); ``keepalive`` is
        ``(ping_interval, ping_timeout)`` for the reader; ``preconnected`` what a ``Preconnect`` gave.
        """
        ws, leftover = open_websocket(
            url, headers, connect_timeout=connect_timeout, secrets=secrets, options=options, preconnected=preconnected
        )
        conn = cls(ws, urlsplit(url).netloc, secrets, max_message_size)
        conn.ping_interval, conn.ping_timeout = keepalive
        if leftover:  # the server's first frames came with the upgrade response
            try:
                conn.pending = conn.parser.feed(leftover)
            except FrameError as exc:
                abort(ws)
                raise AvatarSDKError(
                    AvatarSDKErrorCode.protocolError,
                    f"invalid WebSocket frame right after the upgrade: {exc}",
                    phase=PHASE_WEBSOCKET_HANDSHAKE,
                ) from exc
        return conn

    def send_configure(self, configure: bytes, timeout: Optional[float]) -> None:
        """Send CLIENT_CONFIGURE_SESSION, the handshake's first message (phase ``websocket_handshake``)."""
        self._send(
            configure,
            timeout,
            phase=PHASE_WEBSOCKET_HANDSHAKE,
            late=f"sending the session configuration to {self.host} timed out after {timeout}s",
            during="the handshake",
        )

    def handshake(self, configure: bytes, timeout: Optional[float]) -> _protocol.Confirm:
        """Send CLIENT_CONFIGURE_SESSION and read the reply within ``timeout``; return the confirmation."""
        deadline = Deadline(timeout)
        self.send_configure(configure, timeout)
        return self.await_confirmation(deadline, timeout)

    def await_confirmation(self, deadline: Deadline, timeout: Optional[float]) -> _protocol.Confirm:
        """Read the handshake's reply (by ``deadline``; ``timeout`` names it in messages); return the
        confirmation.

        Raises :class:`AvatarSDKError` (phase ``websocket_handshake``) for a server error, a close, a timeout
        or an unexpected reply. Messages that arrived after the reply are kept in ``pending``.
        """
        phase = PHASE_WEBSOCKET_HANDSHAKE
        try:
            data = self._first_message(deadline)
        except (websocket.WebSocketTimeoutException, socket.timeout) as exc:
            raise AvatarSDKError(
                AvatarSDKErrorCode.connectionFailed,
                f"no handshake reply from {self.host} within {timeout}s",
                phase=phase,
                retryable=True,
            ) from exc
        except FrameError as exc:
            raise AvatarSDKError(
                AvatarSDKErrorCode.protocolError, f"invalid WebSocket frame during the handshake: {exc}", phase=phase
            ) from exc
        except (websocket.WebSocketException, OSError, EOFError) as exc:
            raise closed_error(None, "", phase=phase, during="the handshake") from exc
        reply = _protocol.decode(data)
        if isinstance(reply, _protocol.Confirm):
            if not reply.connection_id:
                raise AvatarSDKError(
                    AvatarSDKErrorCode.protocolError,
                    "handshake confirmation carries an empty connection_id",
                    phase=phase,
                )
            return reply
        if isinstance(reply, _protocol.ServerErrorMessage):
            raise server_error(reply, phase=phase, prefix="handshake rejected by the server", secrets=self.secrets)
        if isinstance(reply, _protocol.Malformed):
            raise AvatarSDKError(
                AvatarSDKErrorCode.protocolError,
                f"invalid protobuf in the handshake reply ({reply.size} bytes)",
                phase=phase,
            )
        raise AvatarSDKError(
            AvatarSDKErrorCode.protocolError,
            f"unexpected message type {type_of(reply)} in the handshake reply",
            phase=phase,
        )

    def _first_message(self, deadline: Deadline) -> bytes:
        """The first binary message (pings answered on the way); later ones are kept in ``pending``."""
        while True:
            if self.pending:  # received with the upgrade response
                messages, self.pending = self.pending, []
            else:
                remaining = deadline.remaining()
                if remaining is not None:
                    if remaining <= 0:
                        raise socket.timeout()
                    self._sock.settimeout(remaining)
                messages = self.receive()
            for index, message in enumerate(messages):
                if type(message) is bytes:
                    self.pending = messages[index + 1 :]
                    return message
                assert isinstance(message, Control)
                if message.opcode == OP_PING:
                    self.pong(message.payload)
                elif message.opcode == OP_CLOSE:
                    code, reason = _protocol.parse_close(message.payload)
                    raise closed_error(
                        code, reason, phase=PHASE_WEBSOCKET_HANDSHAKE, during="the handshake", secrets=self.secrets
                    )
                elif message.opcode == OP_TEXT:
                    raise AvatarSDKError(
                        AvatarSDKErrorCode.protocolError,
                        "expected a binary protobuf message during the handshake, got text",
                        phase=PHASE_WEBSOCKET_HANDSHAKE,
                    )

    def receive(self, ready: bool = False) -> List[Message]:
        """Block for the next block of bytes; return the messages it completed (maybe none). ``ready``: a poll
        just said the socket is readable.

        Raises:
            EOFError: the peer closed the TCP connection.
            socket.timeout: nothing arrived within the socket's timeout.
            FrameError: the peer broke the framing rules.
        """
        if ready and self._direct_read:
            try:
                data = os.read(self._sock.fileno(), RECV_SIZE)  # fileno() is -1 once closed: EBADF, not another fd
            except BlockingIOError:
                return []  # readiness was spurious
        else:
            data = self._sock.recv(RECV_SIZE)
        if not data:
            raise EOFError("connection closed by the peer without a close frame")
        return self.parser.feed(data)

    def set_timeout(self, timeout: Optional[float]) -> None:
        """The socket's timeout, for the reader's blocking reads until the next send sets its own."""
        self._ws.settimeout(timeout)

    def send(self, data: bytes, *, timeout: Optional[float], req_id: Optional[str] = None) -> None:
        """Send one binary message within ``timeout`` seconds (``None``: no limit); raise
        :class:`AvatarSDKError` (phase ``websocket_send``) on failure. Call with the session's send lock held."""
        self._send(
            data,
            timeout,
            phase=PHASE_WEBSOCKET_SEND,
            late=f"sending to {self.host} timed out (the server is not reading)",
            during="a send",
            req_id=req_id,
        )

    def _send(
        self,
        data: bytes,
        timeout: Optional[float],
        *,
        phase: str,
        late: str,
        during: str,
        req_id: Optional[str] = None,
    ) -> None:
        try:
            self._ws.settimeout(timeout)
            self._ws.send_binary(data)
        except (websocket.WebSocketTimeoutException, socket.timeout) as exc:
            raise AvatarSDKError(
                AvatarSDKErrorCode.connectionFailed, late, phase=phase, req_id=req_id, retryable=True
            ) from exc
        except (websocket.WebSocketException, OSError, AttributeError) as exc:
            # AttributeError: websocket-client drops its socket object once the connection is closed.
            raise closed_error(None, "", phase=phase, during=during, req_id=req_id) from exc

    def send_close(self, code: int = CLOSE_NORMAL, reason: bytes = b"", *, timeout: Optional[float] = None) -> bool:
        """Send a close frame (once, whichever thread asks first); return whether it went out. ``timeout``
        bounds a send blocked by a server that is not reading (``None``: the socket's current timeout)."""
        with self._close_lock:
            if self.close_sent:
                return False
            self.close_sent = True
        try:
            if timeout is not None:
                self._ws.settimeout(timeout)
            self._ws.send_close(code, reason)
            return True
        except (websocket.WebSocketException, OSError, AttributeError):
            return False

    def wait_readable(self, timeout: float) -> bool:
        """Whether bytes can be read within ``timeout`` seconds (TLS bytes already decrypted count)."""
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        if _POLL:
            fd = sock.fileno()
            if fd < 0:
                raise OSError(errno.EBADF, "the socket is closed")
            if self._poller is None or fd != self._polled_fd:
                self._poller = select.poll()
                self._poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR)
                self._polled_fd = fd
            return bool(self._poller.poll(max(0.0, timeout) * 1000))
        return bool(select.select([sock], [], [], max(0.0, timeout))[0])

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (failures surface on the receive side)."""
        try:
            self._ws.ping(payload)
        except (websocket.WebSocketException, OSError, AttributeError):
            pass

    def pong(self, payload: bytes) -> None:
        """Answer a ping (failures surface on the receive side)."""
        try:
            self._ws.pong(payload)
        except (websocket.WebSocketException, OSError, AttributeError):
            pass

    def shutdown(self) -> None:
        """Shut the socket down both ways: wakes a thread blocked in recv or send. Idempotent."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def release_copy(self) -> None:
        """Close this process's copy of the socket after a fork, leaving the connection to the parent (no lock:
        one held by a parent thread at the fork would never be released in the child)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass

    def close(self) -> None:
        """Release the socket. Call only when no thread can still be using it. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.shutdown()
        try:
            self._ws.shutdown()
        except (OSError, ssl.SSLError):
            pass
