"""The blocking avatar session: ``init()`` → ``start()`` → ``send_audio()`` … → ``close()``.

:class:`AvatarSession` is the public face; its parts live in private modules (docs/ARCHITECTURE.md has the
map): the shared state and lifecycle (``_core``, ``_lifecycle``), the send path (``_sender``), the dispatcher's
handlers (``_receiver``), connecting (``_connector``), the end of a connection and reconnects
(``_reconnector``), the request bookkeeping (``_ledger``) and the ingress generation (``_ingress``).
"""

from __future__ import annotations

import itertools
import logging
import weakref
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, FrozenSet, Generator, List, Mapping, Optional, Type, Union

from . import _protocol
from ._closer import close_session
from ._config_checks import check_config, copy_config
from ._connection import StreamEnd
from ._connector import Connector
from ._core import Core
from ._dispatch import Dispatcher, new_dispatcher
from ._ingress import ingress_for
from ._lifecycle import State
from ._network import warn_insecure_transport
from ._options import Options, SessionOptions
from ._queue import Backlog
from ._reader import ParkedThread
from ._receiver import Receiver
from ._reconnector import Reconnector
from ._sender import Audio, Sender, SenderChannel
from ._validation import check_timeout
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
from .tracing import TraceContext

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AvatarSession", "new_avatar_session"]

logger = logging.getLogger(__name__)

DEFAULT_FRAME_TIMEOUT = 10.0
DEFAULT_CHUNK_MS = 100

_session_numbers = itertools.count(1)


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

    The service bills a session from its confirmation (``start()``) to its disconnect (``close()``, or the end
    the server or the network makes), and counts it against the plan's concurrent sessions meanwhile: close
    sessions you no longer use.

    Thread-safety: every method may be called from any thread, including from inside callbacks.

    Args:
        config: The session configuration (copied; later changes to it have no effect).
        options: Timeouts, limits, network settings, reconnect, dispatcher and limiter: the keywords of
            :class:`~avatarsdk.SessionOptions`, each documented there with its default.

    Every timeout may be ``None`` for no limit. Credentials that would travel unencrypted to another host, or in
    a URL query, raise an ``InsecureTransportWarning`` when the session is created. The process's first session
    of a trust configuration also builds its TLS contexts here (loading the CA bundle: tens of milliseconds of
    CPU, once per process), so that no join pays for it.

    Raises:
        TypeError, ValueError: a field of ``config`` or an option is invalid, or ``ca_bundle``/``client_cert``
            would not load (the message names it).
    """

    def __init__(self, config: SessionConfig, **options: Unpack[SessionOptions]) -> None:
        self._setup(config, Options.checked(options), warn=True)

    @classmethod
    def _create(cls, config: SessionConfig, options: Options) -> AvatarSession:
        """A session with options already checked (a pool's: it warned about them once, when it was made)."""
        session = cls.__new__(cls)
        session._setup(config, options, warn=False)
        return session

    def _setup(self, config: SessionConfig, options: Options, *, warn: bool) -> None:
        check_config(config)
        config = copy_config(config)
        ingress = ingress_for(config, warn=warn)
        if warn:
            warn_insecure_transport(
                config.console_endpoint_url, config.ingress_endpoint_url, use_query_auth=config.use_query_auth
            )
            options.network.prepare_tls(config.console_endpoint_url or None, config.ingress_endpoint_url or None)
        core = self._core = Core(next(_session_numbers), config, options, ingress)
        self._sender = Sender(core)
        self._receiver = Receiver(core)
        self._connector = Connector(core)
        core.on_finish = self._connector.close
        weakref.finalize(self, self._connector.ahead.discard)  # a connection opened ahead, never taken
        if options.limiter is not None:
            weakref.finalize(self, core.drop_unused_slot)
        self._reconnector = Reconnector(core, self._sender, self._receiver, self._connector)
        self._channel = SenderChannel(core, self._sender)

    # ------------------------------------------------------------------------------------------ info

    @property
    def config(self) -> SessionConfig:
        """The session's configuration."""
        return self._core.config

    @property
    def connection_id(self) -> Optional[str]:
        """The connection id the server confirmed in ``start()`` (``None`` before)."""
        return self._core.connection_id

    @property
    def current_req_id(self) -> Optional[str]:
        """The request whose ``end=True`` chunk has not been sent yet (``None`` between requests)."""
        return self._core.ledger.current

    @property
    def capabilities(self) -> FrozenSet[str]:
        """What the server declared in its confirmation (the service's newer generation), e.g.
        ``{"playback_control", "playback_state"}``; empty before ``start()`` and for older servers."""
        return self._core.capabilities

    @property
    def protocol_version(self) -> int:
        """2, or 1 for the deprecated v1 ingress (chosen from ``ingress_endpoint_url``'s path)."""
        return self._core.ingress.version

    @property
    def closed(self) -> bool:
        """``True`` once the session has ended (by ``close()`` or by the server) and ``on_close`` has run."""
        return self._core.closed.is_set()

    @property
    def backlog(self) -> Backlog:
        """Received messages waiting for the callbacks, and their bytes (bounded by ``max_queued_frames`` and
        ``max_queued_bytes``): how far the callbacks are behind the stream."""
        queue = self._core.queue
        return Backlog(0, 0) if queue is None else queue.backlog()

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<AvatarSession #{core.number} avatar_id={core.config.avatar_id!r} state={core.state.value}"
            f" connection_id={core.connection_id!r}>"
        )

    # ------------------------------------------------------------------------------------- lifecycle

    def init(self) -> None:
        """Get a session token from the console API (``POST /session-tokens``), after a slot of ``limiter``; with
        ``region="auto"``, ask the bootstrap service for the region first (at the first ``init()``).

        May be called again before ``start()`` to replace the token. It also starts the session's reader
        thread, parked until ``start()`` gives it the connection. Nothing is billed yet.

        Raises:
            SessionTokenError: the token call failed (``code``, ``http_status``, ``server_*`` say why), or no slot
                of ``limiter`` came within ``limiter_timeout`` (``concurrencyLimit``, retryable).
            ValueError: the session is started or closed, or ``expire_at`` has passed.
        """
        core = self._core
        core.check_process("init")
        with core.lock:
            core.lifecycle.require("init", State.NEW, State.INITIALIZED)
        token = core.slot.around("init", lambda: self._connector.token(core.options.token_retry))
        with core.lock:
            if core.state in (State.NEW, State.INITIALIZED):
                core.token = token
                core.move(State.INITIALIZED)
                if core.parked is None:
                    # Start the reader's thread now, parked: start() then hands it the connection instead of
                    # paying for a thread start. A session dropped without close() lets it go.
                    core.parked = ParkedThread(f"avatarsdk-reader-{core.number}")
                    weakref.finalize(self, core.parked.cancel)
        logger.debug("session #%d: token obtained", core.number)

    def start(self) -> str:
        """Open the WebSocket, complete the handshake and start receiving; return the connection id.

        Raises:
            AvatarSDKError: the upgrade was rejected (phase ``websocket_connect``, with ``http_status`` and
                ``raw_body``), or the handshake failed (phase ``websocket_handshake``).
            ValueError: ``init()`` has not run, or the session is started or closed.
        """
        core = self._core
        core.check_process("start")
        with core.lock:
            core.lifecycle.require("start", State.INITIALIZED)
            core.move(State.STARTING)
            token = core.token
        assert token is not None
        try:
            core.slot.take("start")  # held since init(), unless a start failed since
            conn, confirmed = self._connector.connect(token, State.STARTING)
        except BaseException as exc:
            if self._start_failed():
                raise ValueError("start(): the session was closed while starting") from exc
            raise
        dispatcher: Dispatcher[StreamEnd] = new_dispatcher(
            core.options.dispatcher,
            limits=(core.options.max_queued_frames, core.options.max_queued_bytes),
            on_frame=self._receiver.on_frame,
            on_text=self._receiver.on_text,
            on_end=self._reconnector.on_end,
            name=f"avatarsdk-dispatch-{core.number}",
        )
        if not core.adopt(conn, dispatcher.queue, confirmed, expected=State.STARTING, dispatcher=dispatcher):
            self._start_failed()  # close() ran while we were connecting
            raise ValueError("start(): the session was closed while starting")
        logger.debug("session #%d: started (connection id %s)", core.number, confirmed[0])
        return confirmed[0]

    def _start_failed(self) -> bool:
        """start() failed: back to INITIALIZED (init() again for a new token), or, if close() came meanwhile,
        finish the session and return ``True``."""
        core = self._core
        core.slot.give_back()  # no connection now
        with core.lock:
            core.conn = None
            closing = core.state is not State.STARTING
            if not closing:
                core.move(State.INITIALIZED)
        if closing:
            core.finish()
        return closing

    # ------------------------------------------------------------------------------------- sending

    def send_audio(self, audio: Audio, end: bool = False, *, trace_context: Optional[TraceContext] = None) -> str:
        """Send one chunk of the current request's audio; return its request id.

        The first chunk after ``start()``, after an ``end=True`` chunk or after ``interrupt()`` starts a new
        request (a new id); every chunk until the one with ``end=True`` carries the same id.

        Args:
            audio: PCM s16le mono at ``config.sample_rate`` (or Ogg Opus bytes for ``OGG_OPUS`` sessions).
            end: ``True`` on the request's last chunk (it may be empty).
            trace_context: A W3C :class:`~avatarsdk.TraceContext` for the request, on its first chunk only.

        Raises:
            TypeError, ValueError: bad audio (not bytes, odd length, or a whole WAV file: use
                :func:`avatarsdk.load_audio`), a ``trace_context`` on a later chunk or on a v1 session, or the
                session is not started or was closed by ``close()``.
            AvatarSDKError: the send failed, or the server ended the session (phase ``websocket_send``); a send
                that waited longer than ``send_timeout`` in all (for a reconnect, for other senders, for a server
                that is not reading) fails with a retryable error.

        Thread-safety: safe from any thread; chunks go out whole, in the order the calls took the session.
        """
        return self._sender.send_audio("send_audio", audio, end, trace_context=trace_context)

    def open_request(
        self,
        *,
        frame_timeout: Optional[float] = DEFAULT_FRAME_TIMEOUT,
        deadline: Optional[float] = None,
        trace_context: Optional[TraceContext] = None,
    ) -> AvatarRequest:
        """Start a request whose frames you iterate (pull style); send its audio with ``request.send()``.

        The request's id is reserved and its frames are subscribed to before any audio is sent, so none can
        be missed. Iterating yields :class:`~avatarsdk.Frame` objects and ends after the last frame.

        Args:
            frame_timeout: Seconds to wait for each frame (``None``: no limit).
            deadline: Seconds from now until the last frame (``None``: no limit).
            trace_context: A W3C :class:`~avatarsdk.TraceContext`, carried by the request's first chunk.

        Raises:
            ValueError: the session is not started or is closed, or another request is still open (its
                ``end=True`` chunk not sent yet).

        Thread-safety: safe from any thread; a session carries one open request at a time.
        """
        check_timeout("frame_timeout", frame_timeout)
        check_timeout("deadline", deadline)
        inbox = self._sender.open("open_request", trace_context)
        return AvatarRequest(self._channel, inbox, frame_timeout=frame_timeout, deadline=deadline)

    def stream(
        self,
        audio: Audio,
        *,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        frame_timeout: Optional[float] = DEFAULT_FRAME_TIMEOUT,
        deadline: Optional[float] = None,
        trace_context: Optional[TraceContext] = None,
    ) -> Generator[Frame, None, None]:
        """Send a whole utterance and return an iterator over its frames.

        The audio is sent at once, in chunks of ``chunk_ms`` milliseconds of PCM (Ogg Opus bytes go as one
        chunk), the last with ``end=True``; the iterator then yields the request's frames as they arrive.
        It fits a streaming ``flask.Response`` (with ``response.call_on_close(frames.close)``) and Django's
        ``StreamingHttpResponse``: if the response is closed early, the request is abandoned and the service
        told to stop it.

        Errors are those of :meth:`open_request` and :meth:`send_audio` (raised by the call), and of
        :meth:`AvatarRequest.frames` (raised by the iterator).
        """
        data = self._sender.audio.check(audio, True)
        if isinstance(chunk_ms, bool) or not isinstance(chunk_ms, int) or chunk_ms <= 0:
            raise ValueError(f"chunk_ms: expected a positive number of milliseconds, got {chunk_ms!r}")
        request = self.open_request(frame_timeout=frame_timeout, deadline=deadline, trace_context=trace_context)
        try:
            if self._sender.audio.takes_pcm:
                step = max(2, self._core.config.sample_rate * chunk_ms // 1000 * 2)
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
        audio: Audio,
        *,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        frame_timeout: Optional[float] = DEFAULT_FRAME_TIMEOUT,
        deadline: Optional[float] = None,
        trace_context: Optional[TraceContext] = None,
    ) -> List[Frame]:
        """Send a whole utterance and return all its frames once the last has arrived (see :meth:`stream`)."""
        frames = self.stream(
            audio, chunk_ms=chunk_ms, frame_timeout=frame_timeout, deadline=deadline, trace_context=trace_context
        )
        return list(frames)

    def interrupt(self) -> str:
        """Interrupt the most recent request (also after its ``end=True`` chunk); return its id.

        The next ``send_audio()`` starts a new request.

        Raises:
            ValueError: no audio was sent yet, the v1 ingress (it has no interrupt), or the session is not
                started or was closed by ``close()``.
            AvatarSDKError: the send failed, or the server ended the session.
        """
        return self._sender.control("interrupt", _protocol.encode_interrupt, None, ends_request=True)

    def pause(self) -> str:
        """Pause the avatar's playback of the most recent request; return its id.

        Audio keeps flowing while paused; the service answers with a playback state (``on_playback_state``,
        and the request's :meth:`~avatarsdk.AvatarRequest.events`).

        Raises:
            ValueError: the server did not declare ``playback_control`` (see :attr:`capabilities`), no audio was
                sent yet, or the session is not started or is closed.
            AvatarSDKError: the send failed, or the server ended the session.
        """
        return self._sender.control("pause", _protocol.encode_pause, "playback_control", ends_request=False)

    def resume(self) -> str:
        """Resume the avatar's playback of the most recent request; return its id (see :meth:`pause`)."""
        return self._sender.control("resume", _protocol.encode_resume, "playback_control", ends_request=False)

    # ------------------------------------------------------------------------------------- closing

    def close(self) -> None:
        """End the session: close frame (1000), wait for the server's reply, stop and join the threads.

        Idempotent, and bounded: it returns within ``close_timeout`` (and a fraction of a second), whatever
        other threads are doing; a send blocked at that moment (a server that stopped reading) is cut and
        raises. Frames received before the end are still delivered, then ``on_close`` runs (once). From any
        other thread ``close()`` returns after ``on_close``; from inside a callback it returns at once and the
        dispatcher finishes when the callback returns. A user's ``close()`` is never reported to ``on_error``.
        """
        close_session(self._core, self._sender.lock)

    def __enter__(self) -> AvatarSession:
        try:
            if self._core.state is State.NEW:
                self.init()
            if self._core.state is State.INITIALIZED:
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


def new_avatar_session(
    *,
    avatar_id: str,
    api_key: str,
    app_id: str,
    expire_at: Optional[datetime] = None,
    console_endpoint_url: str = "",
    ingress_endpoint_url: str = "",
    region: Optional[str] = None,
    token_route: Optional[str] = None,
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
    extra_params: Optional[Mapping[str, str]] = None,
    **options: Unpack[SessionOptions],
) -> AvatarSession:
    """Create an :class:`AvatarSession` from keyword arguments: the fields of :class:`SessionConfig`, and the
    session's options (:class:`~avatarsdk.SessionOptions`: timeouts, limits, network, reconnect, dispatcher).
    Unknown keywords raise ``TypeError``; invalid values raise ``ValueError``/``TypeError`` naming the field.
    Nothing is sent until ``init()``. Give the two URLs, or a ``region`` (see :data:`avatarsdk.REGIONS`).

    Example::

        with new_avatar_session(
            avatar_id="...", api_key="...", app_id="...", region="us-west",
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
        extra_params={} if extra_params is None else extra_params,
        region=region,
        token_route=token_route,
    )
    return AvatarSession(config, **options)
