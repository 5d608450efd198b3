"""A session's send path: every client message after the handshake (audio, interrupt, pause, resume) goes out
through one method, :meth:`Sender._take`, under the send lock and within the call's one deadline.

The send lock keeps client messages in wire order and guards the request cursor (``_ledger``). A call waits
for a reconnect *without* the lock, so callers waiting together each wait at most their own ``send_timeout``.
:class:`AudioOut` is what a request's audio becomes on the wire (as given, or PCM encoded to Ogg Opus).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, List, Optional, Tuple, TypeVar, Union

from . import _opus, _protocol
from ._config_checks import check_audio
from ._connection import Connection
from ._core import Core
from ._deadline import Deadline
from ._dispatch import safe_call
from ._lifecycle import State
from ._otel import ABANDONED, INTERRUPTED
from .errors import PHASE_WEBSOCKET_SEND, AvatarSDKError, AvatarSDKErrorCode
from .logid import generate_log_id
from .request import RequestInbox
from .session_config import AudioFormat, SessionConfig
from .tracing import TraceContext

logger = logging.getLogger(__name__)

T = TypeVar("T")
Audio = Union[bytes, bytearray, memoryview]


class AudioOut:
    """A request's audio on its way to the wire: checked, and encoded to Ogg Opus when the session asks for it
    (``ogg_opus_encoder``; PyAV missing fails when the session is made, before any I/O)."""

    __slots__ = ("_encoder", "_format", "_parts")

    def __init__(self, config: SessionConfig) -> None:
        self._format = config.audio_format
        encoder = config.ogg_opus_encoder
        self._encoder = (
            _opus.OggOpusStreamEncoder(
                sample_rate=config.sample_rate,
                bitrate=config.bitrate,
                frame_duration_ms=encoder.frame_duration_ms,
                application=encoder.application,
            )
            if encoder is not None
            else None
        )
        self._parts: Optional[List[bytes]] = [] if config.on_encoded_audio is not None else None

    @property
    def takes_pcm(self) -> bool:
        """Whether ``send_audio()`` takes PCM (PCM sessions, and Ogg Opus sessions with the SDK's encoder)."""
        return self._format is AudioFormat.PCM_S16LE or self._encoder is not None

    def check(self, audio: Audio, end: bool) -> bytes:
        """One chunk as bytes (``TypeError``/``ValueError`` naming the field)."""
        if not isinstance(end, bool):
            raise TypeError(f"end: expected a bool, got {type(end).__name__}")
        return check_audio(audio, self._format, pcm=self._encoder is not None)

    def payload(self, data: bytes, end: bool, first: bool) -> Optional[bytes]:
        """What to send for one chunk (``None``: less than an Opus frame so far, nothing to send yet)."""
        if self._encoder is None:
            if first and self._format is AudioFormat.OGG_OPUS and data and data[:4] != b"OggS":
                raise ValueError(
                    "audio: expected an Ogg Opus stream starting with its first page ('OggS'); to send PCM in an"
                    " OGG_OPUS session, set ogg_opus_encoder"
                )
            return data
        payload = self._encoder.encode(data, end=end)
        if self._parts is not None and payload:
            self._parts.append(payload)
        return payload if payload or end else None

    def finished(self) -> Optional[bytes]:
        """After a request's last chunk: its whole encoded stream, if ``on_encoded_audio`` wants it."""
        if self._parts is None:
            return None
        stream, self._parts = b"".join(self._parts), []
        return stream

    def drop(self) -> None:
        """The request ends without its last chunk (interrupt, drop): its encoded stream is abandoned."""
        if self._encoder is not None:
            self._encoder.reset()
            if self._parts is not None:
                self._parts = []


class Sender:
    """The send path of one session (see the module documentation). Thread-safety: every method may be called
    from any thread; messages go out whole, in the order the calls took the send lock."""

    __slots__ = ("_core", "_trace", "audio", "lock")

    def __init__(self, core: Core) -> None:
        self._core = core
        self.lock = threading.Lock()  # wire order of client messages, and the request cursor
        self.audio = AudioOut(core.config)
        # (req_id, trace context) for the first chunk of that request that goes out (send lock held)
        self._trace: Optional[Tuple[str, TraceContext]] = None

    # ------------------------------------------------------------------------------ operations

    def send_audio(
        self,
        op: str,
        audio: Audio,
        end: bool,
        req_id: Optional[str] = None,
        trace_context: Optional[TraceContext] = None,
    ) -> str:
        """Send one chunk of the current request (``req_id``: of that pull request); return its id.
        ``trace_context`` goes with the request's first chunk (``ValueError`` on a later one)."""
        data = self.audio.check(audio, end)
        self._check_trace(op, trace_context)
        ledger = self._core.ledger
        deadline = Deadline(self._core.options.send_timeout)
        conn, _ = self._take(op, deadline, lambda: ledger.check_cut(req_id, PHASE_WEBSOCKET_SEND))
        try:
            target = ledger.chunk_target(req_id, op)
            first = not ledger.has_audio
            if trace_context is not None:
                if not first:
                    raise ValueError(
                        f"trace_context: only a request's first chunk carries one; request {target} has sent audio"
                    )
                self._trace = (target, trace_context)
            if first and self._core.telemetry is not None:
                self._begin(target, trace_context)
            payload = self.audio.payload(data, end, first)
            encoded = None
            if payload is not None:
                trace = self._first_trace(target) if first else None
                self._transmit(conn, self._core.ingress.encode_audio(target, payload, end, trace), target, deadline)
                ledger.chunk_sent(target, end)
                if self._core.telemetry is not None:
                    self._core.telemetry.sent(target, len(payload))
                encoded = self.audio.finished() if end else None
        finally:
            self.lock.release()
        logger.debug("session #%d: sent %d audio bytes (req_id %s, end=%s)", self._core.number, len(data), target, end)
        if encoded is not None:
            safe_call("on_encoded_audio", self._core.config.on_encoded_audio, target, encoded)
        return target

    def control(self, op: str, encode: Callable[[str], bytes], capability: Optional[str], ends_request: bool) -> str:
        """Send a control message naming the most recent request (``ends_request``: the next chunk starts a new
        one, decided under the send lock, so no chunk of the old request can follow it); return its id."""
        core, ledger = self._core, self._core.ledger
        deadline = Deadline(core.options.send_timeout)
        conn, cut = self._take(
            op, deadline, lambda: ledger.cut_off_control(ends_request=ends_request, phase=PHASE_WEBSOCKET_SEND)
        )
        try:
            if cut is not None:
                logger.debug("session #%d: %s of request %s, cut off by a drop: nothing to send", core.number, op, cut)
                return cut
            req_id = self._control_target(op, capability)
            self._transmit(conn, encode(req_id), req_id, deadline)
            if ends_request:
                self._ended_here(req_id)
        finally:
            self.lock.release()
        if ends_request and core.telemetry is not None:
            core.telemetry.failed(req_id, INTERRUPTED)
        logger.debug("session #%d: %s req_id %s", core.number, op, req_id)
        return req_id

    def _control_target(self, op: str, capability: Optional[str]) -> str:
        core = self._core
        if not core.ingress.controls:
            raise ValueError(f"{op}(): the v1 ingress has no {op}")
        if capability is not None and capability not in core.capabilities:
            declared = ", ".join(sorted(core.capabilities)) or "none"
            raise ValueError(f"{op}(): the server did not declare {capability!r} (it declared: {declared})")
        req_id = core.ledger.last
        if req_id is None:
            raise ValueError(f"{op}(): no request yet; send audio first")
        return req_id

    def open(self, op: str, trace_context: Optional[TraceContext] = None) -> RequestInbox:
        """Reserve a new request (a pull request's); return the inbox its frames go to. ``trace_context`` goes
        with the request's first chunk."""
        self._check_trace(op, trace_context)
        self._take(op, Deadline(self._core.options.send_timeout), lambda: None)
        try:
            inbox = RequestInbox(generate_log_id())
            self._core.ledger.open(op, inbox.req_id, inbox)
            if trace_context is not None:
                self._trace = (inbox.req_id, trace_context)
            if self._core.telemetry is not None:
                self._begin(inbox.req_id, trace_context)
        finally:
            self.lock.release()
        return inbox

    def _check_trace(self, op: str, trace_context: Optional[TraceContext]) -> None:
        if trace_context is None:
            return
        if not isinstance(trace_context, TraceContext):
            raise TypeError(f"trace_context: expected a TraceContext, got {type(trace_context).__name__}")
        if not self._core.ingress.traces:
            raise ValueError(f"{op}(): trace_context: the v1 ingress has no trace context")

    def _begin(self, req_id: str, trace_context: Optional[TraceContext]) -> None:
        """Request ``req_id`` starts (send lock held): its span starts, and the trace context it gives waits for the
        request's first chunk (an explicit ``trace_context`` wins)."""
        telemetry = self._core.telemetry
        assert telemetry is not None
        traced = telemetry.begin(req_id, self._core.connection_id, explicit=trace_context is not None)
        if traced is not None:
            self._trace = (req_id, traced)

    def _first_trace(self, req_id: str) -> Optional[TraceContext]:
        """The trace context waiting for request ``req_id``'s first chunk, taken (send lock held)."""
        waiting, self._trace = self._trace, None
        return waiting[1] if waiting is not None and waiting[0] == req_id else None

    def abandon(self, req_id: str) -> None:
        """A pull request left before its last frame: tell the service to stop it, if it is still the most
        recent request (the service takes no other) and the session can send. Never raises."""
        core = self._core
        if core.forked():
            return
        if core.telemetry is not None:
            core.telemetry.failed(req_id, ABANDONED)
        if not core.ingress.controls:
            return
        try:
            with self.lock:
                conn = core.sendable("interrupt")
                if conn is None or core.ledger.last != req_id:
                    return  # reconnecting (the request is gone with its connection), or a newer request followed
                self._transmit(conn, _protocol.encode_interrupt(req_id), req_id, Deadline(core.options.send_timeout))
                self._ended_here(req_id)
            logger.debug("session #%d: abandoned request %s interrupted", core.number, req_id)
        except (AvatarSDKError, ValueError):
            logger.debug("session #%d: could not interrupt abandoned request %s", core.number, req_id)

    def _ended_here(self, req_id: str) -> None:
        """An interrupt of ``req_id`` went out: the request is over here too (its encoded stream dropped)."""
        if self._core.ledger.current == req_id:
            self.audio.drop()
        self._core.ledger.ended_by_client(req_id)

    # ------------------------------------------------------------------------------ the one path

    def _take(self, op: str, deadline: Deadline, first: Callable[[], T]) -> Tuple[Connection, T]:
        """Take the send lock, run ``first`` (the checks that come before all others: a request cut off by a
        drop fails at once), and return the connection and what ``first`` returned, with the lock held. While a
        reconnect runs (``Core.sendable`` says ``None``), wait for it with the lock released. Everything within
        ``deadline``."""
        core = self._core
        while True:
            if not self.lock.acquire(timeout=deadline.lock_timeout()):
                raise self._busy(op)
            try:
                result = first()
                conn = core.sendable(op)
                if conn is not None:
                    return conn, result
            except BaseException:
                self.lock.release()
                raise
            self.lock.release()
            with core.lock:
                if not core.changed.wait_for(lambda: core.state is not State.RECONNECTING, deadline.remaining()):
                    raise core.not_reconnected(op)

    def _busy(self, op: str) -> AvatarSDKError:
        return AvatarSDKError(
            AvatarSDKErrorCode.connectionFailed,
            f"{op}(): other sends kept the connection busy for send_timeout ({self._core.options.send_timeout}s);"
            " the server is not reading",
            phase=PHASE_WEBSOCKET_SEND,
            connection_id=self._core.connection_id,
            retryable=True,
        )

    def _transmit(self, conn: Connection, data: bytes, req_id: str, deadline: Deadline) -> None:
        """Send ``data`` within what is left of ``deadline`` (send lock held); a failure breaks the connection."""
        core = self._core
        try:
            conn.send(data, timeout=deadline.remaining(), req_id=req_id)
        except AvatarSDKError as err:
            with core.lock:
                closed_by_user = core.lifecycle.closed_by_user
            if closed_by_user:  # close() shut the socket down under this send
                raise AvatarSDKError(
                    AvatarSDKErrorCode.connectionClosed,
                    "the session was closed by close() while this send was blocked (the server was not reading)",
                    phase=PHASE_WEBSOCKET_SEND,
                    connection_id=core.connection_id,
                    req_id=req_id,
                ) from err
            ended = conn.end
            if ended is not None and ended.peer_closed:  # the server closed first: its reason, not the broken pipe
                peer = core.end_error(ended)
                if peer is not None:
                    raise peer._derive(peer.message, phase=PHASE_WEBSOCKET_SEND, req_id=req_id) from err
            failure = err._derive(err.message, connection_id=core.connection_id)
            with core.lock:
                if core.send_failure is None:
                    core.send_failure = failure
            conn.shutdown()  # a failed send may have left half a frame: the connection cannot go on
            raise failure from err


class SenderChannel:
    """The narrow interface a session gives its pull requests (:class:`~avatarsdk.request.RequestChannel`)."""

    __slots__ = ("_core", "_sender")

    def __init__(self, core: Core, sender: Sender) -> None:
        self._core = core
        self._sender = sender

    @property
    def connection_id(self) -> Optional[str]:
        return self._core.connection_id

    def send(self, req_id: str, audio: Audio, end: bool) -> None:
        self._sender.send_audio("send", audio, end, req_id)

    def release(self, req_id: str, *, abandoned: bool) -> None:
        self._core.ledger.release(req_id, abandoned=abandoned)
        if abandoned:
            self._sender.abandon(req_id)
