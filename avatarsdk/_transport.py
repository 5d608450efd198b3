"""The WebSocket connection (websocket-client) and the reader thread that owns its receive side.

The reader only reads: binary payloads go to the frame queue as they are, and the end of the stream (a
close frame, a drop, or a local shutdown) is the last item it queues. Parsing and user code happen on the
dispatcher thread (``_dispatch.py``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit

import websocket
from websocket import ABNF

from . import _protocol
from ._dispatch import FrameQueue, TextFrame
from ._http_errors import RAW_BODY_LIMIT, build_http_error, error_details, json_or_none, redact
from .errors import (
    PHASE_WEBSOCKET_CONNECT,
    PHASE_WEBSOCKET_HANDSHAKE,
    PHASE_WEBSOCKET_SEND,
    AvatarSDKError,
    AvatarSDKErrorCode,
    classify,
)

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_ABNORMAL = 1006  # never sent on the wire: "the connection was lost without a close frame"


@dataclass(frozen=True)
class StreamEnd:
    """Why the receive side ended: a close frame from the peer, or a lost connection."""

    close_code: Optional[int]
    close_reason: str
    error: Optional[BaseException] = None  # the transport exception, for a lost connection

    @property
    def peer_closed(self) -> bool:
        return self.error is None


class Connection:
    """An open WebSocket to the ingress. Sends are thread-safe (websocket-client locks each frame)."""

    def __init__(self, ws: websocket.WebSocket, host: str, secrets: Tuple[str, ...] = ()) -> None:
        self._ws = ws
        self.secrets = secrets  # removed from any text the server sends back
        self._sock: Optional[socket.socket] = ws.sock
        self.host = host
        self.end: Optional[StreamEnd] = None  # set by the reader when the receive side ends
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
    ) -> Connection:
        """Connect and upgrade; raise :class:`AvatarSDKError` (phase ``websocket_connect``) on failure."""
        host = urlsplit(url).netloc
        ws = websocket.WebSocket(enable_multithread=True, skip_utf8_validation=True)
        logger.debug("connecting to %s", _protocol.redact_url(url))
        try:
            ws.connect(
                url, header=[f"{k}: {v}" for k, v in headers.items()], timeout=connect_timeout, suppress_origin=True
            )
        except websocket.WebSocketBadStatusException as exc:
            _abort(ws)
            raise _upgrade_rejected(exc, host, secrets) from exc
        except (websocket.WebSocketTimeoutException, socket.timeout) as exc:
            _abort(ws)
            raise _connect_failed(f"connecting to {host} timed out after {connect_timeout}s") from exc
        except (websocket.WebSocketAddressException, OSError) as exc:
            _abort(ws)
            raise _connect_failed(f"could not connect to {host}: {_describe(exc)}") from exc
        except websocket.WebSocketException as exc:
            _abort(ws)
            raise AvatarSDKError(
                AvatarSDKErrorCode.protocolError,
                f"WebSocket upgrade with {host} failed: {type(exc).__name__}",
                phase=PHASE_WEBSOCKET_CONNECT,
            ) from exc
        return cls(ws, host, secrets)

    def handshake(self, configure: bytes, timeout: Optional[float]) -> str:
        """Send CLIENT_CONFIGURE_SESSION and wait for the confirmation; return the connection id.

        Raises :class:`AvatarSDKError` (phase ``websocket_handshake``) for a server error, a close, a timeout
        or an unexpected reply.
        """
        phase = PHASE_WEBSOCKET_HANDSHAKE
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._ws.settimeout(timeout)
            self._ws.send_binary(configure)
            while True:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise socket.timeout()
                    self._ws.settimeout(remaining)
                opcode, frame = self._ws.recv_data_frame(True)
                if opcode in (ABNF.OPCODE_PING, ABNF.OPCODE_PONG):
                    continue
                if opcode == ABNF.OPCODE_CLOSE:
                    code, reason = _protocol.parse_close(frame.data)
                    raise closed_error(code, reason, phase=phase, during="the handshake", secrets=self.secrets)
                if opcode != ABNF.OPCODE_BINARY:
                    raise AvatarSDKError(
                        AvatarSDKErrorCode.protocolError,
                        "expected a binary protobuf message during the handshake, got text",
                        phase=phase,
                    )
                break
        except (websocket.WebSocketTimeoutException, socket.timeout) as exc:
            raise AvatarSDKError(
                AvatarSDKErrorCode.connectionFailed,
                f"no handshake reply from {self.host} within {timeout}s",
                phase=phase,
                retryable=True,
            ) from exc
        except (websocket.WebSocketConnectionClosedException, OSError) as exc:
            raise closed_error(None, "", phase=phase, during="the handshake") from exc
        except websocket.WebSocketException as exc:
            raise AvatarSDKError(
                AvatarSDKErrorCode.protocolError,
                f"invalid WebSocket frame during the handshake: {type(exc).__name__}",
                phase=phase,
            ) from exc
        reply = _protocol.decode(frame.data)
        if isinstance(reply, _protocol.Confirm):
            if not reply.connection_id:
                raise AvatarSDKError(
                    AvatarSDKErrorCode.protocolError,
                    "handshake confirmation carries an empty connection_id",
                    phase=phase,
                )
            return reply.connection_id
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

    def send_close(self, code: int = CLOSE_NORMAL) -> bool:
        """Send a close frame; return whether it went out."""
        try:
            self._ws.send_close(code)
            return True
        except (websocket.WebSocketException, OSError, AttributeError):
            return False

    def recv(self) -> Tuple[int, bytes]:
        """One data or control message (pings are answered by websocket-client)."""
        opcode, frame = self._ws.recv_data_frame(True)
        return opcode, frame.data

    def shutdown(self) -> None:
        """Shut the socket down both ways: wakes a thread blocked in recv or send. Idempotent."""
        sock = self._sock
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
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
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _type_of(reply: _protocol.Decoded) -> str:
    return str(reply.type) if isinstance(reply, _protocol.Unknown) else type(reply).__name__


def _connect_failed(message: str) -> AvatarSDKError:
    code, retryable, _ = classify(phase=PHASE_WEBSOCKET_CONNECT, transport=True)
    return AvatarSDKError(code, message, phase=PHASE_WEBSOCKET_CONNECT, retryable=retryable)


def _upgrade_rejected(
    exc: websocket.WebSocketBadStatusException, host: str, secrets: Tuple[str, ...]
) -> AvatarSDKError:
    status = int(exc.status_code)
    body = exc.resp_body if isinstance(exc.resp_body, (bytes, bytearray)) else b""
    text = redact(bytes(body).decode("utf-8", errors="replace"), secrets)
    details = error_details(json_or_none(text), text)
    message, code, retryable = build_http_error(
        f"WebSocket upgrade rejected by {host}", phase=PHASE_WEBSOCKET_CONNECT, http_status=status, details=details
    )
    return AvatarSDKError(
        code,
        message,
        phase=PHASE_WEBSOCKET_CONNECT,
        http_status=status,
        server_code=details.get("code"),
        server_title=details.get("title"),
        server_detail=details.get("detail"),
        raw_body=text[:RAW_BODY_LIMIT] or None,
        retryable=retryable,
    )


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


class Reader:
    """The thread that owns the socket's receive side: ``recv`` → queue, until the stream ends."""

    def __init__(self, conn: Connection, queue: FrameQueue[StreamEnd], name: str) -> None:
        self._conn = conn
        self._queue = queue
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        conn, queue = self._conn, self._queue
        put = queue.put
        end = StreamEnd(None, "", RuntimeError("reader stopped"))
        try:
            while True:
                try:
                    opcode, data = conn.recv()
                except websocket.WebSocketTimeoutException:
                    continue  # idle: the socket timeout bounds sends, not silence
                if opcode == ABNF.OPCODE_BINARY:
                    put(data)
                elif opcode == ABNF.OPCODE_CLOSE:
                    code, reason = _protocol.parse_close(data)
                    end = StreamEnd(code, reason)
                    logger.debug("close frame received (code %s)", code)
                    break
                elif opcode == ABNF.OPCODE_TEXT:
                    put(TextFrame(len(data)))
        except (websocket.WebSocketException, OSError, ssl.SSLError, AttributeError) as exc:
            end = StreamEnd(None, "", exc)
            logger.debug("receive side ended: %s", type(exc).__name__)
        except Exception as exc:
            end = StreamEnd(None, "", exc)
            logger.exception("unexpected error in the reader thread")
        finally:
            conn.end = end
            conn.shutdown()
            queue.put_end(end)
