"""The errors of the connection's faults: one place turns a close, a ServerError, a failed connect or a rejected
upgrade into an :class:`~avatarsdk.AvatarSDKError` (classified by :func:`~avatarsdk.errors.classify`, secrets
removed from every text the service sent)."""

from __future__ import annotations

import ssl
from typing import Optional, Tuple

import websocket

from . import _protocol
from ._http_errors import http_rejection, json_or_none, redact
from .errors import PHASE_WEBSOCKET_CONNECT, AvatarSDKError, classify

CLOSE_NORMAL = 1000
CLOSE_ABNORMAL = 1006  # never sent on the wire: "the connection was lost without a close frame"


def connect_failed(message: str) -> AvatarSDKError:
    code, retryable, _ = classify(phase=PHASE_WEBSOCKET_CONNECT, transport=True)
    return AvatarSDKError(code, message, phase=PHASE_WEBSOCKET_CONNECT, retryable=retryable)


def upgrade_rejected(exc: websocket.WebSocketBadStatusException, host: str, secrets: Tuple[str, ...]) -> AvatarSDKError:
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


def describe(exc: BaseException) -> str:
    """A short reason, never the exception's full text (which may hold URLs)."""
    reason = getattr(exc, "reason", None)  # set by the ssl module's C part only
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed ({exc.verify_message or reason})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({reason or type(exc).__name__})"
    if isinstance(exc, websocket.WebSocketProxyException):
        return "the proxy refused the tunnel"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def type_of(reply: _protocol.Decoded) -> str:
    """How an unexpected reply is named in messages: its type number, or its kind."""
    return str(reply.type) if isinstance(reply, _protocol.Unknown) else type(reply).__name__
