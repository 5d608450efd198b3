"""The stand-in's console API over HTTP on 127.0.0.1: the token call on each of its routes
(``POST /session-tokens``, ``/v1/console/session-tokens``, ``/v1/auth/session-token``), and the bootstrap call
of ``region="auto"`` (``POST /bootstrap``).

It owns the HTTP server and the token call's rules: the API key, ``expireAt`` within 24 hours, the scripted
replies first, the answer's shape (``token_key``, ``token_in_data``). The tokens it issues go into the shared
state, where the ingress checks them.
"""

from __future__ import annotations

import http.server
import json
import logging
import selectors
import socket
import threading
import time
from typing import Any, Dict, Tuple
from urllib.parse import urlsplit

from ._scripts import TokenReply, TokenRequest, body_bytes, jsonapi_error
from ._state import ServiceState

logger = logging.getLogger(__name__)

Answer = Tuple[int, bytes, Dict[str, str], float]  # status, body, headers, delay in seconds
AUTH_ROUTE = "/v1/auth/session-token"  # the SpatialReal-branded API's, answered with "session_token"
TOKEN_PATHS = frozenset({"/session-tokens", "/v1/console/session-tokens", AUTH_ROUTE})
BOOTSTRAP_PATH = "/bootstrap"


class Console:
    """The console API of ``service``, bound to its ``console_port`` (0: a free one) when made."""

    def __init__(self, service: ServiceState) -> None:
        self.service = service
        self.server = _ConsoleServer(("127.0.0.1", service.console_port), _handler(self))
        if service.ssl_context is not None:
            self.server.socket = service.ssl_context.wrap_socket(self.server.socket, server_side=True)
        # close() wakes the accept loop at once (socketserver's serve_forever() would sit out a poll interval,
        # which every test's teardown would pay).
        self._wake, self._woken = socket.socketpair()
        self._served = threading.Event()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def serve_forever(self) -> None:
        """Accept and serve (a thread per connection) until :meth:`close`."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.server.socket, selectors.EVENT_READ)
                selector.register(self._woken, selectors.EVENT_READ)
                while True:
                    ready = {key.fileobj for key, _ in selector.select()}
                    if self._woken in ready:
                        return
                    self.server.handle_request()  # timeout 0: the connection that is ready, or none
        finally:
            self._served.set()

    def close(self) -> None:
        """Stop serving (the thread running :meth:`serve_forever` is started first) and close the listening
        socket."""
        self._wake.send(b"\0")
        self._served.wait(5)  # as FakeAvatarService.close() joins its threads
        self.server.server_close()
        self._wake.close()
        self._woken.close()

    def token_call(self, headers: Dict[str, str], body: bytes, path: str = "/session-tokens") -> Answer:
        """Record a token call and answer it: the next scripted reply, else as the service would."""
        service = self.service
        with service._lock:
            service.token_requests.append(TokenRequest(headers, body, path))
            scripted = service._token_replies.pop(0) if service._token_replies else None
            service._lock.notify_all()
        if scripted is not None:
            return _scripted(scripted)
        if headers.get("x-api-key") != service.api_key:
            return _json(401, jsonapi_error(401, "UNAUTHENTICATED", "Unauthorized", "invalid api key"))
        try:
            expire_at = json.loads(body.decode("utf-8"))["expireAt"]
            if isinstance(expire_at, bool) or not isinstance(expire_at, int):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _json(400, jsonapi_error(400, "INVALID_ARGUMENT", "Bad Request", "expireAt must be an integer"))
        now = time.time()
        if not now < expire_at <= now + 24 * 3600 + 60:
            return _json(400, jsonapi_error(400, "INVALID_ARGUMENT", "Bad Request", "expireAt out of range"))
        with service._lock:
            service._counter += 1
            token = f"fake-token-{service._counter}-{int(now * 1000) % 100000:05d}"
            service._tokens[token] = {"expire_at": expire_at, "used": False}
        key = service.token_key or ("session_token" if path == AUTH_ROUTE else "sessionToken")
        return _json(200, {"data": {key: token}} if service.token_in_data else {key: token})

    def bootstrap_call(self, headers: Dict[str, str], body: bytes) -> Answer:
        """Record a bootstrap call and answer it: the next scripted reply, else ``bootstrap_region``."""
        service = self.service
        with service._lock:
            service.bootstrap_requests.append(TokenRequest(headers, body, BOOTSTRAP_PATH))
            scripted = service._bootstrap_replies.pop(0) if service._bootstrap_replies else None
            region = service.bootstrap_region
            service._lock.notify_all()
        if scripted is not None:
            return _scripted(scripted)
        return _json(200, {"region": {"current": region}})


def _scripted(reply: TokenReply) -> Answer:
    data, ctype = body_bytes(reply.body)
    return reply.status, data, {"Content-Type": ctype, **reply.headers}, reply.delay


def _json(status: int, document: Dict[str, Any]) -> Answer:
    return status, json.dumps(document).encode("utf-8"), {"Content-Type": "application/json"}, 0.0


class _ConsoleServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    timeout = 0.0  # handle_request() never waits: Console.serve_forever() calls it when a connection is ready
    allow_reuse_address = True  # a fixed port can be bound again right after a previous run


def _handler(console: Console) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "avatarsdk-fake"
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: with Nagle's algorithm on, the body of a response on a
        # kept-alive connection waits for the client's delayed ACK (40 ms). The service answers at once.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urlsplit(self.path).path
            headers = {k.lower(): v for k, v in self.headers.items()}
            if path in TOKEN_PATHS:
                status, data, extra, delay = console.token_call(headers, body, path)
            elif path == BOOTSTRAP_PATH:
                status, data, extra, delay = console.bootstrap_call(headers, body)
            else:
                self._send(404, b"404 page not found", {"Content-Type": "text/plain"})
                return
            if delay and console.service._stopping.wait(delay):
                return
            self._send(status, data, extra)

        def _send(self, status: int, data: bytes, headers: Dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("console: %s", format % args)

    return Handler
