"""ServiceState: what the parts of the stand-in share, and the lock over it.

The settings (read live: a test may change them on a running service), the scripts queued for the next
calls, the records of what was received, the issued tokens, and the counter that numbers tokens and
connections. :class:`~avatarsdk.testing.FakeAvatarService` is a ``ServiceState``; its console and its ingress
read and write this state under ``_lock``.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._protocol_v1 import expected_segments
from ._connection import FakeConnection
from ._scripts import FakeRequest, HandshakeReply, TokenReply, TokenRequest, UpgradeRejection

FRAME_PERIOD = 0.04  # 25 fps: one animation frame per 40 ms of audio
CONCURRENCY_REFUSALS = ("close", "upgrade")


class ServiceState:
    """The settings, scripts and records of a stand-in (see :class:`~avatarsdk.testing.FakeAvatarService`)."""

    def __init__(
        self,
        *,
        api_key: str = "test-api-key",
        app_id: str = "test-app",
        avatar_id: str = "test-avatar",
        frames_per_request: Optional[int] = None,
        frame_size: int = 1200,
        frame_interval: float = 0.0,
        single_use_tokens: bool = True,
        on_request: Optional[Callable[[FakeConnection, FakeRequest], None]] = None,
        port: int = 0,
        console_port: int = 0,
        capabilities: Tuple[str, ...] = (),
        ssl_context: Optional[ssl.SSLContext] = None,
        token_key: Optional[str] = None,
        token_in_data: bool = False,
        bootstrap_region: str = "us-west",
        concurrency_limit: Optional[int] = None,
        concurrency_refusal: str = "close",
    ) -> None:
        if concurrency_refusal not in CONCURRENCY_REFUSALS:
            raise ValueError(
                f"concurrency_refusal: expected one of {CONCURRENCY_REFUSALS}, got {concurrency_refusal!r}"
            )
        self.api_key = api_key
        self.app_id = app_id
        self.avatar_id = avatar_id
        self.frames_per_request = frames_per_request
        self.frame_size = frame_size
        self.frame_interval = frame_interval
        self.single_use_tokens = single_use_tokens
        self.on_request = on_request
        self.capabilities = capabilities  # declared in each confirmation, e.g. ("playback_control", "playback_state")
        self.ssl_context = ssl_context  # serve both endpoints over TLS (https:// URLs) with this server context
        self.port = port  # the ingress's; 0 picks a free one
        self.console_port = console_port
        # The token's key in a token call's answer (None: "sessionToken", or "session_token" on the SpatialReal
        # route /v1/auth/session-token), and whether it sits inside a "data" object.
        self.token_key = token_key
        self.token_in_data = token_in_data
        self.bootstrap_region = bootstrap_region  # what POST /bootstrap names as region.current
        # Most sessions open at once (the plan's concurrent sessions; None: no limit), and how one more is
        # refused: "close" (ServerError 4003 in answer to the configure message, then close 4003) or "upgrade"
        # (HTTP 429 concurrencyLimit; an upgrade let through by a race is then refused the "close" way).
        self.concurrency_limit = concurrency_limit
        self.concurrency_refusal = concurrency_refusal
        self.open_sessions = 0  # connections counted against the limit: not refused, not yet ended
        self.peak_sessions = 0  # the most open at once
        self.concurrency_refusals = 0  # upgrades and connections refused for the limit
        self.token_requests: List[TokenRequest] = []
        self.bootstrap_requests: List[TokenRequest] = []
        self.connections: List[FakeConnection] = []
        self.upgrade_attempts = 0
        # WebSocket connections open now, and the most at once: from the upgrade's acceptance to the end of reading
        self.open_connections = 0
        self.max_open_connections = 0
        self._token_replies: List[TokenReply] = []
        self._bootstrap_replies: List[TokenReply] = []
        self._rejections: List[UpgradeRejection] = []
        self._handshakes: List[HandshakeReply] = []
        self._tokens: Dict[str, Dict[str, Any]] = {}  # token -> {"expire_at": unix seconds, "used": bool}
        self._lock = threading.Condition()  # over all of the above; notified whenever a record changes
        self._stopping = threading.Event()
        self._counter = 0  # numbers the tokens and the connection ids

    def over_limit(self) -> bool:
        """Another session would pass ``concurrency_limit`` (called with ``_lock`` held)."""
        return self.concurrency_limit is not None and self.open_sessions >= self.concurrency_limit

    def frames_for(self, conn: FakeConnection, request: FakeRequest) -> int:
        """How many frames the fake answers ``request`` with: ``frames_per_request``, or one per 40 ms (v1:
        the segments its duration calls for, the rule clients infer the last one from)."""
        if self.frames_per_request is not None:
            return self.frames_per_request
        if conn.version == 1:
            return expected_segments(len(request.audio) / 2 / 16000)
        rate = conn.configure.sample_rate if conn.configure is not None and conn.configure.sample_rate else 16000
        seconds = len(request.audio) / 2 / rate
        return max(1, round(seconds / FRAME_PERIOD))
