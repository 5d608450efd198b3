"""The WebSocket connection and the reader thread that owns its receive side.

websocket-client opens the connection (HTTP upgrade, TLS, proxies) and frames what we send. Receiving is
ours: the reader reads large blocks from the socket and cuts them into messages with ``_frames.FrameParser``
(one system call per block instead of three per frame), answers pings, and puts binary payloads on the
frame queue as they are; the end of the stream (a close frame, a drop, a local shutdown) is the last item
it queues. Decoding and user code happen on the dispatcher thread (``_dispatch.py``).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

import websocket

try:  # websocket-client's connect and request building, so that the upgrade response can be read in blocks
    from websocket import _handshake as _ws_handshake
    from websocket import _http as _ws_http

    _OWN_UPGRADE = all(
        callable(getattr(module, name, None))
        for module, name in (
            (_ws_http, "connect"),
            (_ws_http, "proxy_info"),
            (_ws_handshake, "_get_handshake_headers"),
            (_ws_handshake, "_validate"),
        )
    )
except ImportError:  # pragma: no cover - another websocket-client layout: its own connect() is used
    _OWN_UPGRADE = False

from . import _protocol
from ._dispatch import Dispatcher, FrameQueue, TextFrame
from ._frames import OP_CLOSE, OP_PING, OP_TEXT, Control, FrameError, FrameParser, Message
from ._http_errors import http_rejection, json_or_none, redact
from .errors import (
    PHASE_WEBSOCKET_CONNECT,
    PHASE_WEBSOCKET_HANDSHAKE,
    PHASE_WEBSOCKET_RUNTIME,
    PHASE_WEBSOCKET_SEND,
    AvatarSDKError,
    AvatarSDKErrorCode,
    classify,
)

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_ABNORMAL = 1006  # never sent on the wire: "the connection was lost without a close frame"
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
    ) -> Connection:
        """Connect and upgrade; raise :class:`AvatarSDKError` (phase ``websocket_connect``) on failure.

        ``options`` are websocket-client ``connect`` options (TLS, proxy); ``keepalive`` is
        ``(ping_interval, ping_timeout)`` for the reader.
        """
        host = urlsplit(url).netloc
        ws = websocket.WebSocket(enable_multithread=True, skip_utf8_validation=True, **_socket_options(options))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("connecting to %s", _protocol.redact_url(url))
        header = [f"{k}: {v}" for k, v in headers.items()]
        leftover = b""
        try:
            if _OWN_UPGRADE:
                leftover = _upgrade(ws, url, header, connect_timeout, _connect_options(options))
            else:
                ws.connect(
                    url, header=header, timeout=connect_timeout, suppress_origin=True, **_connect_options(options)
                )
        except websocket.WebSocketBadStatusException as exc:
            _abort(ws)
            raise _upgrade_rejected(exc, host, secrets) from exc
        except (websocket.WebSocketTimeoutException, socket.timeout) as exc:
            _abort(ws)
            raise _connect_failed(f"connecting to {host} timed out after {connect_timeout}s") from exc
        except (websocket.WebSocketAddressException, websocket.WebSocketProxyException, OSError) as exc:
            _abort(ws)
            raise _connect_failed(f"could not connect to {host}: {_describe(exc)}") from exc
        except websocket.WebSocketException as exc:
            _abort(ws)
            raise AvatarSDKError(
                AvatarSDKErrorCode.protocolError,
                f"WebSocket upgrade with {host} failed: {type(exc).__name__}",
                phase=PHASE_WEBSOCKET_CONNECT,
            ) from exc
        conn = cls(ws, host, secrets, max_message_size)
        conn.ping_interval, conn.ping_timeout = keepalive
        if leftover:  # the server's first frames came with the upgrade response
            try:
                conn.pending = conn.parser.feed(leftover)
            except FrameError as exc:
                _abort(ws)
                raise AvatarSDKError(
                    AvatarSDKErrorCode.protocolError,
                    f"invalid WebSocket frame right after the upgrade: {exc}",
                    phase=PHASE_WEBSOCKET_HANDSHAKE,
                ) from exc
        return conn

    def send_configure(self, configure: bytes, timeout: Optional[float]) -> None:
        """Send CLIENT_CONFIGURE_SESSION, the handshake's first message (phase ``websocket_handshake``)."""
        try:
            self._ws.settimeout(timeout)
            self._ws.send_binary(configure)
        except (websocket.WebSocketTimeoutException, socket.timeout) as exc:
            raise AvatarSDKError(
                AvatarSDKErrorCode.connectionFailed,
                f"sending the session configuration to {self.host} timed out after {timeout}s",
                phase=PHASE_WEBSOCKET_HANDSHAKE,
                retryable=True,
            ) from exc
        except (websocket.WebSocketException, OSError, AttributeError) as exc:
            raise closed_error(None, "", phase=PHASE_WEBSOCKET_HANDSHAKE, during="the handshake") from exc

    def handshake(self, configure: bytes, timeout: Optional[float]) -> _protocol.Confirm:
        """Send CLIENT_CONFIGURE_SESSION and read the reply within ``timeout``; return the confirmation."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.send_configure(configure, timeout)
        return self.await_confirmation(deadline, timeout)

    def await_confirmation(self, deadline: Optional[float], timeout: Optional[float]) -> _protocol.Confirm:
        """Read the handshake's reply (by ``deadline``, a ``time.monotonic()`` value); return the confirmation.

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
            f"unexpected message type {_type_of(reply)} in the handshake reply",
            phase=phase,
        )

    def _first_message(self, deadline: Optional[float]) -> bytes:
        """The first binary message (pings answered on the way); later ones are kept in ``pending``."""
        while True:
            if self.pending:  # received with the upgrade response
                messages, self.pending = self.pending, []
            else:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
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
        self._ws.settimeout(timeout)

    def send(self, data: bytes, *, req_id: Optional[str] = None) -> None:
        """Send one binary message; raise :class:`AvatarSDKError` (phase ``websocket_send``) on failure."""
        try:
            self._ws.send_binary(data)
        except (websocket.WebSocketTimeoutException, socket.timeout) as exc:
            raise AvatarSDKError(
                AvatarSDKErrorCode.connectionFailed,
                f"sending to {self.host} timed out (the server is not reading)",
                phase=PHASE_WEBSOCKET_SEND,
                req_id=req_id,
                retryable=True,
            ) from exc
        except (websocket.WebSocketException, OSError, AttributeError) as exc:
            # AttributeError: websocket-client drops its socket object once the connection is closed.
            raise closed_error(None, "", phase=PHASE_WEBSOCKET_SEND, during="a send", req_id=req_id) from exc

    def send_close(self, code: int = CLOSE_NORMAL, reason: bytes = b"") -> bool:
        """Send a close frame (once, whichever thread asks first); return whether it went out."""
        with self._close_lock:
            if self.close_sent:
                return False
            self.close_sent = True
        try:
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


def _abort(ws: websocket.WebSocket) -> None:
    try:
        ws.shutdown()
    except (OSError, ssl.SSLError):
        pass


def _describe(exc: BaseException) -> str:
    """A short reason, never the exception's full text (which may hold URLs)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed ({exc.verify_message or exc.reason})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or type(exc).__name__})"
    if isinstance(exc, websocket.WebSocketProxyException):
        return "the proxy refused the tunnel"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


MAX_UPGRADE_HEAD = 64 * 1024  # bytes of status line and headers accepted in the upgrade response
RAW_BODY_BYTES = 64 * 1024  # bytes of a rejection's body read


def _upgrade(
    ws: websocket.WebSocket, url: str, header: List[str], timeout: Optional[float], options: Dict[str, Any]
) -> bytes:
    """Connect ``ws`` (TCP, TLS and proxies by websocket-client) and upgrade it to a WebSocket, reading the
    response in blocks (websocket-client reads it one byte per ``recv()``, and a socket with a timeout polls
    before each); return the bytes that came after the response (the server's first frames).

    Raises what ``websocket.WebSocket.connect`` raises; a redirect is a rejection (the session token is
    not sent to another address).
    """
    ws.sock_opt.timeout = timeout
    sock, (hostname, port, resource) = _ws_http.connect(url, ws.sock_opt, _ws_http.proxy_info(**options), None)
    ws.sock = sock  # closed by _abort() on failure
    request, key = _ws_handshake._get_handshake_headers(
        resource, url, hostname, port, {"header": header, "suppress_origin": True}
    )
    sock.sendall("\r\n".join(request).encode("utf-8"))
    received = b""
    while True:
        end = received.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(received) > MAX_UPGRADE_HEAD:
            raise websocket.WebSocketException(f"upgrade response headers longer than {MAX_UPGRADE_HEAD} bytes")
        chunk = sock.recv(65536)
        if not chunk:
            raise websocket.WebSocketConnectionClosedException("Connection to remote host was lost.")
        received += chunk
    status, status_message, headers = _parse_response_head(received[:end])
    rest = received[end + 4 :]
    if status != 101:
        body = _rejection_body(sock, rest, headers)
        raise websocket.WebSocketBadStatusException(
            f"Handshake status {status} {status_message or ''}".rstrip(), status, status_message, headers, body
        )
    success, _ = _ws_handshake._validate(headers, key, None)
    if not success:
        raise websocket.WebSocketException("Invalid WebSocket Header")
    ws.connected = True
    return rest


def _parse_response_head(head: bytes) -> Tuple[int, Optional[str], Dict[str, str]]:
    """Status, reason and headers (names lowercased) of an HTTP response head, as websocket-client reads them."""
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError as exc:
        raise websocket.WebSocketException(f"Invalid header line, not valid UTF-8 at byte {exc.start}") from None
    status_info = lines[0].strip().split(" ", 2)
    try:
        status = int(status_info[1])
    except (IndexError, ValueError):
        raise websocket.WebSocketException("Invalid status line") from None
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.strip().partition(":")
        if not colon:
            raise websocket.WebSocketException("Invalid header")
        key = name.lower()
        headers[key] = f"{headers[key]}; {value.strip()}" if key == "set-cookie" and key in headers else value.strip()
    return status, status_info[2] if len(status_info) > 2 else None, headers


def _rejection_body(sock: socket.socket, received: bytes, headers: Dict[str, str]) -> bytes:
    """The body of a rejected upgrade: ``Content-Length`` bytes (at most 64 KiB), or what already came."""
    try:
        length = min(int(headers.get("content-length", "")), RAW_BODY_BYTES)
    except ValueError:
        return received[:RAW_BODY_BYTES]
    body = received[:length]
    try:
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                break
            body += chunk
    except (OSError, ssl.SSLError):  # a timeout or a reset: the body so far
        pass
    return body


def _socket_options(options: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The options websocket-client takes when the WebSocket object is made (TLS)."""
    return {"sslopt": options["sslopt"]} if options and "sslopt" in options else {}


def _connect_options(options: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The options websocket-client takes in ``connect()`` (proxy)."""
    return {k: v for k, v in (options or {}).items() if k != "sslopt"}


def _type_of(reply: _protocol.Decoded) -> str:
    return str(reply.type) if isinstance(reply, _protocol.Unknown) else type(reply).__name__


def _connect_failed(message: str) -> AvatarSDKError:
    code, retryable, _ = classify(phase=PHASE_WEBSOCKET_CONNECT, transport=True)
    return AvatarSDKError(code, message, phase=PHASE_WEBSOCKET_CONNECT, retryable=retryable)


def _upgrade_rejected(
    exc: websocket.WebSocketBadStatusException, host: str, secrets: Tuple[str, ...]
) -> AvatarSDKError:
    body = exc.resp_body if isinstance(exc.resp_body, (bytes, bytearray)) else b""
    text = bytes(body).decode("utf-8", errors="replace")
    fields = http_rejection(
        f"WebSocket upgrade rejected by {host}",
        phase=PHASE_WEBSOCKET_CONNECT,
        http_status=int(exc.status_code),
        text=text,
        document=json_or_none(text),
        secrets=secrets,
    )
    return AvatarSDKError(fields.pop("code"), fields.pop("message"), **fields)


def closed_error(
    close_code: Optional[int],
    close_reason: str,
    *,
    phase: str,
    during: str,
    req_id: Optional[str] = None,
    connection_id: Optional[str] = None,
    secrets: Tuple[str, ...] = (),
) -> AvatarSDKError:
    """A connection that closed (``close_code`` ``None``: lost without a close frame, reported as 1006)."""
    close_reason = redact(close_reason, secrets)
    code_on_wire = CLOSE_ABNORMAL if close_code is None else close_code
    code, retryable, _ = classify(phase=phase, close_code=code_on_wire, text=close_reason)
    if close_code is None:
        message = f"connection lost during {during}"
    else:
        message = f"connection closed by the server during {during} (code {close_code}"
        message += f": {close_reason})" if close_reason else ")"
    return AvatarSDKError(
        code,
        message,
        phase=phase,
        close_code=code_on_wire,
        close_reason=close_reason or None,
        req_id=req_id,
        connection_id=connection_id,
        retryable=retryable,
    )


def server_error(
    reply: _protocol.ServerErrorMessage,
    *,
    phase: str,
    prefix: str,
    connection_id: Optional[str] = None,
    secrets: Tuple[str, ...] = (),
) -> AvatarSDKError:
    """A SERVER_ERROR message as an :class:`AvatarSDKError` (known ``secrets`` removed from its text)."""
    server_code = str(reply.code)
    code, retryable, _ = classify(phase=phase, server_code=server_code, text=reply.message)
    detail = redact(reply.message, secrets)
    message = f"{prefix}: {detail} (server code {server_code})" if detail else f"{prefix}: server code {server_code}"
    return AvatarSDKError(
        code,
        message,
        phase=phase,
        server_code=server_code,
        server_detail=detail or None,
        connection_id=reply.connection_id or connection_id,
        req_id=reply.req_id or None,
        retryable=retryable,
    )


class ParkedThread:
    """A named daemon thread started ahead of its work, parked until :meth:`run` gives it the work.

    ``init()`` starts the reader's thread this way, so that ``start()`` hands the connection over instead of
    paying for a thread start. While parked it holds nothing of the session, so a session dropped without
    ``close()`` lets it go (the session cancels it from a ``weakref.finalize``).
    """

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._work: Optional[Callable[[], None]] = None
        self._cancelled = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def run(self, work: Callable[[], None]) -> None:
        """Give the thread its work (once)."""
        with self._cond:
            self._work = work
            self._cond.notify()

    def cancel(self) -> None:
        """Let the thread end without work (no effect once :meth:`run` was called)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while self._work is None and not self._cancelled:
                self._cond.wait()
            work, self._work = self._work, None
        if work is not None:
            work()


class Reader:
    """The receive side of a started connection: ``recv`` → parse → queue, until the stream ends.

    It runs on the session's reader thread (a :class:`ParkedThread`); the dispatcher thread is started with
    the first item it queues, so an idle session has a single thread.
    """

    def __init__(self, conn: Connection, queue: FrameQueue[StreamEnd], dispatcher: Dispatcher[StreamEnd]) -> None:
        self._conn = conn
        self._queue = queue
        self._dispatcher = dispatcher

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
                    self._put(messages)
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
            self._dispatcher.start()
            queue.put_end(end)

    def _put(self, items: List[Any]) -> None:
        self._dispatcher.start()  # started with the first item (then a flag check): an idle session has one thread
        self._queue.put_many(items)

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
                    self._put(data)
                code, reason = _protocol.parse_close(message.payload)
                logger.debug("close frame received (code %s)", code)
                conn.send_close(code if code is not None and _sendable_close_code(code) else CLOSE_NORMAL)
                return StreamEnd(code, reason)
        if data:
            self._put(data)
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
