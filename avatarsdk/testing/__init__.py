"""A local stand-in for the avatar service, for tests, demos and offline development.

:class:`FakeAvatarService` runs the console API (session tokens) and the v2 ingress (WebSocket) on
127.0.0.1 over real sockets, behaves like the service by default, and can be scripted per test: token
replies, upgrade rejections, handshake replies, frames per request (count, size, pacing), runtime errors,
close codes, abrupt drops and stalls. It records everything it receives.

Needs the ``testing`` extra (``pip install "avatarsdk[testing]"``), which brings the ``websockets`` server.
"""

from __future__ import annotations

from ._proxy import FaultProxy
from ._service import (
    Confirm,
    FakeAvatarService,
    FakeConnection,
    FakeRequest,
    HandshakeClose,
    HandshakeDrop,
    HandshakeError,
    HandshakeRaw,
    HandshakeReply,
    HandshakeSilence,
    TokenReply,
    TokenRequest,
    animation_frame,
    jsonapi_error,
    v1_animation_frame,
)

__all__ = [
    "Confirm",
    "FakeAvatarService",
    "FakeConnection",
    "FakeRequest",
    "FaultProxy",
    "HandshakeClose",
    "HandshakeDrop",
    "HandshakeError",
    "HandshakeRaw",
    "HandshakeReply",
    "HandshakeSilence",
    "TokenReply",
    "TokenRequest",
    "animation_frame",
    "jsonapi_error",
    "v1_animation_frame",
]
