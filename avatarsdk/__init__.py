"""avatarsdk: a blocking, thread-based Python SDK for the real-time avatar service.

Stream speech audio to the service with :class:`AvatarSession` and receive the avatar's animation frames on
a callback, from plain blocking code (Flask, Django, WSGI services, scripts). The names follow the official
asyncio SDK, so porting code means deleting ``await``.
"""

from __future__ import annotations

import logging

from ._dispatch import SharedDispatcher
from ._network import InsecureTransportWarning
from ._options import SessionOptions
from ._queue import Backlog
from ._version import __version__
from .aio import ThreadedIterator, stream_async
from .audio import AudioStream, chunk_pcm, is_wav, iter_audio, load_audio
from .avatar_session import AvatarSession, new_avatar_session
from .errors import AvatarSDKError, AvatarSDKErrorCode, CloseCode, RequestTimeoutError, SessionTokenError
from .framefile import FrameWriter, read_frames
from .limiter import Limiter, LocalLimiter, RedisLimiter
from .logid import generate_log_id
from .playback import PlaybackState, PlaybackStatus
from .pool import PoolStats, PoolTimeoutError, SessionPool
from .reconnect import ReconnectEvent, ReconnectPolicy, ReconnectState
from .regions import REGIONS, TOKEN_ROUTES, Endpoints, endpoints_for
from .request import AvatarRequest, Frame
from .session_config import (
    AgoraEgressConfig,
    AudioFormat,
    LiveKitEgressConfig,
    OggOpusEncoderConfig,
    SessionConfig,
    SessionConfigBuilder,
)
from .tracing import TraceContext

__all__ = [
    "REGIONS",
    "TOKEN_ROUTES",
    "AgoraEgressConfig",
    "AudioFormat",
    "AudioStream",
    "AvatarRequest",
    "AvatarSDKError",
    "AvatarSDKErrorCode",
    "AvatarSession",
    "Backlog",
    "CloseCode",
    "Endpoints",
    "Frame",
    "FrameWriter",
    "InsecureTransportWarning",
    "Limiter",
    "LiveKitEgressConfig",
    "LocalLimiter",
    "OggOpusEncoderConfig",
    "PlaybackState",
    "PlaybackStatus",
    "PoolStats",
    "PoolTimeoutError",
    "ReconnectEvent",
    "ReconnectPolicy",
    "ReconnectState",
    "RedisLimiter",
    "RequestTimeoutError",
    "SessionConfig",
    "SessionConfigBuilder",
    "SessionOptions",
    "SessionPool",
    "SessionTokenError",
    "SharedDispatcher",
    "ThreadedIterator",
    "TraceContext",
    "__version__",
    "chunk_pcm",
    "endpoints_for",
    "generate_log_id",
    "is_wav",
    "iter_audio",
    "load_audio",
    "new_avatar_session",
    "read_frames",
    "stream_async",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
