"""What differs between the service's two ingress generations, as one strategy object per session.

:class:`IngressV2` (the current one) and :class:`IngressV1` (deprecated, still served) each own their URL and
auth, their handshake (v1 has none: the connection id is the client's own), their audio message, and how a
received message is read (v1's animation messages carry no request id: the frames are assigned to requests by
counting, see ``_protocol_v1``). The session holds one and never asks which generation it speaks.
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, Optional, Tuple

from . import _protocol, _protocol_v1
from ._connection import Connection
from ._network import user_stacklevel
from ._protocol import peek_animation
from .logid import generate_log_id
from .session_config import AudioFormat, SessionConfig
from .tracing import TraceContext

#: ``deliver(data, req_id, last)``: an animation frame, exactly as received.
Deliver = Callable[[bytes, str, bool], None]
#: ``other(message)``: any other decoded message.
Other = Callable[[_protocol.Decoded], None]


class Ingress:
    """One session's ingress generation (see the module documentation)."""

    __slots__ = ("_config",)
    version = 2
    controls = True  # interrupt, pause and resume exist
    traces = True  # a request's first chunk can carry a trace context

    def __init__(self, config: SessionConfig) -> None:
        self._config = config

    def target(self, token: str) -> Tuple[str, Dict[str, str]]:
        """The WebSocket URL and auth headers of a new connection with session ``token``."""
        raise NotImplementedError

    def handshake(self, conn: Connection, timeout: Optional[float]) -> Tuple[str, Tuple[str, ...]]:
        """Complete a new connection's handshake; return its connection id and the server's capabilities."""
        raise NotImplementedError

    def encode_audio(self, req_id: str, audio: bytes, end: bool, trace: Optional[TraceContext] = None) -> bytes:
        """The message carrying one chunk of request ``req_id`` (called in the order chunks are sent; ``trace``
        only where :attr:`traces` says the generation has one)."""
        raise NotImplementedError

    def connected(self) -> None:
        """A new connection is about to carry the session (per-connection state starts over)."""

    def frame_handler(self, deliver: Deliver, other: Other) -> Callable[[bytes], None]:
        """The dispatcher's function for each received binary message."""
        raise NotImplementedError


class IngressV2(Ingress):
    """``/v2/driveningress``: a handshake (configure, confirm), request ids and ends on every frame."""

    __slots__ = ("_configure",)

    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        self._configure = _protocol.encode_configure(config)  # the handshake's first message, ready

    def target(self, token: str) -> Tuple[str, Dict[str, str]]:
        config = self._config
        return _protocol.websocket_target(
            config.ingress_endpoint_url,
            avatar_id=config.avatar_id,
            app_id=config.app_id,
            session_token=token,
            use_query_auth=config.use_query_auth,
        )

    def handshake(self, conn: Connection, timeout: Optional[float]) -> Tuple[str, Tuple[str, ...]]:
        confirm = conn.handshake(self._configure, timeout)
        return confirm.connection_id, confirm.capabilities

    def encode_audio(self, req_id: str, audio: bytes, end: bool, trace: Optional[TraceContext] = None) -> bytes:
        return _protocol.encode_audio(req_id, audio, end, trace)

    def frame_handler(self, deliver: Deliver, other: Other) -> Callable[[bytes], None]:
        decode, animation = _protocol.decode, _protocol.Animation

        def on_frame(data: bytes) -> None:
            peeked = peek_animation(data)
            if peeked is not None:  # the hot path: an animation frame, read without protobuf objects
                deliver(data, peeked[0], peeked[1])
                return
            msg = decode(data)
            if type(msg) is animation:  # an unusual encoding the fast path leaves to protobuf
                deliver(msg.data, msg.req_id, msg.end)
            else:
                other(msg)

        return on_frame


class IngressV1(Ingress):
    """``/v1/driveningress``: no handshake, the client's own connection id, frames without request ids."""

    __slots__ = ("_connection_id", "_segments")

    version = 1
    controls = False
    traces = False

    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        self._connection_id = ""
        self._segments = _protocol_v1.SegmentCounter()

    def target(self, token: str) -> Tuple[str, Dict[str, str]]:
        self._connection_id = generate_log_id()
        return _protocol_v1.websocket_target(
            self._config.ingress_endpoint_url,
            avatar_id=self._config.avatar_id,
            session_token=token,
            connection_id=self._connection_id,
        )

    def handshake(self, conn: Connection, timeout: Optional[float]) -> Tuple[str, Tuple[str, ...]]:
        return self._connection_id, ()

    def encode_audio(self, req_id: str, audio: bytes, end: bool, trace: Optional[TraceContext] = None) -> bytes:
        self._segments.audio(req_id, len(audio), end)  # before it is sent: its frames may follow at once
        return _protocol_v1.encode_audio(req_id, audio, end)

    def connected(self) -> None:
        self._segments = _protocol_v1.SegmentCounter()  # a new connection knows no request

    def frame_handler(self, deliver: Deliver, other: Other) -> Callable[[bytes], None]:
        decode, animation = _protocol_v1.decode, _protocol_v1.V1Animation

        def on_frame(data: bytes) -> None:
            msg = decode(data)
            if type(msg) is animation:
                req_id, last = self._segments.frame()
                deliver(msg.data, req_id, last)
            else:
                other(msg)  # type: ignore[arg-type]

        return on_frame


def ingress_for(config: SessionConfig, *, warn: bool = True) -> Ingress:
    """The ingress generation ``config.ingress_endpoint_url`` names; v1's limits are checked here, before I/O
    (``warn``: v1's deprecation is said once per call site, at the session's creation; a pool says it once).

    Raises:
        ValueError: the configuration asks the v1 ingress for what it cannot do.
    """
    if not _protocol_v1.is_v1(config.ingress_endpoint_url):
        return IngressV2(config)
    if config.audio_format is not AudioFormat.PCM_S16LE or config.sample_rate != _protocol_v1.V1_SAMPLE_RATE:
        raise ValueError(
            "ingress_endpoint_url: the v1 ingress takes only 16 kHz PCM (sample_rate=16000, audio_format=PCM_S16LE)"
        )
    if config.use_query_auth:
        raise ValueError("use_query_auth: the v1 ingress takes its credentials in headers only")
    if config.livekit_egress is not None or config.agora_egress is not None:
        raise ValueError("livekit_egress/agora_egress: the v1 ingress has no egress configuration")
    if config.extra_params:
        raise ValueError("extra_params: the v1 ingress has no session parameters")
    if warn:
        warnings.warn(
            "the v1 ingress (/v1/driveningress) is deprecated by the service; use /v2/driveningress",
            DeprecationWarning,
            stacklevel=user_stacklevel(),
        )
    return IngressV1(config)
