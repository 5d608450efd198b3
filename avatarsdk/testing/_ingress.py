"""The stand-in's ingress: the WebSocket server on 127.0.0.1, for v2 (``/v2/driveningress``) and v1.

It owns the upgrade (scripted rejections, then the service's checks of the token, app id and avatar id), the
v2 handshake and its scripted replies, the receive loops that record what clients send into their
:class:`FakeConnection`, and the answer to each request once its last audio chunk is in.
"""

from __future__ import annotations

import functools
import http
import logging
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, TypeVar, Union
from urllib.parse import parse_qsl, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

from .._proto import ingress_v1_pb2 as pb1
from .._proto import ingress_v2_pb2 as pb
from ._connection import FakeConnection
from ._scripts import (
    Confirm,
    FakeRequest,
    HandshakeClose,
    HandshakeDrop,
    HandshakeError,
    HandshakeRaw,
    HandshakeReply,
    HandshakeSilence,
    body_bytes,
    jsonapi_error,
)
from ._state import ServiceState

INGRESS_PATH = "/v2/driveningress"
INGRESS_V1_PATH = "/v1/driveningress"


class _UnusedConnectionsAtDebug(logging.Filter):
    """websockets logs ``opening handshake failed`` at ERROR for a connection closed before its request line:
    what a client that opened a connection ahead and never used it does (the SDK's ``init()`` without
    ``start()``). Those records go on at DEBUG; every other failure keeps its level."""

    def filter(self, record: logging.LogRecord) -> bool:
        failed = record.levelno == logging.ERROR and record.getMessage() == "opening handshake failed"
        if failed and _closed_before_request(record.exc_info[1] if record.exc_info else None):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return SERVER_LOGGER.isEnabledFor(logging.DEBUG)
        return True


def _closed_before_request(exc: Optional[BaseException]) -> bool:
    for _ in range(8):  # InvalidMessage <- EOFError("...while reading HTTP request line") <- EOFError(0 bytes)
        if exc is None:
            return False
        if isinstance(exc, EOFError) and "request line" in str(exc):
            return True
        exc = exc.__cause__
    return False


# A child of websockets' own server logger: configured as websockets is, and outside the SDK's "avatarsdk"
# loggers (at DEBUG a server logs request lines, query credentials included).
SERVER_LOGGER = logging.getLogger("websockets.server.avatarsdk-stand-in")
SERVER_LOGGER.addFilter(_UnusedConnectionsAtDebug())

Envelope = TypeVar("Envelope", pb.Message, pb1.Message)


class Ingress:
    """The ingress of ``service``, bound to its ``port`` (0: a free one) when made."""

    def __init__(self, service: ServiceState) -> None:
        self.service = service
        self.server = serve(
            self._handle_connection,
            "127.0.0.1",
            service.port,
            process_request=self._process_request,
            compression=None,
            max_size=None,
            ping_interval=None,
            open_timeout=10,
            close_timeout=2,
            server_header="avatarsdk-fake",
            ssl=service.ssl_context,
            logger=SERVER_LOGGER,
        )

    @property
    def port(self) -> int:
        return int(self.server.socket.getsockname()[1])

    def serve_forever(self) -> None:
        try:
            self.server.serve_forever()
        except OSError:
            # websockets may trip on its listening socket being closed by close() (EBADF) before it noticed
            # the shutdown: expected then, a fault otherwise.
            if not self.service._stopping.is_set():
                raise

    def close(self) -> None:
        self.server.shutdown()

    # -- upgrade

    def _process_request(self, ws: ServerConnection, request: Request) -> Optional[Response]:
        service = self.service
        with service._lock:
            service.upgrade_attempts += 1
            rejection = service._rejections.pop(0) if service._rejections else None
        if rejection is not None:
            return _response(rejection.status, rejection.body)
        parts = urlsplit(request.path)
        query = dict(parse_qsl(parts.query))
        v1 = parts.path == INGRESS_V1_PATH + "/websocket"
        if parts.path != INGRESS_PATH + "/websocket" and not v1:
            return _response(404, "404 page not found")
        if v1 and not request.headers.get("X-Connection-Id"):
            return _bad_request("missing connection id")
        app_id = request.headers.get("X-App-ID") or query.get("appId", "")
        token = request.headers.get("X-Session-Key") or query.get("sessionKey", "")
        if not token:
            return _bad_request("empty token")
        with service._lock:
            issued = service._tokens.get(token)
            if issued is None or (service.single_use_tokens and issued["used"]):
                return _bad_request("invalid session token")
            if issued["expire_at"] <= time.time():
                return _response(401, jsonapi_error(401, "UNAUTHENTICATED", "Unauthorized", "token is expired"))
            issued["used"] = True
        if app_id != service.app_id and not v1:  # v1 carries no app id
            return _bad_request("app id mismatch")
        if query.get("id") != service.avatar_id:
            return _response(404, jsonapi_error(404, "NOT_FOUND", "Not Found", "avatar not found"))
        with service._lock:
            if service.concurrency_refusal == "upgrade" and service.over_limit():
                service.concurrency_refusals += 1
                detail = f"concurrent session limit reached ({service.concurrency_limit})"
                return _response(429, jsonapi_error(429, "concurrencyLimit", "Too Many Requests", detail))
        return None

    def _handle_connection(self, ws: ServerConnection) -> None:
        service = self.service
        assert ws.request is not None
        version = 1 if urlsplit(ws.request.path).path.startswith(INGRESS_V1_PATH) else 2
        with service._lock:
            conn = FakeConnection(service, ws, len(service.connections), version)
            service.connections.append(conn)
            counted = version == 1 or not service.over_limit()  # (v1 has no handshake to refuse in)
            if counted:
                service.open_sessions += 1
                service.peak_sessions = max(service.peak_sessions, service.open_sessions)
                reply = service._handshakes.pop(0) if service._handshakes else Confirm()
            else:
                service.concurrency_refusals += 1
                reply = HandshakeError(4003, "concurrency limit reached", close_code=4003)
            service.open_connections += 1
            service.max_open_connections = max(service.max_open_connections, service.open_connections)
        try:
            conn._run(functools.partial(self._serve_counted, conn, reply))
        finally:
            with service._lock:
                if counted:
                    service.open_sessions -= 1
                service._lock.notify_all()

    def _serve_counted(self, conn: FakeConnection, reply: HandshakeReply) -> None:
        """Serve ``conn``; it counts as open (``open_connections``) until its reading ends."""
        try:
            self._serve(conn, reply)
        finally:
            with self.service._lock:
                self.service.open_connections -= 1
                self.service._lock.notify_all()

    # -- v2: handshake, then the receive loop (v1: no handshake)

    def _serve(self, conn: FakeConnection, reply: HandshakeReply) -> None:
        if conn.version == 1:
            self._serve_v1(conn)
            return
        ws = conn.ws
        first = ws.recv()
        envelope = pb.Message()
        if not isinstance(first, str):
            envelope.ParseFromString(first)
        if isinstance(first, str) or envelope.type != pb.MESSAGE_CLIENT_CONFIGURE_SESSION:
            conn.send_error(3, "expected ClientConfigureSession message")
            ws.close(1002)
            return
        service = self.service
        with service._lock:
            service._counter += 1
            conn.connection_id = (
                reply.connection_id
                if isinstance(reply, Confirm) and reply.connection_id is not None
                else f"conn-{service._counter}"
            )
            conn.configure = envelope.client_configure_session
            service._lock.notify_all()
        if self._reply(conn, reply):
            self._receive_loop(conn)

    def _reply(self, conn: FakeConnection, reply: HandshakeReply) -> bool:
        """Answer the handshake with ``reply``; whether the connection goes on to its receive loop."""
        ws = conn.ws
        if isinstance(reply, Confirm):
            msg = pb.Message(type=pb.MESSAGE_SERVER_CONFIRM_SESSION)
            msg.server_confirm_session.connection_id = conn.connection_id or ""
            msg.server_confirm_session.capabilities.extend(
                self.service.capabilities if reply.capabilities is None else reply.capabilities
            )
            if reply.then_frames:
                conn._send_with_frames(msg.SerializeToString(), reply.then_frames)
            else:
                ws.send(msg.SerializeToString())
        elif isinstance(reply, HandshakeError):
            conn.send_error(reply.code, reply.message)
            if reply.close_code is not None:
                ws.close(reply.close_code, reply.message[:100])
            else:
                self.service._stopping.wait()
            return False
        elif isinstance(reply, HandshakeClose):
            ws.close(reply.code, reply.reason)
            return False
        elif isinstance(reply, HandshakeRaw):
            ws.send(reply.text if reply.text is not None else reply.data)
        elif isinstance(reply, HandshakeDrop):
            conn.drop()
            return False
        elif isinstance(reply, HandshakeSilence):
            self.service._stopping.wait()
            return False
        return True

    def _received(self, conn: FakeConnection, parse: Callable[[bytes], Envelope]) -> Iterator[Envelope]:
        """The client's binary messages on ``conn``, parsed and recorded, until the service closes (text messages
        are skipped). Waits while the connection's reading is paused."""
        while not self.service._stopping.is_set():
            conn._reading.wait()
            message = conn.ws.recv()
            if isinstance(message, str):
                continue
            envelope = parse(message)
            conn._record(functools.partial(conn.messages.append, envelope))  # type: ignore[arg-type]
            yield envelope

    def _receive_loop(self, conn: FakeConnection) -> None:
        service = self.service
        for envelope in self._received(conn, pb.Message.FromString):
            if envelope.type == pb.MESSAGE_CLIENT_AUDIO_INPUT:
                chunk = envelope.client_audio_input
                trace = chunk.trace_context if chunk.HasField("trace_context") else None
                self._on_audio(conn, chunk.req_id, chunk.audio, chunk.end, trace)
            elif envelope.type == pb.MESSAGE_CLIENT_INTERRUPT:
                req_id = envelope.client_interrupt.req_id

                def interrupt(req_id: str = req_id) -> None:
                    conn.requests.setdefault(req_id, FakeRequest(req_id)).interrupted = True
                    conn.controls.append(("interrupt", req_id))

                conn._record(interrupt)
            elif envelope.type in (pb.MESSAGE_CLIENT_PAUSE, pb.MESSAGE_CLIENT_RESUME):
                pause = envelope.type == pb.MESSAGE_CLIENT_PAUSE
                req_id = envelope.client_pause.req_id if pause else envelope.client_resume.req_id
                conn._record(functools.partial(conn.controls.append, ("pause" if pause else "resume", req_id)))
                if "playback_state" in service.capabilities or "playback_control" in service.capabilities:
                    conn.send_playback_state(req_id, 2 if pause else 1, played_ms=0, reason="explicit")

    # -- v1

    def _serve_v1(self, conn: FakeConnection) -> None:
        """v1: no handshake (the client's X-Connection-Id is the connection id); audio in, segments out."""
        service = self.service
        with service._lock:
            conn.connection_id = conn.request_headers.get("X-Connection-Id", "")
            conn.configure = pb.ClientConfigureSession(sample_rate=16000)  # v1 is 16 kHz PCM only
            service._lock.notify_all()
        for envelope in self._received(conn, pb1.Message.FromString):
            if envelope.type == pb1.MESSAGE_CLIENT_AUDIO_INPUT:
                chunk = envelope.client_audio_input
                self._on_audio(conn, chunk.req_id, chunk.audio, chunk.end)

    # -- requests

    def _on_audio(
        self, conn: FakeConnection, req_id: str, audio: bytes, end: bool, trace: Optional[pb.TraceContext] = None
    ) -> None:
        def record() -> FakeRequest:
            request = conn.requests.setdefault(req_id, FakeRequest(req_id))
            request.trace_contexts.append(None if trace is None else (trace.traceparent, trace.tracestate))
            request.audio += audio
            request.chunks += 1
            request.ended = request.ended or end
            return request

        holder: List[FakeRequest] = []
        conn._record(lambda: holder.append(record()))
        if end:
            request = holder[0]
            conn._jobs.put(lambda: self._respond(conn, request))

    def _respond(self, conn: FakeConnection, request: FakeRequest) -> None:
        service = self.service
        if service.on_request is not None:
            service.on_request(conn, request)
            return
        count = service.frames_for(conn, request)
        if conn.version == 1:
            conn.send_v1_frames(count, interval=service.frame_interval)
        else:
            conn.send_frames(request.req_id, count, interval=service.frame_interval)


def _bad_request(detail: str) -> Response:
    return _response(400, jsonapi_error(400, "INVALID_ARGUMENT", "Bad Request", detail))


def _response(status: int, body: Union[bytes, str, Dict[str, Any], None]) -> Response:
    data, ctype = body_bytes(body)
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(data))), ("Connection", "close")])
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return Response(status, reason, headers, data)
