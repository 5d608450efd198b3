"""A local stand-in for the avatar service, for tests, demos and offline development.

:class:`FakeAvatarService` runs the console API (session tokens) and the v2 ingress (WebSocket) on
127.0.0.1 over real sockets, behaves like the service by default, and can be scripted per test: token
replies, upgrade rejections, handshake replies, frames per request (count, size, pacing), runtime errors,
close codes, abrupt drops and stalls. It records everything it receives.

:mod:`avatarsdk.testing.wire` builds protobuf fields, WebSocket frames and animation frames byte by byte, for
tests that write their own server frames.

Needs the ``testing`` extra (``pip install "avatarsdk[testing]"``), which brings the ``websockets`` server.
"""

from __future__ import annotations

try:
    import websockets  # noqa: F401  (the stand-in's server; only the testing extra brings it)
except ImportError as exc:
    raise ImportError(
        "avatarsdk.testing needs the websockets package, which the testing extra brings: "
        'pip install "avatarsdk[testing]"'
    ) from exc

from ._connection import FakeConnection
from ._proxy import FaultProxy
from ._scripts import (
    Confirm,
    FakeRequest,
    HandshakeClose,
    HandshakeDrop,
    HandshakeError,
    HandshakeRaw,
    HandshakeReply,
    HandshakeSilence,
    TokenReply,
    TokenRequest,
    jsonapi_error,
)
from ._service import FakeAvatarService
from .wire import animation_frame, v1_animation_frame

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
