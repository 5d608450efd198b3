"""Configuration of an avatar session: :class:`SessionConfig` and its fluent :class:`SessionConfigBuilder`.

The names and fields are those of the official asyncio SDK, so configuration code ports unchanged.
Values are checked when an :class:`~avatarsdk.AvatarSession` is created (``ValueError``/``TypeError``
naming the field), before anything is sent.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Union

if TYPE_CHECKING:
    from .errors import AvatarSDKError
    from .playback import PlaybackState
    from .reconnect import ReconnectEvent

__all__ = [
    "AgoraEgressConfig",
    "AudioFormat",
    "CloseCallback",
    "EncodedAudioCallback",
    "ErrorCallback",
    "LiveKitEgressConfig",
    "OggOpusEncoderConfig",
    "PlaybackStateCallback",
    "ReconnectCallback",
    "SessionConfig",
    "SessionConfigBuilder",
    "TransportFramesCallback",
]

#: ``transport_frames(frame, last)``: ``frame`` is the exact bytes of one animation message as received;
#: ``last`` is its ``end`` flag (the last frame of a request).
TransportFramesCallback = Callable[[bytes, bool], None]
#: ``on_error(err)``: a fault of the session, as an :class:`~avatarsdk.AvatarSDKError`.
ErrorCallback = Callable[["AvatarSDKError"], None]
#: ``on_close()``: the session has ended (called exactly once).
CloseCallback = Callable[[], None]
#: ``on_playback_state(state)``: a playback-state message (the service's newer generation).
PlaybackStateCallback = Callable[["PlaybackState"], None]
#: ``on_encoded_audio(req_id, ogg_stream)``: a request's whole Ogg Opus stream as the SDK encoded it.
EncodedAudioCallback = Callable[[str, bytes], None]
#: ``on_reconnect(event)``: the progress of an automatic reconnect (sessions created with ``reconnect``).
ReconnectCallback = Callable[["ReconnectEvent"], None]


class AudioFormat(str, Enum):
    """Audio input encoding negotiated for a session."""

    PCM_S16LE = "pcm_s16le"
    OGG_OPUS = "ogg_opus"


@dataclass
class OggOpusEncoderConfig:
    """Encode PCM to Ogg Opus in the SDK (``audio_format=OGG_OPUS`` sessions; needs the ``audio`` extra).

    With it, ``send_audio()`` takes PCM s16le mono at the session's rate and sends one continuous Ogg Opus
    stream per request, encoded with libopus (PyAV).

    Attributes:
        frame_duration_ms: Opus frame length: 2.5, 5, 10, 20, 40 or 60 ms.
        application: libopus mode: ``"audio"``, ``"voip"`` or ``"lowdelay"``.
    """

    frame_duration_ms: float = 20
    application: str = "audio"


@dataclass
class LiveKitEgressConfig:
    """Publish the avatar's audio and animation into a LiveKit room instead of returning frames.

    Attributes:
        url: LiveKit server URL (e.g. ``wss://livekit.example.com``).
        api_key: Deprecated: use ``api_token``.
        api_secret: Deprecated: use ``api_token``.
        api_token: A pre-generated LiveKit access token.
        room_name: Room to join.
        publisher_id: Publisher identity in the room.
        extra_attributes: Extra participant attributes.
        idle_timeout: Seconds of idleness before the egress closes; 0 uses the service's default.
    """

    url: str = ""
    api_key: str = field(default="", repr=False)
    api_secret: str = field(default="", repr=False)
    api_token: str = field(default="", repr=False)
    room_name: str = ""
    publisher_id: str = ""
    extra_attributes: Dict[str, str] = field(default_factory=dict)
    idle_timeout: int = 0

    def __post_init__(self) -> None:
        if self.api_key or self.api_secret:
            warnings.warn(
                "LiveKitEgressConfig.api_key and api_secret are deprecated; use api_token",
                FutureWarning,
                stacklevel=3,
            )


@dataclass
class AgoraEgressConfig:
    """Publish the avatar's audio and animation into an Agora channel instead of returning frames.

    Attributes:
        channel_name: Channel to join.
        token: Agora token (may be empty for test projects).
        uid: Publisher UID (0 lets Agora assign one).
        publisher_id: Publisher identity.
    """

    channel_name: str = ""
    token: str = field(default="", repr=False)
    uid: int = 0
    publisher_id: str = ""


@dataclass
class SessionConfig:
    """Configuration of an :class:`~avatarsdk.AvatarSession`.

    Attributes:
        avatar_id: The avatar to drive.
        api_key: API key for the console (token) call. Never logged or shown in reprs.
        app_id: Application id.
        use_query_auth: Send the app id and session token as URL query parameters ("web" style) instead of
            headers ("mobile" style, the default).
        expire_at: When the session token expires: a timezone-aware datetime in the future, at most 24 h
            ahead; ``None`` (the default): one hour after each token call (``init()``, each reconnect).
        sample_rate: Audio sample rate in Hz (16000 by default; PCM also 8000, 22050, 24000, 32000, 44100,
            48000; Ogg Opus 8000, 12000, 16000, 24000, 48000).
        bitrate: Audio bitrate for Ogg Opus; 0 for PCM.
        audio_format: :class:`AudioFormat` (or its string value).
        transport_frames: Receives each animation frame (exact bytes) and its ``last`` flag.
        on_error: Receives faults as :class:`~avatarsdk.AvatarSDKError`.
        on_close: Called once when the session has ended.
        console_endpoint_url: Console API base URL (``https://...``); may be left empty with ``region``.
        ingress_endpoint_url: Ingress base URL, e.g. ``https://api.<region>.spatialwalk.cloud/v2/driveningress``;
            may be left empty with ``region``.
        livekit_egress: Publish to a LiveKit room (exclusive with ``agora_egress``).
        agora_egress: Publish to an Agora channel (exclusive with ``livekit_egress``).
        on_playback_state: Receives playback-state messages (the service's newer generation answers each
            ``pause()``/``resume()`` with one), on the dispatcher thread.
        ogg_opus_encoder: With ``audio_format=OGG_OPUS``, encode the PCM given to ``send_audio()`` in the SDK
            (:class:`OggOpusEncoderConfig`); without it, ``send_audio()`` takes Ogg Opus bytes as they are.
        on_encoded_audio: ``(req_id, ogg_stream)``: each request's whole encoded stream, once its last chunk
            is sent (with ``ogg_opus_encoder``), on the thread that sent it.
        on_reconnect: Receives each step of an automatic reconnect as a :class:`~avatarsdk.ReconnectEvent`
            (sessions created with ``reconnect``), on the dispatcher thread.
        extra_params: Free-form session parameters for the service (str to str, e.g.
            ``{"server_post_process": "false"}``), sent in the session's configuration only when non-empty.
        region: Instead of the two URLs: a key of :data:`avatarsdk.REGIONS` (``"us-west"``, ``"ap-northeast"``,
            ``"cn-beijing"``, or the ``"spatialreal"`` preset), resolved when the session is created; or
            ``"auto"``, resolved at ``init()`` by a call to the bootstrap service (a third host, so never the
            default). A URL given as well wins over the region's (each URL on its own).
        token_route: The token call's route, a key of :data:`avatarsdk.TOKEN_ROUTES`: ``"console"``
            (``POST {console_endpoint_url}/session-tokens``) or ``"auth"``
            (``POST {console_endpoint_url}/v1/auth/session-token``, the SpatialReal-branded API's, the URL then
            being its API root). ``None`` (the default): the route of the region that gave the console URL,
            else ``"console"``.
    """

    avatar_id: str = ""
    api_key: str = field(default="", repr=False)
    app_id: str = ""
    use_query_auth: bool = False
    expire_at: Optional[datetime] = None
    sample_rate: int = 16000
    bitrate: int = 0
    audio_format: AudioFormat = AudioFormat.PCM_S16LE
    transport_frames: Optional[TransportFramesCallback] = None
    on_error: Optional[ErrorCallback] = None
    on_close: Optional[CloseCallback] = None
    console_endpoint_url: str = ""
    ingress_endpoint_url: str = ""
    livekit_egress: Optional[LiveKitEgressConfig] = None
    agora_egress: Optional[AgoraEgressConfig] = None
    on_playback_state: Optional[PlaybackStateCallback] = None
    ogg_opus_encoder: Optional[OggOpusEncoderConfig] = None
    on_encoded_audio: Optional[EncodedAudioCallback] = None
    on_reconnect: Optional[ReconnectCallback] = None
    extra_params: Mapping[str, str] = field(default_factory=dict)
    region: Optional[str] = None
    token_route: Optional[str] = None

    def __post_init__(self) -> None:
        self.audio_format = _coerce_audio_format(self.audio_format)


def _coerce_audio_format(value: Union[AudioFormat, str]) -> AudioFormat:
    try:
        return AudioFormat(value)
    except ValueError:
        allowed = ", ".join(repr(f.value) for f in AudioFormat)
        raise ValueError(f"audio_format: expected one of {allowed}, got {value!r}") from None


class SessionConfigBuilder:
    """Fluent builder for :class:`SessionConfig`; each ``with_*`` method sets one field."""

    def __init__(self) -> None:
        self._config = SessionConfig()

    def with_avatar_id(self, avatar_id: str) -> SessionConfigBuilder:
        """Set the avatar id."""
        self._config.avatar_id = avatar_id
        return self

    def with_api_key(self, api_key: str) -> SessionConfigBuilder:
        """Set the API key."""
        self._config.api_key = api_key
        return self

    def with_app_id(self, app_id: str) -> SessionConfigBuilder:
        """Set the application id."""
        self._config.app_id = app_id
        return self

    def with_use_query_auth(self, use_query_auth: bool) -> SessionConfigBuilder:
        """Send credentials as URL query parameters (``True``) or headers (``False``)."""
        self._config.use_query_auth = use_query_auth
        return self

    def with_expire_at(self, expire_at: Optional[datetime]) -> SessionConfigBuilder:
        """Set the session token's expiry (timezone-aware, at most 24 h ahead; ``None``: an hour after each token
        call)."""
        self._config.expire_at = expire_at
        return self

    def with_sample_rate(self, sample_rate: int) -> SessionConfigBuilder:
        """Set the audio sample rate in Hz."""
        self._config.sample_rate = sample_rate
        return self

    def with_bitrate(self, bitrate: int) -> SessionConfigBuilder:
        """Set the audio bitrate (Ogg Opus)."""
        self._config.bitrate = bitrate
        return self

    def with_audio_format(self, audio_format: Union[AudioFormat, str]) -> SessionConfigBuilder:
        """Set the audio format."""
        self._config.audio_format = _coerce_audio_format(audio_format)
        return self

    def with_transport_frames(self, handler: TransportFramesCallback) -> SessionConfigBuilder:
        """Set the animation frame callback."""
        self._config.transport_frames = handler
        return self

    def with_on_error(self, handler: ErrorCallback) -> SessionConfigBuilder:
        """Set the error callback."""
        self._config.on_error = handler
        return self

    def with_on_close(self, handler: CloseCallback) -> SessionConfigBuilder:
        """Set the close callback."""
        self._config.on_close = handler
        return self

    def with_console_endpoint_url(self, url: str) -> SessionConfigBuilder:
        """Set the console API base URL."""
        self._config.console_endpoint_url = url
        return self

    def with_ingress_endpoint_url(self, url: str) -> SessionConfigBuilder:
        """Set the ingress base URL."""
        self._config.ingress_endpoint_url = url
        return self

    def with_region(self, region: Optional[str]) -> SessionConfigBuilder:
        """Take the URLs not set from ``region`` (a key of :data:`avatarsdk.REGIONS`, or ``"auto"``)."""
        self._config.region = region
        return self

    def with_token_route(self, route: Optional[str]) -> SessionConfigBuilder:
        """Set the token call's route (``"console"`` or ``"auth"``, see :data:`avatarsdk.TOKEN_ROUTES`)."""
        self._config.token_route = route
        return self

    def with_livekit_egress(self, config: LiveKitEgressConfig) -> SessionConfigBuilder:
        """Publish into a LiveKit room instead of returning frames."""
        self._config.livekit_egress = config
        return self

    def with_agora_egress(self, config: AgoraEgressConfig) -> SessionConfigBuilder:
        """Publish into an Agora channel instead of returning frames."""
        self._config.agora_egress = config
        return self

    def with_on_playback_state(self, handler: PlaybackStateCallback) -> SessionConfigBuilder:
        """Set the playback-state callback."""
        self._config.on_playback_state = handler
        return self

    def with_ogg_opus_encoder(self, config: Optional[OggOpusEncoderConfig] = None) -> SessionConfigBuilder:
        """Encode PCM to Ogg Opus in the SDK (for ``OGG_OPUS`` sessions)."""
        self._config.ogg_opus_encoder = config or OggOpusEncoderConfig()
        return self

    def with_on_encoded_audio(self, handler: EncodedAudioCallback) -> SessionConfigBuilder:
        """Set the callback that receives each request's encoded Ogg Opus stream."""
        self._config.on_encoded_audio = handler
        return self

    def with_on_reconnect(self, handler: ReconnectCallback) -> SessionConfigBuilder:
        """Set the callback that follows automatic reconnects."""
        self._config.on_reconnect = handler
        return self

    def with_extra_params(self, params: Mapping[str, str]) -> SessionConfigBuilder:
        """Set free-form session parameters for the service (str to str)."""
        self._config.extra_params = dict(params)
        return self

    def build(self) -> SessionConfig:
        """Return the configured :class:`SessionConfig`."""
        return self._config
