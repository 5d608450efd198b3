"""FakeAvatarService: the console API and the v2 ingress on 127.0.0.1, over real sockets."""

from __future__ import annotations

import functools
import http
import http.server
import json
import logging
import queue
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qsl, urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from .._proto import ingress_v1_pb2 as pb1
from .._proto import ingress_v2_pb2 as pb
from .._protocol_v1 import expected_segments

logger = logging.getLogger(__name__)

INGRESS_PATH = "/v2/driveningress"
INGRESS_V1_PATH = "/v1/driveningress"
FRAME_PERIOD = 0.04  # 25 fps: one animation frame per 40 ms of audio
UNDECLARED_FIELD = 15  # field number of the filler the fake puts in animation frames (not in the schema)


# ------------------------------------------------------------------------------------- scripting


@dataclass
class TokenReply:
    """A scripted answer to one token call: ``status`` and ``body`` (bytes, text, or JSON-able)."""

    status: int = 200
    body: Union[bytes, str, Dict[str, Any], List[Any], None] = None
    headers: Dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (to exercise timeouts)


@dataclass
class UpgradeRejection:
    """A scripted HTTP answer to one WebSocket upgrade instead of ``101 Switching Protocols``."""

    status: int
    body: Union[bytes, str, Dict[str, Any], None] = None


@dataclass
class Confirm:
    """Handshake reply: SERVER_CONFIRM_SESSION (``connection_id`` defaults to a fresh ``conn-N``).

    ``then_frames``: animation frames (request id ``"early"``) written in the same ``send`` as the
    confirmation, so they reach the client together with it.
    """

    connection_id: Optional[str] = None
    then_frames: int = 0
    capabilities: Optional[Tuple[str, ...]] = None  # None: the service's own (FakeAvatarService.capabilities)


@dataclass
class HandshakeError:
    """Handshake reply: SERVER_ERROR, then (if ``close_code``) a close frame."""

    code: int
    message: str = ""
    close_code: Optional[int] = None


@dataclass
class HandshakeClose:
    """Handshake reply: a close frame with ``code`` and ``reason``."""

    code: int
    reason: str = ""


@dataclass
class HandshakeRaw:
    """Handshake reply: these bytes as a binary message (or ``text`` as a text message)."""

    data: bytes = b""
    text: Optional[str] = None


@dataclass
class HandshakeSilence:
    """Handshake reply: none; the connection stays open and silent."""


@dataclass
class HandshakeDrop:
    """Handshake reply: the TCP connection is cut without a close frame."""


HandshakeReply = Union[Confirm, HandshakeError, HandshakeClose, HandshakeRaw, HandshakeSilence, HandshakeDrop]


@dataclass
class TokenRequest:
    """A token call as the fake received it."""

    headers: Dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class FakeRequest:
    """One request (utterance) as the fake received it."""

    req_id: str
    audio: bytearray = field(default_factory=bytearray)
    chunks: int = 0
    ended: bool = False
    interrupted: bool = False


def animation_frame(connection_id: str, req_id: str, end: bool, size: int, seq: int) -> bytes:
    """One SERVER_RESPONSE_ANIMATION message of about ``size`` bytes.

    The message carries a field the public schema does not declare (number 15, like the service's animation
    data) before the declared ones, and the envelope puts its ``type`` last: a client that re-serialises the
    message instead of forwarding the received bytes produces different bytes.
    """
    known = pb.ServerResponseAnimation(connection_id=connection_id, req_id=req_id, end=end).SerializeToString()
    overhead = len(known) + 16
    filler = struct.pack(">I", seq) + bytes((seq + i) & 0xFF for i in range(max(0, size - overhead - 4)))
    inner = _field(UNDECLARED_FIELD, filler) + known
    return _field(6, inner) + pb.Message(type=pb.MESSAGE_SERVER_RESPONSE_ANIMATION).SerializeToString()


def v1_animation_frame(size: int, seq: int) -> bytes:
    """One v1 animation message (type 1004) of about ``size`` bytes: no req_id, no end, and a payload field
    the public schema does not declare (so byte-exact forwarding is checkable)."""
    filler = struct.pack(">I", seq) + bytes((seq + i) & 0xFF for i in range(max(0, size - 12)))
    return (
        _field(UNDECLARED_FIELD, filler) + pb1.Message(type=pb1.MESSAGE_SERVER_RESPONSE_ANIMATION).SerializeToString()
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _ws_frame(payload: bytes) -> bytes:
    """An unmasked, final, binary WebSocket frame (server to client)."""
    size = len(payload)
    if size < 126:
        head = bytes([0x82, size])
    elif size < 1 << 16:
        head = bytes([0x82, 126]) + struct.pack(">H", size)
    else:
        head = bytes([0x82, 127]) + struct.pack(">Q", size)
    return head + payload


def _body_bytes(body: Union[bytes, str, Dict[str, Any], List[Any], None]) -> Tuple[bytes, str]:
    if body is None:
        return b"", "text/plain"
    if isinstance(body, bytes):
        return body, "application/octet-stream"
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    return json.dumps(body).encode("utf-8"), "application/json"


def jsonapi_error(status: int, code: str, title: str, detail: str = "") -> Dict[str, Any]:
    """A JSON:API error document as the service sends it."""
    return {"errors": [{"id": "fake", "status": status, "code": code, "title": title, "detail": detail}]}


# ------------------------------------------------------------------------------------ connection


class FakeConnection:
    """One ingress WebSocket connection as the fake sees it; also the handle to act on it."""

    def __init__(self, service: FakeAvatarService, ws: ServerConnection, number: int) -> None:
        self.service = service
        self.ws = ws
        self.number = number
        request = ws.request
        assert request is not None
        self.path = urlsplit(request.path).path
        self.query: Dict[str, str] = dict(parse_qsl(urlsplit(request.path).query, keep_blank_values=True))
        self.request_headers: Dict[str, str] = {k: v for k, v in request.headers.raw_items()}
        self.connection_id: Optional[str] = None
        self.configure: Optional[pb.ClientConfigureSession] = None
        self.messages: List[pb.Message] = []
        self.requests: Dict[str, FakeRequest] = {}
        self.sent: List[Tuple[str, bytes]] = []  # (req_id, bytes) of every animation frame sent
        self.client_close_code: Optional[int] = None
        self.version = 1 if self.path.startswith(INGRESS_V1_PATH) else 2
        self.controls: List[Tuple[str, str]] = []  # ("pause" | "resume" | "interrupt", req_id), in order
        self.closed = threading.Event()
        self._cond = threading.Condition()  # records and waits; never held while sending
        self._sending = threading.Lock()  # serialises the fake's own sends that are recorded
        self._reading = threading.Event()
        self._reading.set()
        self._jobs: queue.Queue[Optional[Callable[[], None]]] = queue.Queue()
        self._seq = 0

    # -- records

    def sent_frames(self, req_id: Optional[str] = None) -> List[bytes]:
        """Bytes of the animation frames sent (for one request, or all), in order."""
        with self._cond:
            return [data for rid, data in self.sent if req_id is None or rid == req_id]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked whenever the connection records something)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout}s on connection {self.number}")
                self._cond.wait(remaining)

    def wait_for_request(
        self, req_id: Optional[str] = None, *, ended: bool = True, timeout: float = 5.0
    ) -> FakeRequest:
        """Wait for a request (the given one, or the first) to arrive (and end, unless ``ended=False``)."""

        def ready() -> bool:
            reqs = [self.requests[req_id]] if req_id in self.requests else list(self.requests.values())
            if req_id is not None and req_id not in self.requests:
                return False
            return bool(reqs) and (not ended or reqs[0].ended or reqs[0].interrupted)

        self.wait_for(ready, timeout)
        with self._cond:
            return self.requests[req_id] if req_id is not None else next(iter(self.requests.values()))

    def wait_closed(self, timeout: float = 5.0) -> None:
        if not self.closed.wait(timeout):
            raise TimeoutError(f"connection {self.number} still open after {timeout}s")

    # -- actions (safe from any thread)

    def send_bytes(self, data: bytes) -> None:
        """Send ``data`` as one binary message."""
        self.ws.send(data)

    def send_fragmented(self, parts: List[bytes]) -> None:
        """Send one binary message split into WebSocket fragments (a frame per part)."""
        self.ws.send(parts)

    def send_wire(self, data: bytes) -> None:
        """Write raw bytes onto the TCP stream, around the WebSocket framing (for framing faults, e.g. a
        masked or oversized frame). Do not interleave with other sends in flight."""
        with self._sending:
            self.ws.socket.sendall(data)

    def send_text(self, text: str) -> None:
        """Send a text message (the protocol only uses binary ones)."""
        self.ws.send(text)

    def send_animation(self, req_id: str, end: bool = False, size: Optional[int] = None) -> bytes:
        """Send one animation frame for ``req_id``; return its bytes."""
        with self._sending:  # the record's order is the wire's order
            self._seq += 1
            data = animation_frame(self.connection_id or "", req_id, end, size or self.service.frame_size, self._seq)
            self._send_recorded(data, req_id)
        return data

    def _send_recorded(self, data: bytes, req_id: str) -> None:
        """Record ``data`` as sent, then send it (a client may see it at once: the record must be there first;
        a failed send takes the record back). The send may block on a client that is not reading, so it is
        not under ``_cond``. Called with ``_sending`` held."""
        entry = (req_id, data)
        self._record(functools.partial(self.sent.append, entry))
        try:
            self.ws.send(data)
        except BaseException:
            self._record(functools.partial(self.sent.remove, entry))
            raise

    def send_frames(
        self, req_id: str, count: int, *, size: Optional[int] = None, interval: float = 0.0, end: bool = True
    ) -> List[bytes]:
        """Send ``count`` frames for ``req_id`` (the last with ``end``), ``interval`` seconds apart."""
        frames = []
        for i in range(count):
            if i and interval and self.service._stopping.wait(interval):
                break
            with self._cond:
                stop = self.requests.get(req_id, FakeRequest(req_id)).interrupted
            if stop:
                break
            frames.append(self.send_animation(req_id, end=end and i == count - 1, size=size))
        return frames

    def send_error(self, code: int, message: str = "", req_id: str = "") -> None:
        """Send a SERVER_ERROR message."""
        msg = pb.Message(type=pb.MESSAGE_SERVER_ERROR)
        msg.server_error.code = code
        msg.server_error.message = message
        msg.server_error.req_id = req_id
        msg.server_error.connection_id = self.connection_id or ""
        self.ws.send(msg.SerializeToString())

    def send_playback_state(self, req_id: str, state: int, played_ms: int = 0, reason: str = "explicit") -> bytes:
        """Send a SERVER_PLAYBACK_STATE (state: 1 playing, 2 paused, 3 ended, 4 interrupted)."""
        msg = pb.Message(type=pb.MESSAGE_SERVER_PLAYBACK_STATE)
        ps = msg.server_playback_state
        ps.connection_id = self.connection_id or ""
        ps.req_id = req_id
        ps.state = state  # type: ignore[assignment]
        ps.played_ms = played_ms
        ps.reason = reason
        data = msg.SerializeToString()
        self.ws.send(data)
        return data

    def send_v1_frames(self, count: int, *, size: Optional[int] = None, interval: float = 0.0) -> List[bytes]:
        """v1: send ``count`` animation messages (they name no request: the client assigns them)."""
        frames = []
        for i in range(count):
            if i and interval and self.service._stopping.wait(interval):
                break
            with self._sending:
                self._seq += 1
                data = v1_animation_frame(size or self.service.frame_size, self._seq)
                self._send_recorded(data, "")
            frames.append(data)
        return frames

    def send_v1_error(self, code: int, reason: str = "", req_id: str = "") -> None:
        """v1: send a MESSAGE_ERROR (ErrorInfo)."""
        msg = pb1.Message(type=pb1.MESSAGE_ERROR)
        msg.error.code = code
        msg.error.reason = reason
        msg.error.req_id = req_id
        self.ws.send(msg.SerializeToString())

    def send_message_type(self, type_number: int, payload: bytes = b"") -> None:
        """Send an envelope of an arbitrary (e.g. unknown) message type."""
        self.ws.send(pb.Message(type=type_number).SerializeToString() + payload)  # type: ignore[arg-type]

    def ping(self, data: bytes = b"fake") -> threading.Event:
        """Send a ping; the returned event is set when the client's pong arrives."""
        return self.ws.ping(data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with a close frame."""
        self.ws.close(code, reason)

    def drop(self) -> None:
        """Cut the TCP connection without a close frame (the client sees an abnormal closure, 1006)."""
        try:
            self.ws.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def pause_reading(self) -> None:
        """Stop reading client messages (the client's sends eventually block: TCP back-pressure)."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    # -- internals

    def _send_with_frames(self, first: bytes, count: int) -> None:
        """``first`` and ``count`` animation frames as unmasked WebSocket frames, in one write."""
        with self._sending:
            frames = []
            for i in range(count):
                self._seq += 1
                frames.append(animation_frame(self.connection_id or "", "early", i == count - 1, 300, self._seq))
            self._record(functools.partial(self.sent.extend, [("early", f) for f in frames]))
            self.ws.socket.sendall(b"".join(_ws_frame(m) for m in [first, *frames]))

    def _record(self, fn: Callable[[], None]) -> None:
        with self._cond:
            fn()
            self._cond.notify_all()

    def _responder(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except ConnectionClosed:
                pass
            except Exception:
                logger.exception("fake service: request hook failed")


# --------------------------------------------------------------------------------------- service


class FakeAvatarService:
    """A local stand-in for the avatar service: console API + v2 ingress on 127.0.0.1, real sockets.

    By default it behaves like the service: it issues session tokens for its API key, accepts WebSocket
    connections that present one (once: a token is for one connection), confirms the handshake, and answers
    each request with animation frames once its ``end=True`` chunk arrives (one frame per 40 ms of audio,
    or ``frames_per_request``). Everything can be scripted per test, and everything received is recorded.

    Example::

        with FakeAvatarService() as service:
            with new_avatar_session(**service.session_kwargs(), transport_frames=on_frame) as session:
                session.send_audio(pcm, end=True)

    Thread-safety: scripting and inspection methods are safe from any thread.
    """

    def __init__(
        self,
        *,
        api_key: str = "test-api-key",
        app_id: str = "test-app",
        avatar_id: str = "test-avatar",
        frames_per_request: Optional[int] = None,
        frame_size: int = 1200,
        frame_interval: float = 0.0,
        single_use_tokens: bool = True,
        on_request: Optional[Callable[[FakeConnection, FakeRequest], None]] = None,
        port: int = 0,
        console_port: int = 0,
        capabilities: Tuple[str, ...] = (),
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.api_key = api_key
        self.app_id = app_id
        self.avatar_id = avatar_id
        self.frames_per_request = frames_per_request
        self.frame_size = frame_size
        self.frame_interval = frame_interval
        self.single_use_tokens = single_use_tokens
        self.on_request = on_request
        self.capabilities = capabilities  # declared in each confirmation, e.g. ("playback_control", "playback_state")
        self.ssl_context = ssl_context  # serve both endpoints over TLS (https:// URLs) with this server context
        self.port = port  # the ingress's; 0 picks a free one
        self.console_port = console_port
        self.token_requests: List[TokenRequest] = []
        self.connections: List[FakeConnection] = []
        self.upgrade_attempts = 0
        self._token_replies: List[TokenReply] = []
        self._rejections: List[UpgradeRejection] = []
        self._handshakes: List[HandshakeReply] = []
        self._tokens: Dict[str, Dict[str, Any]] = {}
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._ws_server: Optional[Server] = None
        self._http_server: Optional[http.server.ThreadingHTTPServer] = None
        self._threads: List[threading.Thread] = []
        self._counter = 0

    # -- lifecycle

    def start(self) -> FakeAvatarService:
        """Start listening on 127.0.0.1 (``port``/``console_port``, or free ports); a second call does nothing.

        Raises:
            OSError: a port could not be bound (nothing is left listening).
        """
        if self._http_server is not None:
            return self
        self._http_server = _ConsoleServer(("127.0.0.1", self.console_port), _console_handler(self))
        if self.ssl_context is not None:
            self._http_server.socket = self.ssl_context.wrap_socket(self._http_server.socket, server_side=True)
        try:
            self._ws_server = self._serve_ingress()
        except BaseException:
            self._http_server.server_close()
            self._http_server = None
            raise
        console = functools.partial(self._http_server.serve_forever, poll_interval=0.05)  # shutdown() waits a poll
        for target, name in ((console, "console"), (self._serve_ingress_forever, "ingress")):
            thread = threading.Thread(target=target, name=f"fakeservice-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _serve_ingress_forever(self) -> None:
        assert self._ws_server is not None
        try:
            self._ws_server.serve_forever()
        except OSError:
            # websockets may trip on its listening socket being closed by close() (EBADF) before it noticed
            # the shutdown: expected then, a fault otherwise.
            if not self._stopping.is_set():
                raise

    def _serve_ingress(self) -> Server:
        return serve(
            self._handle_connection,
            "127.0.0.1",
            self.port,
            process_request=self._process_request,
            compression=None,
            max_size=None,
            ping_interval=None,
            open_timeout=10,
            close_timeout=2,
            server_header="avatarsdk-fake",
            ssl=self.ssl_context,
        )

    def close(self) -> None:
        """Stop listening, close every connection, and join the fake's threads."""
        self._stopping.set()
        with self._lock:
            connections = list(self.connections)
        for conn in connections:
            conn._jobs.put(None)
            conn._reading.set()
            try:
                conn.ws.close_socket()
            except OSError:
                pass
        if self._ws_server is not None:
            self._ws_server.shutdown()
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> FakeAvatarService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- addresses

    @property
    def console_url(self) -> str:
        """Base URL of the console API (``http://127.0.0.1:PORT``)."""
        assert self._http_server is not None, "start() the service first"
        return f"{self._scheme}://127.0.0.1:{self._http_server.server_address[1]}"

    @property
    def ingress_url(self) -> str:
        """Base URL of the v2 ingress (``http://127.0.0.1:PORT/v2/driveningress``)."""
        assert self._ws_server is not None, "start() the service first"
        return f"{self._scheme}://127.0.0.1:{self._ws_server.socket.getsockname()[1]}{INGRESS_PATH}"

    @property
    def _scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    def credentials(self) -> Dict[str, str]:
        """``avatar_id``, ``api_key``, ``app_id`` and the two endpoint URLs of this service."""
        return {
            "avatar_id": self.avatar_id,
            "api_key": self.api_key,
            "app_id": self.app_id,
            "console_endpoint_url": self.console_url,
            "ingress_endpoint_url": self.ingress_url,
        }

    def session_kwargs(self, **overrides: Any) -> Dict[str, Any]:
        """Keyword arguments for ``new_avatar_session`` that reach this service: :meth:`credentials` and an
        ``expire_at`` one hour ahead, updated with ``overrides``."""
        kwargs: Dict[str, Any] = dict(self.credentials(), expire_at=datetime.now(timezone.utc) + timedelta(hours=1))
        kwargs.update(overrides)
        return kwargs

    # -- scripting

    def script_token(self, reply: TokenReply) -> None:
        """Answer the next token call with ``reply`` (replies queue up, first in first out)."""
        with self._lock:
            self._token_replies.append(reply)

    def reject_upgrade(self, status: int, body: Union[bytes, str, Dict[str, Any], None] = None) -> None:
        """Reject the next WebSocket upgrade with an HTTP ``status`` and ``body``."""
        with self._lock:
            self._rejections.append(UpgradeRejection(status, body))

    def script_handshake(self, reply: HandshakeReply) -> None:
        """Answer the next connection's handshake with ``reply`` instead of a confirmation."""
        with self._lock:
            self._handshakes.append(reply)

    def expire_token(self, token: str) -> None:
        """Make an issued token count as expired."""
        with self._lock:
            self._tokens[token]["expire_at"] = 0

    @property
    def issued_tokens(self) -> List[str]:
        with self._lock:
            return list(self._tokens)

    def wait_for_connection(self, index: int = -1, timeout: float = 5.0) -> FakeConnection:
        """The connection at ``index`` once its handshake reply has gone out (``-1``: the first new one)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            want = len(self.connections) if index == -1 else index
            while len(self.connections) <= want or self.connections[want].configure is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no connection #{want} within {timeout}s")
                self._lock.wait(remaining)
            return self.connections[want]

    def find_request(self, req_id: str) -> Optional[Tuple[FakeConnection, FakeRequest]]:
        """The connection that received request ``req_id``, and the request as received (``None`` if none did)."""
        with self._lock:
            connections = list(self.connections)
        for conn in connections:
            with conn._cond:
                request = conn.requests.get(req_id)
            if request is not None:
                return conn, request
        return None

    def clear_records(self) -> None:
        """Forget the token requests and the connections that have closed (for long runs: the records are
        the stand-in's only growing memory)."""
        with self._lock:
            self.token_requests.clear()
            self.connections = [c for c in self.connections if not c.closed.is_set()]

    def connection(self, index: int = -1) -> FakeConnection:
        """A connection already made (``-1``: the latest)."""
        with self._lock:
            return self.connections[index]

    # -- console API

    def _token_call(self, headers: Dict[str, str], body: bytes) -> Tuple[int, bytes, Dict[str, str], float]:
        with self._lock:
            self.token_requests.append(TokenRequest(headers, body))
            scripted = self._token_replies.pop(0) if self._token_replies else None
            self._lock.notify_all()
        if scripted is not None:
            data, ctype = _body_bytes(scripted.body)
            return scripted.status, data, {"Content-Type": ctype, **scripted.headers}, scripted.delay
        if headers.get("x-api-key") != self.api_key:
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
        with self._lock:
            self._counter += 1
            token = f"fake-token-{self._counter}-{int(now * 1000) % 100000:05d}"
            self._tokens[token] = {"expire_at": expire_at, "used": False}
        return _json(200, {"sessionToken": token})

    # -- ingress

    def _process_request(self, ws: ServerConnection, request: Request) -> Optional[Response]:
        with self._lock:
            self.upgrade_attempts += 1
            rejection = self._rejections.pop(0) if self._rejections else None
        if rejection is not None:
            return _response(rejection.status, rejection.body)
        parts = urlsplit(request.path)
        query = dict(parse_qsl(parts.query))
        v1 = parts.path == INGRESS_V1_PATH + "/websocket"
        if parts.path != INGRESS_PATH + "/websocket" and not v1:
            return _response(404, "404 page not found")
        if v1 and not request.headers.get("X-Connection-Id"):
            return _response(400, jsonapi_error(400, "INVALID_ARGUMENT", "Bad Request", "missing connection id"))
        app_id = request.headers.get("X-App-ID") or query.get("appId", "")
        token = request.headers.get("X-Session-Key") or query.get("sessionKey", "")
        if not token:
            return _response(400, jsonapi_error(400, "INVALID_ARGUMENT", "Bad Request", "empty token"))
        with self._lock:
            issued = self._tokens.get(token)
            if issued is None or (self.single_use_tokens and issued["used"]):
                return _response(400, jsonapi_error(400, "INVALID_ARGUMENT", "Bad Request", "invalid session token"))
            if issued["expire_at"] <= time.time():
                return _response(401, jsonapi_error(401, "UNAUTHENTICATED", "Unauthorized", "token is expired"))
            issued["used"] = True
        if app_id != self.app_id and not v1:  # v1 carries no app id
            return _response(400, jsonapi_error(400, "INVALID_ARGUMENT", "Bad Request", "app id mismatch"))
        if query.get("id") != self.avatar_id:
            return _response(404, jsonapi_error(404, "NOT_FOUND", "Not Found", "avatar not found"))
        return None

    def _handle_connection(self, ws: ServerConnection) -> None:
        with self._lock:
            number = len(self.connections)
            conn = FakeConnection(self, ws, number)
            self.connections.append(conn)
            reply = self._handshakes.pop(0) if self._handshakes else Confirm()
        responder = threading.Thread(target=conn._responder, name=f"fakeservice-responder-{number}", daemon=True)
        responder.start()
        try:
            self._serve(conn, reply)
        except ConnectionClosed:
            pass
        finally:
            conn._jobs.put(None)
            responder.join(5)
            conn._record(lambda: setattr(conn, "client_close_code", ws.close_code))
            conn.closed.set()
            with self._lock:
                self._lock.notify_all()

    def _serve(self, conn: FakeConnection, reply: HandshakeReply) -> None:
        ws = conn.ws
        if conn.version == 1:
            self._serve_v1(conn)
            return
        first = ws.recv()
        envelope = pb.Message()
        if isinstance(first, str):
            conn.send_error(3, "expected ClientConfigureSession message")
            ws.close(1002)
            return
        envelope.ParseFromString(first)
        if envelope.type != pb.MESSAGE_CLIENT_CONFIGURE_SESSION:
            conn.send_error(3, "expected ClientConfigureSession message")
            ws.close(1002)
            return
        with self._lock:
            self._counter += 1
            conn.connection_id = (
                reply.connection_id
                if isinstance(reply, Confirm) and reply.connection_id is not None
                else f"conn-{self._counter}"
            )
            conn.configure = envelope.client_configure_session
            self._lock.notify_all()
        if isinstance(reply, Confirm):
            msg = pb.Message(type=pb.MESSAGE_SERVER_CONFIRM_SESSION)
            msg.server_confirm_session.connection_id = conn.connection_id
            msg.server_confirm_session.capabilities.extend(
                self.capabilities if reply.capabilities is None else reply.capabilities
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
                self._stopping.wait()
            return
        elif isinstance(reply, HandshakeClose):
            ws.close(reply.code, reply.reason)
            return
        elif isinstance(reply, HandshakeRaw):
            ws.send(reply.text if reply.text is not None else reply.data)
        elif isinstance(reply, HandshakeDrop):
            conn.drop()
            return
        elif isinstance(reply, HandshakeSilence):
            self._stopping.wait()
            return
        self._receive_loop(conn)

    def _receive_loop(self, conn: FakeConnection) -> None:
        ws = conn.ws
        while not self._stopping.is_set():
            conn._reading.wait()
            message = ws.recv()
            if isinstance(message, str):
                continue
            envelope = pb.Message()
            envelope.ParseFromString(message)
            conn._record(functools.partial(conn.messages.append, envelope))
            if envelope.type == pb.MESSAGE_CLIENT_AUDIO_INPUT:
                chunk = envelope.client_audio_input
                self._on_audio(conn, chunk.req_id, chunk.audio, chunk.end)
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
                if "playback_state" in self.capabilities or "playback_control" in self.capabilities:
                    conn.send_playback_state(req_id, 2 if pause else 1, played_ms=0, reason="explicit")

    def _serve_v1(self, conn: FakeConnection) -> None:
        """v1: no handshake (the client's X-Connection-Id is the connection id); audio in, segments out."""
        ws = conn.ws
        with self._lock:
            conn.connection_id = conn.request_headers.get("X-Connection-Id", "")
            conn.configure = pb.ClientConfigureSession(sample_rate=16000)  # v1 is 16 kHz PCM only
            self._lock.notify_all()
        while not self._stopping.is_set():
            conn._reading.wait()
            message = ws.recv()
            if isinstance(message, str):
                continue
            envelope = pb1.Message()
            envelope.ParseFromString(message)
            conn._record(functools.partial(conn.messages.append, envelope))  # type: ignore[arg-type]
            if envelope.type == pb1.MESSAGE_CLIENT_AUDIO_INPUT:
                chunk = envelope.client_audio_input
                self._on_audio(conn, chunk.req_id, chunk.audio, chunk.end)

    def _on_audio(self, conn: FakeConnection, req_id: str, audio: bytes, end: bool) -> None:
        def record() -> FakeRequest:
            request = conn.requests.setdefault(req_id, FakeRequest(req_id))
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
        if self.on_request is not None:
            self.on_request(conn, request)
            return
        if conn.version == 1:
            conn.send_v1_frames(self.frames_for(conn, request), interval=self.frame_interval)
            return
        conn.send_frames(request.req_id, self.frames_for(conn, request), interval=self.frame_interval)

    def frames_for(self, conn: FakeConnection, request: FakeRequest) -> int:
        """How many frames the fake answers ``request`` with: ``frames_per_request``, or one per 40 ms (v1:
        the segments its duration calls for, the rule clients infer the last one from)."""
        if self.frames_per_request is not None:
            return self.frames_per_request
        if conn.version == 1:
            return expected_segments(len(request.audio) / 2 / 16000)
        rate = conn.configure.sample_rate if conn.configure is not None and conn.configure.sample_rate else 16000
        seconds = len(request.audio) / 2 / rate
        return max(1, round(seconds / FRAME_PERIOD))


# ------------------------------------------------------------------------------------ HTTP parts


def _json(status: int, document: Dict[str, Any]) -> Tuple[int, bytes, Dict[str, str], float]:
    return status, json.dumps(document).encode("utf-8"), {"Content-Type": "application/json"}, 0.0


def _response(status: int, body: Union[bytes, str, Dict[str, Any], None]) -> Response:
    data, ctype = _body_bytes(body)
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(data))), ("Connection", "close")])
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return Response(status, reason, headers, data)


class _ConsoleServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a fixed port can be bound again right after a previous run


def _console_handler(service: FakeAvatarService) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "avatarsdk-fake"
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: with Nagle's algorithm on, the body of a response on a
        # kept-alive connection waits for the client's delayed ACK (40 ms). The service answers at once.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if urlsplit(self.path).path != "/session-tokens":
                self._send(404, b"404 page not found", {"Content-Type": "text/plain"})
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, data, extra, delay = service._token_call(headers, body)
            if delay and service._stopping.wait(delay):
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
