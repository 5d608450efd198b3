"""FakeConnection: one ingress WebSocket connection of the stand-in, its records, and the handle to act on it.

It owns what was received on the connection (messages, requests, controls), what the stand-in sent on it
(animation frames), the sends a test makes (frames, errors, raw bytes, close, drop) and the reading pause;
and a responder thread that runs the answers to requests, so that a paced answer never stops the reading.
"""

from __future__ import annotations

import functools
import logging
import queue
import socket
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Protocol, Tuple
from urllib.parse import parse_qsl, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from .._proto import ingress_v1_pb2 as pb1
from .._proto import ingress_v2_pb2 as pb
from ._scripts import FakeRequest
from .wire import animation_frame, v1_animation_frame, ws_frame

logger = logging.getLogger(__name__)


class Owner(Protocol):
    """What a connection reads from the service that accepted it, when it sends."""

    frame_size: int  # the size of an animation frame unless a send names one
    _stopping: threading.Event  # set when the service closes: paced sends stop


class FakeConnection:
    """One ingress WebSocket connection as the fake sees it; also the handle to act on it."""

    def __init__(self, service: Owner, ws: ServerConnection, number: int, version: int) -> None:
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
        self.version = version  # of the protocol: 1 or 2
        self.controls: List[Tuple[str, str]] = []  # ("pause" | "resume" | "interrupt", req_id), in order
        self.closed = threading.Event()
        self._cond = threading.Condition()  # records and waits; never held while sending
        self._sending = threading.Lock()  # serialises the fake's own sends that are recorded
        self._reading = threading.Event()
        self._reading.set()
        self._jobs: queue.Queue[Optional[Callable[[], None]]] = queue.Queue()
        self._seq = 0

    # -- records

    @property
    def extra_params(self) -> Dict[str, str]:
        """The session parameters the client's configure message carried (``extra_params``, field 8)."""
        with self._cond:
            return dict(self.configure.extra_params) if self.configure is not None else {}

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
        for i in self._paced(count, interval):
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
        for _ in self._paced(count, interval):
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

    def _paced(self, count: int, interval: float) -> Iterator[int]:
        """``0`` to ``count - 1``, ``interval`` seconds apart; ends early when the service closes."""
        for i in range(count):
            if i and interval and self.service._stopping.wait(interval):
                return
            yield i

    def _run(self, serve: Callable[[], None]) -> None:
        """Run ``serve`` (it reads the connection until it closes) with the responder thread beside it, then
        record how the connection closed."""
        responder = threading.Thread(target=self._responder, name=f"fakeservice-responder-{self.number}", daemon=True)
        responder.start()
        try:
            serve()
        except ConnectionClosed:
            pass
        finally:
            self._jobs.put(None)
            responder.join(5)
            self._record(lambda: setattr(self, "client_close_code", self.ws.close_code))
            self.closed.set()

    def _abort(self) -> None:
        """Stop the responder and the reading, and close the socket (the service is closing)."""
        self._jobs.put(None)
        self._reading.set()
        try:
            self.ws.close_socket()
        except OSError:
            pass

    def _send_with_frames(self, first: bytes, count: int) -> None:
        """``first`` and ``count`` animation frames as unmasked WebSocket frames, in one write."""
        with self._sending:
            frames = []
            for i in range(count):
                self._seq += 1
                frames.append(animation_frame(self.connection_id or "", "early", i == count - 1, 300, self._seq))
            self._record(functools.partial(self.sent.extend, [("early", f) for f in frames]))
            self.ws.socket.sendall(b"".join(ws_frame(m) for m in [first, *frames]))

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
