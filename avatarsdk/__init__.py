"""avatarsdk: a blocking, thread-based Python SDK for the real-time avatar service.

Stream speech audio to the service with :class:`AvatarSession` and receive the avatar's animation frames on
a callback, from plain blocking code (Flask, Django, WSGI services, scripts). The names follow the official
asyncio SDK, so porting code means deleting ``await``.
"""

from __future__ import annotations

import logging

from .avatar_session import AvatarSession, new_avatar_session
from .errors import AvatarSDKError, AvatarSDKErrorCode, SessionTokenError
from .logid import generate_log_id
from .session_config import (
    AgoraEgressConfig,
    AudioFormat,
    LiveKitEgressConfig,
    SessionConfig,
    SessionConfigBuilder,
)

__version__ = "0.1.0"

__all__ = [
    "AgoraEgressConfig",
    "AudioFormat",
    "AvatarSDKError",
    "AvatarSDKErrorCode",
    "AvatarSession",
    "LiveKitEgressConfig",
    "SessionConfig",
    "SessionConfigBuilder",
    "SessionTokenError",
    "__version__",
    "generate_log_id",
    "new_avatar_session",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
