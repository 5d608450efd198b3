"""The WebSocket upgrade: websocket-client connects (TCP, TLS, proxies) and builds the request; the response is
read here, in blocks, so that the server's first frames that came with it are kept."""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any, Dict, List, Optional, Tuple
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
from ._faults import connect_failed, describe, upgrade_rejected
from ._preconnect import Outcome
from .errors import PHASE_WEBSOCKET_CONNECT, AvatarSDKError, AvatarSDKErrorCode

logger = logging.getLogger(__name__)

OWN_UPGRADE = _OWN_UPGRADE  # whether a connection can be opened ahead and upgraded here (_preconnect)


def open_websocket(
    url: str,
    headers: Dict[str, str],
    *,
    connect_timeout: Optional[float],
    secrets: Tuple[str, ...],
    options: Optional[Dict[str, Any]] = None,
    preconnected: Outcome = None,
) -> Tuple[websocket.WebSocket, bytes]:
    """Connect and upgrade; return the WebSocket and the bytes that came after the upgrade response.

    ``options`` are websocket-client ``connect`` options (TLS, proxy). ``preconnected`` is what a
    :class:`~avatarsdk._preconnect.Preconnect` gave: a socket already open to ``url``'s origin (upgraded here;
    if the server closes it before answering, once more on a new connection), or its connect's error (raised
    as this connect's would be).

    Raises:
        AvatarSDKError: the connect failed or the upgrade was rejected (phase ``websocket_connect``).
    """
    host = urlsplit(url).netloc
    ws = websocket.WebSocket(enable_multithread=True, skip_utf8_validation=True, **_socket_options(options))
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("connecting to %s", _protocol.redact_url(url))
    header = [f"{k}: {v}" for k, v in headers.items()]
    try:
        if isinstance(preconnected, BaseException):
            raise preconnected
        if preconnected is not None:
            try:
                return ws, _upgrade(ws, url, header, connect_timeout, _connect_options(options), opened=preconnected)
            except (websocket.WebSocketConnectionClosedException, ConnectionResetError, BrokenPipeError):
                logger.debug("the connection opened ahead was closed by the server; connecting anew")
                abort(ws)
                ws = websocket.WebSocket(enable_multithread=True, skip_utf8_validation=True, **_socket_options(options))
        if _OWN_UPGRADE:
            return ws, _upgrade(ws, url, header, connect_timeout, _connect_options(options))
        ws.connect(url, header=header, timeout=connect_timeout, suppress_origin=True, **_connect_options(options))
        return ws, b""
    except websocket.WebSocketBadStatusException as exc:
        abort(ws)
        raise upgrade_rejected(exc, host, secrets) from exc
    except (websocket.WebSocketTimeoutException, socket.timeout) as exc:
        abort(ws)
        raise connect_failed(f"connecting to {host} timed out after {connect_timeout}s") from exc
    except (websocket.WebSocketAddressException, websocket.WebSocketProxyException, OSError) as exc:
        abort(ws)
        raise connect_failed(f"could not connect to {host}: {describe(exc)}") from exc
    except websocket.WebSocketException as exc:
        abort(ws)
        raise AvatarSDKError(
            AvatarSDKErrorCode.protocolError,
            f"WebSocket upgrade with {host} failed: {type(exc).__name__}",
            phase=PHASE_WEBSOCKET_CONNECT,
        ) from exc


def abort(ws: websocket.WebSocket) -> None:
    """Release a WebSocket that will not be used."""
    try:
        ws.shutdown()
    except (OSError, ssl.SSLError):
        pass


MAX_UPGRADE_HEAD = 64 * 1024  # bytes of status line and headers accepted in the upgrade response
RAW_BODY_BYTES = 64 * 1024  # bytes of a rejection's body read


def preconnect(url: str, timeout: Optional[float], options: Optional[Dict[str, Any]]) -> socket.socket:
    """Open a connection to ``url``'s origin as :func:`open_websocket` would (TCP, proxy tunnel, TLS), sending
    nothing of the upgrade (for :class:`~avatarsdk._preconnect.Preconnect`)."""
    ws = websocket.WebSocket(**_socket_options(options))
    ws.sock_opt.timeout = timeout
    sock, _ = _ws_http.connect(url, ws.sock_opt, _ws_http.proxy_info(**_connect_options(options)), None)
    return sock


def _upgrade(
    ws: websocket.WebSocket,
    url: str,
    header: List[str],
    timeout: Optional[float],
    options: Dict[str, Any],
    *,
    opened: Optional[socket.socket] = None,
) -> bytes:
    """Connect ``ws`` (TCP, TLS and proxies by websocket-client) and upgrade it to a WebSocket, reading the
    response in blocks (websocket-client reads it one byte per ``recv()``, and a socket with a timeout polls
    before each); return the bytes that came after the response (the server's first frames).

    ``opened``: a socket already connected to ``url``'s origin, used instead of a new one.

    Raises what ``websocket.WebSocket.connect`` raises; a redirect is a rejection (the session token is
    not sent to another address).
    """
    ws.sock_opt.timeout = timeout
    if opened is not None:
        opened.settimeout(timeout)
    sock, (hostname, port, resource) = _ws_http.connect(url, ws.sock_opt, _ws_http.proxy_info(**options), opened)
    ws.sock = sock  # closed by abort() on failure
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
