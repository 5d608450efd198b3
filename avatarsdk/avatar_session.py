"""The blocking avatar session: ``init()`` → ``start()`` → ``send_audio()`` … → ``close()``."""

from __future__ import annotations

import copy
import dataclasses
import enum
import itertools
import logging
import os
import threading
import time
import warnings
import weakref
from collections import deque
from datetime import datetime
from types import TracebackType
from typing import Callable, Deque, Dict, FrozenSet, Generator, List, Optional, Tuple, Type, Union

import requests

from . import _opus, _protocol, _protocol_v1
from ._dispatch import (
    DEFAULT_MAX_QUEUED,
    Dispatcher,
    FrameQueue,
    SharedDispatcher,
    TextFrame,
    new_dispatcher,
    safe_call,
)
from ._fork import process_generation
from ._network import ClientCert, NetworkOptions, user_stacklevel, warn_insecure_transport
from ._protocol import peek_animation
from ._token import NO_RETRIES, RetryPolicy, request_session_token
from ._transport import CLOSE_NORMAL, Connection, ParkedThread, Reader, StreamEnd, closed_error, server_error
from ._validation import (
    HttpTimeout,
    check_audio,
    check_config,
    check_expire_at,
    check_http_timeout,
    check_int,
    check_timeout,
)
from .errors import (
    PHASE_SESSION_TOKEN,
    PHASE_WEBSOCKET_RUNTIME,
    PHASE_WEBSOCKET_SEND,
    AvatarSDKError,
    AvatarSDKErrorCode,
)
from .logid import generate_log_id
from .playback import PlaybackState
from .reconnect import ReconnectEvent, ReconnectPolicy, ReconnectState, reconnect_policy
from .request import AvatarRequest, Frame
from .session_config import (
    AgoraEgressConfig,
    AudioFormat,
    CloseCallback,
    EncodedAudioCallback,
    ErrorCallback,
    LiveKitEgressConfig,
    OggOpusEncoderConfig,
    PlaybackStateCallback,
    ReconnectCallback,
    SessionConfig,
    TransportFramesCallback,
)

__all__ = ["AvatarSession", "new_avatar_session"]

logger = logging.getLogger(__name__)

DEFAULT_HTTP_TIMEOUT: Tuple[float, float] = (5.0, 15.0)
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_SEND_TIMEOUT = 10.0
DEFAULT_CLOSE_TIMEOUT = 5.0
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
DEFAULT_FRAME_TIMEOUT = 10.0
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 20.0
DEFAULT_HTTP_RETRIES = 2
DEFAULT_HTTP_RETRY_DEADLINE = 30.0
DEFAULT_CHUNK_MS = 100

MAX_TRACKED_REQUESTS = 256  # requests in flight remembered for a reconnect (oldest forgotten first)

_session_numbers = itertools.count(1)


class _State(enum.Enum):
    NEW = "new"
    INITIALIZED = "initialized"
    STARTING = "starting"
    STARTED = "started"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


class AvatarSession:
    """A session with the avatar service, driven from blocking code.

    ``init()`` gets a session token, ``start()`` opens the WebSocket and completes the handshake,
    ``send_audio()`` streams an utterance (``end=True`` on its last chunk), ``close()`` ends the session.
    Used as a context manager, entering runs ``init()`` and ``start()`` and leaving runs ``close()``.

    Received animation frames are delivered to ``config.transport_frames`` on the session's dispatcher thread
    (``avatarsdk-dispatch-N``), in arrival order; faults go to ``config.on_error`` on the same thread, and
    ``config.on_close`` is called there exactly once, after every frame received before the end. A separate
    reader thread (``avatarsdk-reader-N``) owns the socket and never runs user code. With ``dispatcher=`` (a
    :class:`~avatarsdk.SharedDispatcher`), the callbacks run on its shared threads instead, in the same order.

    Thread-safety: every method may be called from any thread, including from inside callbacks.

    Args:
        config: The session configuration (copied; later changes to it have no effect).
        http_timeout: Token call timeout in seconds, or ``(connect, read)`` seconds.
        connect_timeout: Seconds for each blocking step of the WebSocket connect (TCP, TLS, upgrade).
        handshake_timeout: Seconds from sending the session configuration to its confirmation.
        send_timeout: Seconds a send may block on a server that is not reading.
        close_timeout: Seconds ``close()`` waits for the server's close reply, and for each thread to end.
        max_queued_frames: Received messages that may wait for the callbacks; past that the reader stops
            reading (TCP back-pressure) until the callbacks catch up.
        max_message_size: Largest message accepted from the server, in bytes (``None``: no limit); a larger
            one ends the session with ``protocolError`` (close code 1009).
        ping_interval: Seconds of silence from the server after which a WebSocket ping is sent (``None``: no
            keepalive).
        ping_timeout: Seconds a ping may go unanswered (no pong, no data) before the connection counts as dead:
            the session then ends with ``connectionClosed`` (close code 1006, retryable).
        http_retries: Retries of the token call after connection failures, 5xx and 429 (never another 4xx),
            with capped, jittered exponential backoff and ``Retry-After`` honoured.
        http_retry_deadline: Seconds from the first token call within which retries may happen.
        verify_tls: Check the servers' certificates (the default; ``False`` warns).
        ca_bundle: A PEM file of certificate authorities to trust instead of the default store.
        client_cert: A client certificate: a PEM file holding certificate and key, or ``(cert, key)`` paths.
        proxy: ``http://[user:password@]host:port`` for both connections; by default the environment's
            ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` apply, as in requests and websocket-client.
        reconnect: ``True`` or a :class:`~avatarsdk.ReconnectPolicy` to reconnect automatically after a drop
            worth retrying (see :mod:`avatarsdk.reconnect`): a new token, connection and handshake, with
            backoff. Requests in flight at the drop fail (``on_error``, one retryable error naming each
            ``req_id``); ``config.on_reconnect`` follows the attempts; sends wait for the new connection (up
            to ``send_timeout``). Off by default.
        dispatcher: A :class:`~avatarsdk.SharedDispatcher` whose threads run this session's callbacks, shared
            with other sessions (for hundreds of sessions in one process); ``None`` (the default): the
            session's own dispatcher thread.

    Every timeout may be ``None`` for no limit. Credentials that would travel unencrypted to another host, or in
    a URL query, raise an ``InsecureTransportWarning`` when the session is created.

    Raises:
        TypeError, ValueError: a field of ``config`` or an argument is invalid (the message names it).
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        http_timeout: HttpTimeout = DEFAULT_HTTP_TIMEOUT,
        connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
        handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
        send_timeout: Optional[float] = DEFAULT_SEND_TIMEOUT,
        close_timeout: Optional[float] = DEFAULT_CLOSE_TIMEOUT,
        max_queued_frames: int = DEFAULT_MAX_QUEUED,
        max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
        ping_interval: Optional[float] = DEFAULT_PING_INTERVAL,
        ping_timeout: Optional[float] = DEFAULT_PING_TIMEOUT,
        http_retries: int = DEFAULT_HTTP_RETRIES,
        http_retry_deadline: Optional[float] = DEFAULT_HTTP_RETRY_DEADLINE,
        verify_tls: bool = True,
        ca_bundle: Optional[str] = None,
        client_cert: Optional[ClientCert] = None,
        proxy: Optional[str] = None,
        reconnect: Union[bool, ReconnectPolicy, None] = None,
        dispatcher: Optional[SharedDispatcher] = None,
        _warn_insecure: bool = True,
    ) -> None:
        check_config(config)
        self._config = _copy_config(config)
        self._v1 = _protocol_v1.is_v1(self._config.ingress_endpoint_url)
        if self._v1:
            _check_v1(self._config)
            warnings.warn(
                "the v1 ingress (/v1/driveningress) is deprecated by the service; use /v2/driveningress",
                DeprecationWarning,
                stacklevel=user_stacklevel(),
            )
        self._segments = _protocol_v1.SegmentCounter() if self._v1 else None  # v1: frames → requests
        self._http_timeout = check_http_timeout(http_timeout)
        self._connect_timeout = check_timeout("connect_timeout", connect_timeout)
        self._handshake_timeout = check_timeout("handshake_timeout", handshake_timeout)
        self._send_timeout = check_timeout("send_timeout", send_timeout)
        self._close_timeout = check_timeout("close_timeout", close_timeout)
        if check_int("max_queued_frames", max_queued_frames) < 1:
            raise ValueError(f"max_queued_frames: expected at least 1, got {max_queued_frames!r}")
        self._max_queued = max_queued_frames
        if max_message_size is not None and check_int("max_message_size", max_message_size) < 1:
            raise ValueError(f"max_message_size: expected at least 1 byte or None, got {max_message_size!r}")
        self._max_message_size = max_message_size
        self._ping_interval = check_timeout("ping_interval", ping_interval)
        self._ping_timeout = check_timeout("ping_timeout", ping_timeout)
        if check_int("http_retries", http_retries) < 0:
            raise ValueError(f"http_retries: expected 0 or more, got {http_retries!r}")
        self._retry = RetryPolicy(
            retries=http_retries, deadline=check_timeout("http_retry_deadline", http_retry_deadline)
        )
        self._net = NetworkOptions.checked(
            verify_tls=verify_tls, ca_bundle=ca_bundle, client_cert=client_cert, proxy=proxy
        )
        if _warn_insecure:  # a pool warns once, for all its sessions
            warn_insecure_transport(
                config.console_endpoint_url, config.ingress_endpoint_url, use_query_auth=config.use_query_auth
            )
        self._http: Optional[requests.Session] = None  # the token calls' connection pool, made by init()
        self._reconnect = reconnect_policy(reconnect)
        if dispatcher is not None and not isinstance(dispatcher, SharedDispatcher):
            raise TypeError(f"dispatcher: expected a SharedDispatcher or None, got {type(dispatcher).__name__}")
        self._shared_dispatcher = dispatcher
        # Requests in flight are tracked only for a reconnect to fail them (egress sessions get no frames back).
        self._track = self._reconnect is not None and not (self._config.livekit_egress or self._config.agora_egress)

        self._configure = _protocol.encode_configure(self._config)  # the handshake's first message, ready
        self._number = next(_session_numbers)
        self._lock = threading.Lock()  # guards the state below
        self._state_changed = threading.Condition(self._lock)  # senders wait here while a reconnect runs
        self._wake = threading.Event()  # set by close(): cuts a reconnect's backoff short
        self._send_lock = threading.Lock()  # wire order of client messages, and the req_id state
        self._state = _State.NEW
        self._token: Optional[str] = None
        self._conn: Optional[Connection] = None
        self._parked: Optional[ParkedThread] = None  # the reader's thread, started by init() ahead of start()
        self._reader_thread: Optional[threading.Thread] = None
        self._dispatcher: Optional[Dispatcher[StreamEnd]] = None
        self._queue: Optional[FrameQueue[StreamEnd]] = None
        self._connection_id: Optional[str] = None
        self._current_req_id: Optional[str] = None
        self._last_req_id: Optional[str] = None
        self._user_closed = False
        self._send_failure: Optional[AvatarSDKError] = None
        self._end_error: Optional[AvatarSDKError] = None
        self._last_server_error_code: Optional[str] = None
        self._pulls: Dict[str, AvatarRequest] = {}  # open pull requests by req_id (written under the lock)
        self._capabilities: FrozenSet[str] = frozenset()
        self._request_has_audio = False  # a chunk of the current request went out (send lock)
        self._in_flight: Dict[str, None] = {}  # sent, last frame not delivered yet (with the lock; if _track)
        self._cut: Dict[str, AvatarSDKError] = {}  # requests the last drop cut off → its cause (send lock)
        encoder = self._config.ogg_opus_encoder  # PCM → Ogg Opus in the SDK; PyAV missing fails here, before I/O
        self._encoder = (
            _opus.OggOpusStreamEncoder(
                sample_rate=self._config.sample_rate,
                bitrate=self._config.bitrate,
                frame_duration_ms=encoder.frame_duration_ms,
                application=encoder.application,
            )
            if encoder is not None
            else None
        )
        self._encoded_parts: Optional[List[bytes]] = [] if self._config.on_encoded_audio is not None else None
        self._ended_req_ids: Deque[str] = deque(maxlen=64)  # recent requests whose last frame was delivered
        self._process = process_generation()  # fork detection
        self._pid = os.getpid()
        self._on_close_called = False
        self._finisher: Optional[int] = None  # thread running on_close
        self._closed = threading.Event()

    # ------------------------------------------------------------------------------------------ info

    @property
    def config(self) -> SessionConfig:
        """The session's configuration."""
        return self._config

    @property
    def connection_id(self) -> Optional[str]:
        """The connection id the server confirmed in ``start()`` (``None`` before)."""
        return self._connection_id

    @property
    def current_req_id(self) -> Optional[str]:
        """The request whose ``end=True`` chunk has not been sent yet (``None`` between requests)."""
        return self._current_req_id

    @property
    def capabilities(self) -> FrozenSet[str]:
        """What the server declared in its confirmation (the service's newer generation), e.g.
        ``{"playback_control", "playback_state"}``; empty before ``start()`` and for older servers."""
        return self._capabilities

    @property
    def protocol_version(self) -> int:
        """2, or 1 for the deprecated v1 ingress (chosen from ``ingress_endpoint_url``'s path)."""
        return 1 if self._v1 else 2

    @property
    def closed(self) -> bool:
        """``True`` once the session has ended (by ``close()`` or by the server) and ``on_close`` has run."""
        return self._closed.is_set()

    def __repr__(self) -> str:
        return (
            f"<AvatarSession #{self._number} avatar_id={self._config.avatar_id!r} state={self._state.value}"
            f" connection_id={self._connection_id!r}>"
        )

    # ------------------------------------------------------------------------------------- lifecycle

    def init(self) -> None:
        """Get a session token from the console API (``POST /session-tokens``).

        May be called again before ``start()`` to replace the token. It also starts the session's reader
        thread, parked until ``start()`` gives it the connection.

        Raises:
            SessionTokenError: the token call failed (``code``, ``http_status``, ``server_*`` say why).
            ValueError: the session is started or closed, or ``expire_at`` has passed.
        """
        self._check_process("init")
        with self._lock:
            self._require("init", _State.NEW, _State.INITIALIZED)
        token = self._request_token(self._retry)
        with self._lock:
            if self._state in (_State.NEW, _State.INITIALIZED):
                self._token = token
                self._state = _State.INITIALIZED
                if self._parked is None:
                    # Start the reader's thread now, parked: start() then hands it the connection instead of
                    # paying for a thread start. A session dropped without close() lets it go.
                    self._parked = ParkedThread(f"avatarsdk-reader-{self._number}")
                    weakref.finalize(self, self._parked.cancel)
        logger.debug("session #%d: token obtained", self._number)

    def start(self) -> str:
        """Open the WebSocket, complete the handshake and start receiving; return the connection id.

        Raises:
            AvatarSDKError: the upgrade was rejected (phase ``websocket_connect``, with ``http_status`` and
                ``raw_body``), or the handshake failed (phase ``websocket_handshake``).
            ValueError: ``init()`` has not run, or the session is started or closed.
        """
        self._check_process("start")
        with self._lock:
            self._require("start", _State.INITIALIZED)
            self._state = _State.STARTING
            token = self._token
        assert token is not None
        try:
            conn, connection_id, capabilities = self._connect(token, _State.STARTING)
        except BaseException as exc:
            if self._start_failed():
                raise ValueError("start(): the session was closed while starting") from exc
            raise
        dispatcher: Dispatcher[StreamEnd] = new_dispatcher(
            self._shared_dispatcher,
            maxsize=self._max_queued,
            on_frame=self._on_frame_v1 if self._v1 else self._on_frame,
            on_text=self._on_text,
            on_end=self._on_end,
            name=f"avatarsdk-dispatch-{self._number}",
        )
        queue = dispatcher.queue
        with self._lock:
            closing = self._state is not _State.STARTING
            if not closing:
                parked = self._parked or ParkedThread(f"avatarsdk-reader-{self._number}")
                self._parked = None
                self._queue, self._dispatcher, self._reader_thread = queue, dispatcher, parked.thread
                self._connection_id = connection_id
                self._capabilities = frozenset(capabilities)
                self._token = None  # a token is for one connection
                self._state = _State.STARTED
                parked.run(Reader(conn, queue, dispatcher).run)
        if closing:  # close() ran while we were connecting
            conn.send_close(CLOSE_NORMAL)
            conn.close()
            self._start_failed()
            raise ValueError("start(): the session was closed while starting")
        logger.debug("session #%d: started (connection id %s)", self._number, connection_id)
        return connection_id

    def _start_failed(self) -> bool:
        """start() failed: back to INITIALIZED (init() again for a new token), or CLOSED if close() came
        meanwhile (then return ``True``)."""
        with self._lock:
            self._conn = None
            closing = self._state is not _State.STARTING
            if not closing:
                self._state = _State.INITIALIZED
        if closing:
            self._finish()
        return closing

    def _connect(self, token: str, state: _State) -> Tuple[Connection, str, Tuple[str, ...]]:
        """Open a connection with ``token`` and complete the handshake (for ``start()`` and reconnects, while
        the session is in ``state``); return it with its id and the server's capabilities. A ``close()``
        meanwhile shuts the connection down (the handshake then fails) or, before it is open, makes it raise
        ``ValueError``."""
        config = self._config
        if self._v1:  # no handshake: the connection id is our own
            v1_connection_id = generate_log_id()
            url, headers = _protocol_v1.websocket_target(
                config.ingress_endpoint_url,
                avatar_id=config.avatar_id,
                session_token=token,
                connection_id=v1_connection_id,
            )
        else:
            url, headers = _protocol.websocket_target(
                config.ingress_endpoint_url,
                avatar_id=config.avatar_id,
                app_id=config.app_id,
                session_token=token,
                use_query_auth=config.use_query_auth,
            )
        conn = Connection.open(
            url,
            headers,
            connect_timeout=self._connect_timeout,
            secrets=_secrets(config, token),
            max_message_size=self._max_message_size,
            options=self._net.websocket_options(),
            keepalive=(self._ping_interval, self._ping_timeout),
        )
        with self._lock:
            closing = self._state is not state
            if not closing:
                self._conn = conn  # close() meanwhile shuts it down, cutting the handshake short
        if closing:
            conn.close()
            raise ValueError("the session was closed while connecting")
        try:
            capabilities: Tuple[str, ...] = ()
            if self._v1:
                connection_id = v1_connection_id
            else:
                confirm = conn.handshake(self._configure, self._handshake_timeout)
                connection_id, capabilities = confirm.connection_id, confirm.capabilities
            conn.set_timeout(self._send_timeout)
        except BaseException:
            conn.close()
            raise
        return conn, connection_id, capabilities

    def send_audio(self, audio: Union[bytes, bytearray, memoryview], end: bool = False) -> str:
        """Send one chunk of the current request's audio; return its request id.

        The first chunk after ``start()``, after an ``end=True`` chunk or after ``interrupt()`` starts a new
        request (a new id); every chunk until the one with ``end=True`` carries the same id.

        Args:
            audio: PCM s16le mono at ``config.sample_rate`` (or Ogg Opus bytes for ``OGG_OPUS`` sessions).
            end: ``True`` on the request's last chunk (it may be empty).

        Raises:
            TypeError, ValueError: bad audio (not bytes, odd length, or a whole WAV file: use
                :func:`avatarsdk.load_audio`), or the session is not started or was closed by ``close()``.
            AvatarSDKError: the send failed, or the server ended the session (phase ``websocket_send``).

        Thread-safety: safe from any thread; chunks go out whole, in the order the calls took the session.
        """
        data = self._check_audio(audio, end)
        with self._send_lock:
            cut = self._current_req_id
            if cut is not None and cut in self._cut:
                self._current_req_id = None  # the next chunk starts a new request
                raise self._cut_error(cut, PHASE_WEBSOCKET_SEND)
            conn = self._sendable("send_audio")
            req_id = self._current_req_id or generate_log_id()
            self._current_req_id = req_id
            encoded = self._send_chunk(conn, req_id, data, end)
            self._last_req_id = req_id
        logger.debug("session #%d: sent %d audio bytes (req_id %s, end=%s)", self._number, len(data), req_id, end)
        if encoded is not None:
            safe_call("on_encoded_audio", self._config.on_encoded_audio, req_id, encoded)
        return req_id

    def _check_audio(self, audio: Union[bytes, bytearray, memoryview], end: bool) -> bytes:
        if not isinstance(end, bool):
            raise TypeError(f"end: expected a bool, got {type(end).__name__}")
        return check_audio(audio, self._config.audio_format, pcm=self._encoder is not None)

    def _send_chunk(self, conn: Connection, req_id: str, data: bytes, end: bool) -> Optional[bytes]:
        """Send one chunk of the current request ``req_id`` (send lock held); on its last chunk, return the
        request's whole encoded stream if ``on_encoded_audio`` wants it."""
        first = not self._request_has_audio
        if self._encoder is not None:
            payload = self._encoder.encode(data, end=end)
            if self._encoded_parts is not None and payload:
                self._encoded_parts.append(payload)
            if not payload and not end:
                return None  # less than an Opus frame so far: nothing to send yet
        else:
            payload = data
            if first and self._config.audio_format is AudioFormat.OGG_OPUS and payload and payload[:4] != b"OggS":
                raise ValueError(
                    "audio: expected an Ogg Opus stream starting with its first page ('OggS'); to send PCM in an"
                    " OGG_OPUS session, set ogg_opus_encoder"
                )
        self._send(conn, self._encode_audio(req_id, payload, end), req_id)
        if first and self._track:
            with self._lock:
                self._in_flight[req_id] = None
                if len(self._in_flight) > MAX_TRACKED_REQUESTS:
                    del self._in_flight[next(iter(self._in_flight))]
        self._request_has_audio = not end
        if end:
            self._current_req_id = None
            if self._encoded_parts is not None:
                stream, self._encoded_parts = b"".join(self._encoded_parts), []
                return stream
        return None

    def _drop_request_audio(self) -> None:
        """The current request ends without its end chunk (interrupt, close): drop the encoder's stream."""
        self._request_has_audio = False
        if self._encoder is not None:
            self._encoder.reset()
            if self._encoded_parts is not None:
                self._encoded_parts = []

    def open_request(
        self, *, frame_timeout: Optional[float] = DEFAULT_FRAME_TIMEOUT, deadline: Optional[float] = None
    ) -> AvatarRequest:
        """Start a request whose frames you iterate (pull style); send its audio with ``request.send()``.

        The request's id is reserved and its frames are subscribed to before any audio is sent, so none can
        be missed. Iterating yields :class:`~avatarsdk.Frame` objects and ends after the last frame.

        Args:
            frame_timeout: Seconds to wait for each frame (``None``: no limit).
            deadline: Seconds from now until the last frame (``None``: no limit).

        Raises:
            ValueError: the session is not started or is closed, or another request is still open (its
                ``end=True`` chunk not sent yet).

        Thread-safety: safe from any thread; a session carries one open request at a time.
        """
        check_timeout("frame_timeout", frame_timeout)
        check_timeout("deadline", deadline)
        with self._send_lock:
            self._sendable("open_request")
            if self._current_req_id is not None:
                raise ValueError(
                    f"open_request(): request {self._current_req_id} is still open; send its end=True chunk"
                    " or interrupt() it first"
                )
            req_id = generate_log_id()
            request = AvatarRequest(self, req_id, frame_timeout=frame_timeout, deadline=deadline)
            with self._lock:
                self._pulls[req_id] = request
            self._current_req_id = self._last_req_id = req_id
            self._request_has_audio = False
        return request

    def stream(
        self,
        audio: Union[bytes, bytearray, memoryview],
        *,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        frame_timeout: Optional[float] = DEFAULT_FRAME_TIMEOUT,
        deadline: Optional[float] = None,
    ) -> Generator[Frame, None, None]:
        """Send a whole utterance and return an iterator over its frames.

        The audio is sent at once, in chunks of ``chunk_ms`` milliseconds of PCM (Ogg Opus bytes go as one
        chunk), the last with ``end=True``; the iterator then yields the request's frames as they arrive.
        It fits a streaming ``flask.Response`` (with ``response.call_on_close(frames.close)``) and Django's
        ``StreamingHttpResponse``: if the
        response is closed early, the request is abandoned and the service told to stop it.

        Raises:
            As :meth:`open_request` and :meth:`send_audio` (at the call), and as :meth:`AvatarRequest.frames`
            (from the iterator).
        """
        data = self._check_audio(audio, True)
        if isinstance(chunk_ms, bool) or not isinstance(chunk_ms, int) or chunk_ms <= 0:
            raise ValueError(f"chunk_ms: expected a positive number of milliseconds, got {chunk_ms!r}")
        request = self.open_request(frame_timeout=frame_timeout, deadline=deadline)
        try:
            if self._config.audio_format is AudioFormat.PCM_S16LE or self._encoder is not None:
                step = max(2, self._config.sample_rate * chunk_ms // 1000 * 2)
                for start in range(0, max(len(data), 1), step):
                    request.send(data[start : start + step], end=start + step >= len(data))
            else:
                request.send(data, end=True)
        except BaseException:
            request.close()
            raise
        return request.frames()

    def collect(
        self,
        audio: Union[bytes, bytearray, memoryview],
        *,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        frame_timeout: Optional[float] = DEFAULT_FRAME_TIMEOUT,
        deadline: Optional[float] = None,
    ) -> List[Frame]:
        """Send a whole utterance and return all its frames once the last has arrived (see :meth:`stream`)."""
        return list(self.stream(audio, chunk_ms=chunk_ms, frame_timeout=frame_timeout, deadline=deadline))

    def _send_for_request(self, req_id: str, audio: Union[bytes, bytearray, memoryview], end: bool) -> None:
        data = self._check_audio(audio, end)
        with self._send_lock:
            if req_id in self._cut:
                if self._current_req_id == req_id:
                    self._current_req_id = None
                raise self._cut_error(req_id, PHASE_WEBSOCKET_SEND)
            conn = self._sendable("send")
            if self._current_req_id != req_id:
                raise ValueError(
                    f"send(): request {req_id} is over (its end=True chunk was sent, or it was interrupted)"
                )
            encoded = self._send_chunk(conn, req_id, data, end)
        if encoded is not None:
            safe_call("on_encoded_audio", self._config.on_encoded_audio, req_id, encoded)

    def _encode_audio(self, req_id: str, data: bytes, end: bool) -> bytes:
        """The audio message for this session's ingress (called with the send lock held)."""
        if self._segments is None:
            return _protocol.encode_audio(req_id, data, end)
        self._segments.audio(req_id, len(data), end)  # before it is sent: its frames may follow at once
        return _protocol_v1.encode_audio(req_id, data, end)

    def _release_request(self, req_id: str, *, interrupt: bool) -> None:
        """A pull request is done or abandoned: stop routing to it; interrupt it if it is still running."""
        with self._lock:
            self._pulls.pop(req_id, None)
            if interrupt:
                self._in_flight.pop(req_id, None)
            started = self._state is _State.STARTED and self._process == process_generation()
        if not (interrupt and started) or self._v1:  # v1 has no interrupt
            return
        try:
            with self._send_lock:
                conn = self._sendable("interrupt")
                if self._last_req_id != req_id:
                    return  # a newer request followed: the service only takes the most recent id
                self._send(conn, _protocol.encode_interrupt(req_id), req_id)
                if self._current_req_id == req_id:
                    self._current_req_id = None
                    self._drop_request_audio()
            logger.debug("session #%d: abandoned request %s interrupted", self._number, req_id)
        except (AvatarSDKError, ValueError):
            logger.debug("session #%d: could not interrupt abandoned request %s", self._number, req_id)

    def interrupt(self) -> str:
        """Interrupt the most recent request (also after its ``end=True`` chunk); return its id.

        The next ``send_audio()`` starts a new request.

        Raises:
            ValueError: no audio was sent yet, the v1 ingress (it has no interrupt), or the session is not
                started or was closed by ``close()``.
            AvatarSDKError: the send failed, or the server ended the session.
        """
        return self._control("interrupt", _protocol.encode_interrupt, capability=None, ends_request=True)

    def pause(self) -> str:
        """Pause the avatar's playback of the most recent request; return its id.

        Audio keeps flowing while paused; the service answers with a playback state (``on_playback_state``,
        and the request's :meth:`~avatarsdk.AvatarRequest.events`).

        Raises:
            ValueError: the server did not declare ``playback_control`` (see :attr:`capabilities`), no audio was
                sent yet, or the session is not started or is closed.
            AvatarSDKError: the send failed, or the server ended the session.
        """
        return self._control("pause", _protocol.encode_pause, capability="playback_control")

    def resume(self) -> str:
        """Resume the avatar's playback of the most recent request; return its id (see :meth:`pause`)."""
        return self._control("resume", _protocol.encode_resume, capability="playback_control")

    def _control(
        self, op: str, encode: Callable[[str], bytes], *, capability: Optional[str], ends_request: bool = False
    ) -> str:
        """Send a control message naming the most recent request (``ends_request``: the next chunk starts a
        new one, decided under the same lock as the send, so no chunk of the old request can follow it)."""
        with self._send_lock:
            cut = self._last_req_id
            if cut is not None and cut in self._cut:  # the request is gone with the connection it ran on
                if not ends_request:
                    raise self._cut_error(cut, PHASE_WEBSOCKET_SEND)
                if self._current_req_id == cut:
                    self._current_req_id = None
                self._last_req_id = None
                logger.debug("session #%d: %s of request %s, cut off by a drop: nothing to send", self._number, op, cut)
                return cut
            conn = self._sendable(op)
            if self._v1:
                raise ValueError(f"{op}(): the v1 ingress has no {op}")
            if capability is not None and capability not in self._capabilities:
                declared = ", ".join(sorted(self._capabilities)) or "none"
                raise ValueError(f"{op}(): the server did not declare {capability!r} (it declared: {declared})")
            req_id = self._last_req_id
            if req_id is None:
                raise ValueError(f"{op}(): no request yet; send audio first")
            self._send(conn, encode(req_id), req_id)
            if ends_request:
                self._current_req_id = None
                self._drop_request_audio()
                if self._track:
                    with self._lock:
                        self._in_flight.pop(req_id, None)
        logger.debug("session #%d: %s req_id %s", self._number, op, req_id)
        return req_id

    def close(self) -> None:
        """End the session: close frame (1000), wait for the server's reply, stop and join the threads.

        Idempotent. Frames received before the end are still delivered, then ``on_close`` runs (once). From
        any other thread ``close()`` returns after ``on_close``; from inside a callback it returns at once and
        the dispatcher finishes when the callback returns. A user's ``close()`` is never reported to
        ``on_error``.
        """
        if self._process != process_generation():
            self._close_in_forked_child()
            return
        with self._lock:
            state = self._state
            if state in (_State.CLOSING, _State.CLOSED):
                first = False
            else:
                first = True
                self._user_closed = True
                self._state = _State.CLOSING
                self._state_changed.notify_all()
                self._token = None
            conn, reader, dispatcher, queue = self._conn, self._reader_thread, self._dispatcher, self._queue
            parked, self._parked = self._parked, None
        if parked is not None:  # never started: let the parked reader thread go
            parked.cancel()
            parked.thread.join(self._close_timeout)
        on_dispatcher = dispatcher is not None and dispatcher.is_current()
        if first and state in (_State.STARTING, _State.RECONNECTING):
            self._wake.set()  # cut a reconnect's backoff short
            if conn is not None:
                conn.shutdown()  # cut the handshake short: start() (or the reconnect) fails and finishes the close
        if not first or state in (_State.STARTING, _State.RECONNECTING):
            # Someone else is closing (or start() or the reconnect will finish the close): wait for the end, not
            # forever.
            if not on_dispatcher and threading.get_ident() != self._finisher:
                self._closed.wait(self._close_timeout)
                if state is _State.RECONNECTING and dispatcher is not None:
                    dispatcher.join(self._close_timeout)
                    self._warn_if_running(dispatcher.name, dispatcher.is_alive())
            return
        if state in (_State.NEW, _State.INITIALIZED):
            self._finish()
            return
        assert conn is not None and reader is not None and dispatcher is not None and queue is not None
        logger.debug("session #%d: closing", self._number)
        queue.release()
        if self._send_lock.acquire(timeout=-1 if self._close_timeout is None else self._close_timeout):
            try:
                if conn.end is None:
                    conn.send_close(CLOSE_NORMAL)
            finally:
                self._send_lock.release()
        reader.join(self._close_timeout)
        if reader.is_alive():
            logger.debug(
                "session #%d: no close reply within %ss; shutting the socket down", self._number, self._close_timeout
            )
            conn.shutdown()
            reader.join(self._close_timeout)
        if not on_dispatcher:
            dispatcher.join(self._close_timeout)
            for name, alive in ((reader.name, reader.is_alive()), (dispatcher.name, dispatcher.is_alive())):
                self._warn_if_running(name, alive)

    def _warn_if_running(self, name: str, alive: bool) -> None:
        """A thread of the session outlived ``close()``'s bounded wait (a callback or a call still blocking)."""
        if alive:
            logger.warning(
                "session #%d: thread %s still running %ss after close()", self._number, name, self._close_timeout
            )

    def _close_in_forked_child(self) -> None:
        """close() in a child of the process that made the session: release this process's copy of the socket
        without a close frame or a shutdown (either would end the parent's connection); no callbacks. No lock
        is taken: one held by a parent thread at the fork stays held forever in the child."""
        self._state = _State.CLOSED
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.release_copy()

    def __enter__(self) -> AvatarSession:
        try:
            if self._state is _State.NEW:
                self.init()
            if self._state is _State.INITIALIZED:
                self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    # -------------------------------------------------------------------------------------- helpers

    def _require(self, op: str, *allowed: _State) -> None:
        """Raise ValueError unless the state is one of ``allowed`` (called with the lock held)."""
        state = self._state
        if state in allowed:
            return
        if state in (_State.CLOSING, _State.CLOSED):
            raise ValueError(f"{op}(): the session is closed")
        if state in (_State.STARTING, _State.STARTED):
            raise ValueError(f"{op}(): the session is already started")
        raise ValueError(f"{op}(): call init() first")

    def _check_process(self, op: str) -> None:
        if self._process != process_generation():
            raise RuntimeError(
                f"{op}(): this session was created in process {self._pid}, before a fork; its connection and"
                " threads belong to that process: create a new session in this one"
            )

    def _sendable(self, op: str) -> Connection:
        """The connection, if a client message may be sent now (called with the send lock held)."""
        self._check_process(op)
        with self._lock:
            if self._state is _State.RECONNECTING:
                self._state_changed.wait_for(lambda: self._state is not _State.RECONNECTING, self._send_timeout)
            state, conn = self._state, self._conn
            user_closed, end_error = self._user_closed, self._end_error
        if state is _State.STARTED and conn is not None and conn.end is None:
            return conn
        if state is _State.RECONNECTING:
            raise AvatarSDKError(
                AvatarSDKErrorCode.connectionClosed,
                f"{op}(): the connection dropped and is not re-established yet (waited {self._send_timeout}s);"
                " try again",
                phase=PHASE_WEBSOCKET_SEND,
                connection_id=self._connection_id,
                retryable=True,
            )
        if state in (_State.NEW, _State.INITIALIZED, _State.STARTING):
            raise ValueError(f"{op}(): the session is not started; call start() first")
        if user_closed:
            raise ValueError(f"{op}(): the session is closed")
        # The server (or the network) ended the session.
        reason = end_error or self._end_from(conn.end if conn is not None else None)
        if reason is None:
            raise AvatarSDKError(
                AvatarSDKErrorCode.connectionClosed,
                f"{op}(): the session has ended",
                phase=PHASE_WEBSOCKET_SEND,
                connection_id=self._connection_id,
            )
        raise reason._derive(
            f"{op}(): the session has ended ({reason.message})",
            phase=PHASE_WEBSOCKET_SEND,
            connection_id=self._connection_id,
            req_id=None,
        )

    def _send(self, conn: Connection, data: bytes, req_id: str) -> None:
        try:
            conn.send(data, req_id=req_id)
        except AvatarSDKError as err:
            err.connection_id = self._connection_id
            ended = conn.end
            if ended is not None and ended.peer_closed:
                # The server closed first: report its reason, not the broken pipe.
                peer = self._end_from(ended)
                if peer is not None:
                    peer.req_id = req_id
                    peer.phase = PHASE_WEBSOCKET_SEND
                    raise peer from err
            with self._lock:
                if self._send_failure is None:
                    self._send_failure = err
            conn.shutdown()  # a failed send may have left half a frame: the connection cannot go on
            raise

    def _end_from(self, end: Optional[StreamEnd]) -> Optional[AvatarSDKError]:
        """The error a stream end stands for (``None`` for a server's normal close)."""
        if end is None:
            return None
        if end.peer_closed and end.close_code in (None, CLOSE_NORMAL):
            return None
        return closed_error(
            end.close_code,
            end.close_reason,
            phase=PHASE_WEBSOCKET_RUNTIME,
            during="the session",
            connection_id=self._connection_id,
            secrets=self._conn.secrets if self._conn is not None else (),
        )

    # ----------------------------------------------------------------- dispatcher-thread handlers

    def _on_frame(self, data: bytes) -> None:
        peeked = peek_animation(data)
        if peeked is not None:  # the hot path: an animation frame, read without protobuf objects
            self._deliver(data, peeked[0], peeked[1])
            return
        msg = _protocol.decode(data)
        if type(msg) is _protocol.Animation:  # an unusual encoding the fast path leaves to protobuf
            self._deliver(msg.data, msg.req_id, msg.end)
        elif type(msg) is _protocol.PlaybackStateMessage:
            state = PlaybackState.from_wire(msg.req_id, msg.state, msg.played_ms, msg.reason, msg.connection_id)
            safe_call("on_playback_state", self._config.on_playback_state, state)
            request = self._pulls.get(state.req_id)
            if request is not None:
                request._event(state)
        else:
            self._on_other(msg)

    def _on_frame_v1(self, data: bytes) -> None:
        msg = _protocol_v1.decode(data)
        if type(msg) is _protocol_v1.V1Animation:
            assert self._segments is not None
            req_id, last = self._segments.frame()
            self._deliver(msg.data, req_id, last)
        else:
            self._on_other(msg)  # type: ignore[arg-type]

    def _on_other(self, msg: _protocol.Decoded) -> None:
        """Messages other than animation frames and playback states (rare: not on the hot path)."""
        if type(msg) is _protocol.ServerErrorMessage:
            self._last_server_error_code = str(msg.code)
            error = server_error(
                msg,
                phase=PHASE_WEBSOCKET_RUNTIME,
                prefix="server error",
                connection_id=self._connection_id,
                secrets=self._conn.secrets if self._conn is not None else (),
            )
            logger.debug("session #%d: server error %s", self._number, msg.code)
            safe_call("on_error", self._config.on_error, error)
            request = self._pulls.get(msg.req_id)
            if request is not None:
                request._fail(error)
        elif type(msg) is _protocol.Malformed:
            self._report_protocol_error(f"received {msg.size} bytes that are not a valid message ({msg.reason})")
        elif type(msg) is _protocol.Unknown:
            logger.debug("session #%d: ignoring a message of unknown type %d", self._number, msg.type)
        else:
            logger.debug("session #%d: ignoring an unexpected %s", self._number, type(msg).__name__)

    def _deliver(self, data: bytes, req_id: str, last: bool) -> None:
        if last:
            if req_id in self._ended_req_ids:  # egress mode can repeat a request's end
                logger.debug("session #%d: repeated end of request %s ignored", self._number, req_id)
                return
            self._ended_req_ids.append(req_id)
            if self._track:
                with self._lock:
                    self._in_flight.pop(req_id, None)
        callback = self._config.transport_frames
        if callback is not None:
            try:
                callback(data, last)
            except Exception:
                logger.exception("transport_frames callback raised; the session carries on")
        if self._pulls:
            request = self._pulls.get(req_id)
            if request is not None:
                request._push(data, last)

    def _on_text(self, frame: TextFrame) -> None:
        self._report_protocol_error(f"received a text message ({frame.size} bytes); the protocol is binary")

    def _report_protocol_error(self, message: str) -> None:
        error = AvatarSDKError(
            AvatarSDKErrorCode.protocolError, message, phase=PHASE_WEBSOCKET_RUNTIME, connection_id=self._connection_id
        )
        safe_call("on_error", self._config.on_error, error)

    def _on_end(self, end: StreamEnd) -> Optional[FrameQueue[StreamEnd]]:
        """The connection ended (every frame before the end is delivered): report it, then close the session,
        or reconnect and return the new connection's queue."""
        conn, reader = self._conn, self._reader_thread
        assert conn is not None and reader is not None
        reader.join()  # it queued the end as its last act
        with self._lock:
            user_closed = self._user_closed
            send_failure = self._send_failure
        error: Optional[AvatarSDKError] = None
        if not user_closed:
            if end.fault is not None:
                end.fault.connection_id = self._connection_id
                error = end.fault
            elif end.peer_closed:
                error = self._end_from(end)
            else:
                error = send_failure or self._end_from(end)
        reported = (  # the server's error message of the same code came first, and was reported
            error is not None and error.close_code is not None and str(error.close_code) == self._last_server_error_code
        )
        cut: Tuple[str, ...] = ()
        with self._send_lock:
            conn.close()
            self._drop_request_audio()  # the encoder's stream, if a request was cut off
            with self._lock:
                reconnect = self._reconnect is not None and self._state is _State.STARTED
                reconnect = reconnect and error is not None and error.retryable
                if reconnect:
                    assert error is not None
                    self._state = _State.RECONNECTING
                    current = self._current_req_id
                    cut = tuple(self._in_flight) + ((current,) if current and current not in self._in_flight else ())
                    self._in_flight.clear()
                    self._cut = dict.fromkeys(cut, error)
                    if self._last_req_id not in self._cut:
                        self._last_req_id = None  # the new connection knows no request
                elif self._state is _State.STARTED:
                    self._state = _State.CLOSING
        if reconnect:
            assert error is not None
            return self._reconnect_after(error, cut, reported)
        if error is not None and reported:
            logger.debug(
                "session #%d: close %s follows the server error already reported", self._number, error.close_code
            )
            error = None
        elif error is None and not user_closed:
            logger.info("session #%d: closed by the server (code %s)", self._number, end.close_code)
        with self._lock:
            self._end_error = error or self._end_from(end)
        if error is not None:
            logger.debug("session #%d: ended by %r", self._number, error)
            safe_call("on_error", self._config.on_error, error)
        self._fail_pulls(error)
        self._finish()
        return None

    def _fail_pulls(self, cause: Optional[AvatarSDKError]) -> None:
        """The session ends: open pull requests' last frames will not come."""
        with self._lock:
            pulls = list(self._pulls.values())
        for request in pulls:
            request._fail(self._ended_error(request.req_id, cause))

    # ------------------------------------------------------------------------------------- reconnect

    def _cut_error(self, req_id: str, phase: str) -> AvatarSDKError:
        """The error of request ``req_id``, cut off by the drop ``self._cut[req_id]``."""
        cause = self._cut[req_id]
        return cause._derive(
            f"request {req_id} was cut off when the connection dropped ({cause.message}); its frames will not"
            " come: send its audio again",
            phase=phase,
            req_id=req_id,
            retryable=True,
        )

    def _reconnect_after(
        self, cause: AvatarSDKError, cut: Tuple[str, ...], reported: bool
    ) -> Optional[FrameQueue[StreamEnd]]:
        """On the dispatcher thread, after a drop worth retrying: fail the requests it cut off, then reconnect
        as the policy says. Return the new connection's queue, or ``None`` once the session is closed."""
        policy = self._reconnect
        assert policy is not None
        previous = self._connection_id
        logger.warning(
            "session #%d: connection %s dropped (%s); reconnecting", self._number, previous, cause.code.value
        )
        with self._lock:
            pulls = {req_id: self._pulls.get(req_id) for req_id in cut}
        for req_id, request in pulls.items():
            error = self._cut_error(req_id, PHASE_WEBSOCKET_RUNTIME)
            safe_call("on_error", self._config.on_error, error)
            if request is not None:
                request._fail(error)
        if not cut and not reported:
            safe_call("on_error", self._config.on_error, cause)

        def tell(
            state: ReconnectState,
            attempt: int,
            error: Optional[AvatarSDKError] = None,
            delay: float = 0.0,
            connection_id: Optional[str] = None,
        ) -> None:
            event = ReconnectEvent(state, attempt, cause, error, delay, connection_id, previous, cut)
            safe_call("on_reconnect", self._config.on_reconnect, event)

        began = time.monotonic()
        last: Optional[AvatarSDKError] = None
        attempt = 0
        while attempt < policy.max_attempts:
            delay = policy.delay(attempt + 1)
            if attempt and policy.deadline is not None and time.monotonic() - began + delay > policy.deadline:
                break
            attempt += 1
            tell(ReconnectState.reconnecting, attempt, error=last, delay=delay)
            if self._wake.wait(delay) or not self._reconnecting():
                break  # close()
            try:
                conn, connection_id, capabilities = self._connect(self._new_token(), _State.RECONNECTING)
            except AvatarSDKError as err:
                logger.info("session #%d: reconnect attempt %d failed: %s", self._number, attempt, err)
                last = err
                if not err.retryable or not self._reconnecting():
                    break
                continue
            except Exception as exc:
                if not self._reconnecting():
                    break  # close() cut the attempt short
                logger.exception("session #%d: reconnect attempt %d failed unexpectedly", self._number, attempt)
                last = AvatarSDKError(
                    AvatarSDKErrorCode.unknown,
                    f"reconnect attempt {attempt} failed: {type(exc).__name__}",
                    phase=PHASE_WEBSOCKET_RUNTIME,
                )
                break
            queue = self._resume(conn, connection_id, capabilities)
            if queue is None:
                break  # close() came first
            logger.info(
                "session #%d: reconnected after %d attempt%s (connection id %s)",
                self._number,
                attempt,
                "s" if attempt > 1 else "",
                connection_id,
            )
            tell(ReconnectState.reconnected, attempt, connection_id=connection_id)
            return queue
        with self._lock:
            closing = not self._reconnecting()
            if not closing:
                self._state = _State.CLOSING
                self._state_changed.notify_all()
        if not closing:  # the policy gave up
            final = self._gave_up(cause, last, attempt, time.monotonic() - began)
            with self._lock:
                self._end_error = final
            logger.warning("session #%d: %s", self._number, final.message)
            safe_call("on_error", self._config.on_error, final)
            tell(ReconnectState.failed, attempt, error=last)
            self._fail_pulls(final)
        else:
            self._fail_pulls(None)
        self._finish()
        return None

    def _reconnecting(self) -> bool:
        """Whether the reconnect goes on (``close()`` ends it)."""
        return self._state is _State.RECONNECTING

    def _request_token(self, retry: RetryPolicy) -> str:
        """A session token from the console, for ``init()`` and reconnects (ValueError: ``expire_at`` passed)."""
        config = self._config
        expire_at: datetime = check_expire_at(config.expire_at)
        if self._http is None:
            self._http = requests.Session()
        return request_session_token(
            config.console_endpoint_url,
            api_key=config.api_key,
            expire_at=expire_at,
            timeout=self._http_timeout,
            retry=retry,
            http=self._http,
            request_options=self._net.requests_kwargs(),
        )

    def _new_token(self) -> str:
        """A session token for a reconnect (the reconnect's own backoff stands in for the token call's retries)."""
        try:
            return self._request_token(NO_RETRIES)
        except ValueError:
            raise AvatarSDKError(
                AvatarSDKErrorCode.sessionTokenExpired,
                "cannot reconnect: the session's expire_at has passed",
                phase=PHASE_SESSION_TOKEN,
            ) from None

    def _resume(
        self, conn: Connection, connection_id: str, capabilities: Tuple[str, ...]
    ) -> Optional[FrameQueue[StreamEnd]]:
        """Make the reconnected ``conn`` the session's and start its reader; ``None`` if ``close()`` came first."""
        assert self._dispatcher is not None
        queue = self._dispatcher.new_queue(self._max_queued)
        with self._lock:
            closing = self._state is not _State.RECONNECTING
            if not closing:
                parked = ParkedThread(f"avatarsdk-reader-{self._number}")
                self._conn, self._queue, self._reader_thread = conn, queue, parked.thread
                self._connection_id = connection_id
                self._capabilities = frozenset(capabilities)
                self._send_failure = None
                self._last_server_error_code = None
                if self._segments is not None:
                    self._segments = _protocol_v1.SegmentCounter()
                self._state = _State.STARTED
                self._state_changed.notify_all()
                parked.run(Reader(conn, queue, self._dispatcher).run)
        if closing:
            conn.send_close(CLOSE_NORMAL)
            conn.close()
            return None
        return queue

    def _gave_up(
        self, cause: AvatarSDKError, last: Optional[AvatarSDKError], attempts: int, elapsed: float
    ) -> AvatarSDKError:
        """The error that ends a session whose reconnect failed: the last attempt's (or the drop's)."""
        why = last or cause
        return why._derive(
            f"reconnect failed after {attempts} attempt{'s' if attempts != 1 else ''} in {elapsed:.1f}s"
            f" (connection dropped: {cause.message}; last attempt: {why.message})",
            connection_id=self._connection_id,
            req_id=None,
        )

    def _ended_error(self, req_id: str, cause: Optional[AvatarSDKError]) -> AvatarSDKError:
        """What an open pull request raises when the session ends before its last frame."""
        message = f"the session ended before the last frame of request {req_id}"
        if cause is None:
            return AvatarSDKError(
                AvatarSDKErrorCode.connectionClosed,
                message,
                phase=PHASE_WEBSOCKET_RUNTIME,
                req_id=req_id,
                connection_id=self._connection_id,
            )
        return cause._derive(f"{message}: {cause.message}", req_id=req_id, connection_id=self._connection_id)

    def _finish(self) -> None:
        """Enter CLOSED and run ``on_close``, exactly once."""
        with self._lock:
            self._state = _State.CLOSED
            self._state_changed.notify_all()
            self._token = None
            http, self._http = self._http, None
            first = not self._on_close_called
            self._on_close_called = True
            if first:
                self._finisher = threading.get_ident()
        if http is not None:
            http.close()
        if first:
            logger.debug("session #%d: closed", self._number)
            safe_call("on_close", self._config.on_close)
            self._closed.set()


def _check_v1(config: SessionConfig) -> None:
    """What the v1 ingress cannot do, refused before any I/O."""
    if config.audio_format is not AudioFormat.PCM_S16LE or config.sample_rate != _protocol_v1.V1_SAMPLE_RATE:
        raise ValueError(
            "ingress_endpoint_url: the v1 ingress takes only 16 kHz PCM (sample_rate=16000, audio_format=PCM_S16LE)"
        )
    if config.use_query_auth:
        raise ValueError("use_query_auth: the v1 ingress takes its credentials in headers only")
    if config.livekit_egress is not None or config.agora_egress is not None:
        raise ValueError("livekit_egress/agora_egress: the v1 ingress has no egress configuration")


def _copy_config(config: SessionConfig) -> SessionConfig:
    """A copy the caller's later changes cannot reach (callbacks are shared, not copied)."""
    livekit = copy.copy(config.livekit_egress)
    if livekit is not None:
        livekit.extra_attributes = dict(livekit.extra_attributes)
    return dataclasses.replace(config, livekit_egress=livekit, agora_egress=copy.copy(config.agora_egress))


def _secrets(config: SessionConfig, token: str) -> Tuple[str, ...]:
    """Every credential of a session, to be removed from texts the service sends back."""
    values = [token, config.api_key]
    if config.livekit_egress is not None:
        values += [config.livekit_egress.api_token, config.livekit_egress.api_secret, config.livekit_egress.api_key]
    if config.agora_egress is not None:
        values.append(config.agora_egress.token)
    return tuple(v for v in values if v)


def new_avatar_session(
    *,
    avatar_id: str,
    api_key: str,
    app_id: str,
    expire_at: datetime,
    console_endpoint_url: str,
    ingress_endpoint_url: str,
    use_query_auth: bool = False,
    sample_rate: int = 16000,
    bitrate: int = 0,
    audio_format: Union[AudioFormat, str] = AudioFormat.PCM_S16LE,
    transport_frames: Optional[TransportFramesCallback] = None,
    on_error: Optional[ErrorCallback] = None,
    on_close: Optional[CloseCallback] = None,
    on_playback_state: Optional[PlaybackStateCallback] = None,
    ogg_opus_encoder: Optional[OggOpusEncoderConfig] = None,
    on_encoded_audio: Optional[EncodedAudioCallback] = None,
    on_reconnect: Optional[ReconnectCallback] = None,
    livekit_egress: Optional[LiveKitEgressConfig] = None,
    agora_egress: Optional[AgoraEgressConfig] = None,
    http_timeout: HttpTimeout = DEFAULT_HTTP_TIMEOUT,
    connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
    handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
    send_timeout: Optional[float] = DEFAULT_SEND_TIMEOUT,
    close_timeout: Optional[float] = DEFAULT_CLOSE_TIMEOUT,
    max_queued_frames: int = DEFAULT_MAX_QUEUED,
    max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
    ping_interval: Optional[float] = DEFAULT_PING_INTERVAL,
    ping_timeout: Optional[float] = DEFAULT_PING_TIMEOUT,
    http_retries: int = DEFAULT_HTTP_RETRIES,
    http_retry_deadline: Optional[float] = DEFAULT_HTTP_RETRY_DEADLINE,
    verify_tls: bool = True,
    ca_bundle: Optional[str] = None,
    client_cert: Optional[ClientCert] = None,
    proxy: Optional[str] = None,
    reconnect: Union[bool, ReconnectPolicy, None] = None,
    dispatcher: Optional[SharedDispatcher] = None,
) -> AvatarSession:
    """Create an :class:`AvatarSession` from keyword arguments (the fields of :class:`SessionConfig` and the
    session's timeouts). Unknown keywords raise ``TypeError``; invalid values raise ``ValueError``/``TypeError``
    naming the field. Nothing is sent until ``init()``.

    Example::

        with new_avatar_session(
            avatar_id="...", api_key="...", app_id="...",
            expire_at=datetime.now(timezone.utc) + timedelta(hours=1),
            console_endpoint_url="https://console.example", ingress_endpoint_url="https://api.example/v2/driveningress",
            transport_frames=lambda frame, last: forward(frame, last),
        ) as session:
            session.send_audio(pcm, end=True)
    """
    config = SessionConfig(
        avatar_id=avatar_id,
        api_key=api_key,
        app_id=app_id,
        use_query_auth=use_query_auth,
        expire_at=expire_at,
        sample_rate=sample_rate,
        bitrate=bitrate,
        audio_format=audio_format,  # type: ignore[arg-type]  # coerced by SessionConfig
        transport_frames=transport_frames,
        on_error=on_error,
        on_close=on_close,
        on_playback_state=on_playback_state,
        ogg_opus_encoder=ogg_opus_encoder,
        on_encoded_audio=on_encoded_audio,
        on_reconnect=on_reconnect,
        console_endpoint_url=console_endpoint_url,
        ingress_endpoint_url=ingress_endpoint_url,
        livekit_egress=livekit_egress,
        agora_egress=agora_egress,
    )
    return AvatarSession(
        config,
        http_timeout=http_timeout,
        connect_timeout=connect_timeout,
        handshake_timeout=handshake_timeout,
        send_timeout=send_timeout,
        close_timeout=close_timeout,
        max_queued_frames=max_queued_frames,
        max_message_size=max_message_size,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        http_retries=http_retries,
        http_retry_deadline=http_retry_deadline,
        verify_tls=verify_tls,
        ca_bundle=ca_bundle,
        client_cert=client_cert,
        proxy=proxy,
        reconnect=reconnect,
        dispatcher=dispatcher,
    )
