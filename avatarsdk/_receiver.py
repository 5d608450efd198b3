"""What a session does with each received message, on its dispatcher (never the reader thread).

Animation frames go to ``transport_frames`` and to the pull request that follows their ``req_id``; playback
states to ``on_playback_state`` and that request's events; server errors to ``on_error``. A server error that
announces a close (its code is a close code: the service then closes with that code) is the one error for the
pair: reported where it came, it carries the close's code and reason when the close is already received or
arrives within :data:`CLOSE_GRACE` seconds, and the close itself is then not reported again
(:meth:`Receiver.pair`).
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple

from . import _protocol
from ._core import Core
from ._dispatch import CALLBACK_FAULTS, safe_call
from ._faults import server_error
from ._otel import RequestSpan
from ._queue import TextFrame
from .errors import PHASE_WEBSOCKET_RUNTIME, AvatarSDKError, AvatarSDKErrorCode
from .playback import PlaybackState

logger = logging.getLogger(__name__)

CLOSE_CODES = range(1000, 5000)  # a ServerError code in this range announces a close with that code
CLOSE_GRACE = 0.25  # seconds a server error announcing a close waits for that close before it is reported


def _nothing(request: RequestSpan) -> None:
    """The telemetry's ``first_frame`` in a session without telemetry (never called: nothing is watched)."""


class Receiver:
    """The dispatcher-side handlers of one session (see the module documentation)."""

    __slots__ = ("_announced", "_core", "_first", "_inboxes", "_ledger", "_transport_frames", "_watched", "on_frame")

    def __init__(self, core: Core) -> None:
        self._core = core
        self._announced: Optional[AvatarSDKError] = None  # the reported server error that announced a close
        # The hot path's lookups, made once (the session's configuration is its own copy, never changed).
        self._ledger = core.ledger
        self._transport_frames = core.config.transport_frames
        self._inboxes = core.ledger.routes
        telemetry = core.telemetry
        self._watched = {} if telemetry is None else telemetry.watched  # the requests whose frames it counts
        self._first = _nothing if telemetry is None else telemetry.first_frame
        self.on_frame = core.ingress.frame_handler(self._deliver, self._other)

    def _deliver(self, data: bytes, req_id: str, last: bool) -> None:
        """An animation frame (the hot path: once per frame)."""
        if last and not self._ended(req_id):
            return
        watched = self._watched
        if watched:  # empty without telemetry, and once the requests' first frames are in (unless recorded)
            request = watched.get(req_id)
            if request is not None:
                request.frames += 1
                if request.frames == 1:
                    self._first(request)
        callback = self._transport_frames
        if callback is not None:
            try:
                callback(data, last)
            except CALLBACK_FAULTS:
                logger.exception("transport_frames callback raised; the session carries on")
        if self._inboxes:
            inbox = self._inboxes.get(req_id)
            if inbox is not None:
                inbox.push(data, last)

    def _ended(self, req_id: str) -> bool:
        """The last frame of ``req_id`` arrived: ``False`` for a repeated end (egress mode can send two)."""
        if not self._ledger.frame_ended(req_id):
            logger.debug("session #%d: repeated end of request %s ignored", self._core.number, req_id)
            return False
        if self._core.telemetry is not None:
            self._core.telemetry.last_frame(req_id)
        return True

    def _other(self, msg: _protocol.Decoded) -> None:
        """Messages other than animation frames (rare: not on the hot path)."""
        core = self._core
        if type(msg) is _protocol.PlaybackStateMessage:
            state = PlaybackState.from_wire(msg.req_id, msg.state, msg.played_ms, msg.reason, msg.connection_id)
            safe_call("on_playback_state", core.config.on_playback_state, state)
            inbox = core.ledger.inbox(state.req_id)
            if inbox is not None:
                inbox.event(state)
        elif type(msg) is _protocol.ServerErrorMessage:
            self._server_error(msg)
        elif type(msg) is _protocol.Malformed:
            self.protocol_error(f"received {msg.size} bytes that are not a valid message ({msg.reason})")
        elif type(msg) is _protocol.Unknown:
            logger.debug("session #%d: ignoring a message of unknown type %d", core.number, msg.type)
        else:
            logger.debug("session #%d: ignoring an unexpected %s", core.number, type(msg).__name__)

    def _server_error(self, msg: _protocol.ServerErrorMessage) -> None:
        core = self._core
        error = server_error(
            msg,
            phase=PHASE_WEBSOCKET_RUNTIME,
            prefix="server error",
            connection_id=core.connection_id,
            secrets=core.conn.secrets if core.conn is not None else (),
        )
        logger.debug("session #%d: server error %s", core.number, msg.code)
        if msg.code in CLOSE_CODES:
            dispatcher = core.dispatcher
            end = dispatcher.peek_end(CLOSE_GRACE) if dispatcher is not None else None
            closing = core.end_error(end) if end is not None and end.peer_closed else None
            if closing is not None and closing.close_code == msg.code:
                error = error._derive(error.message, close_code=closing.close_code, close_reason=closing.close_reason)
            self._announced = error
        if error.req_id and core.telemetry is not None:
            core.telemetry.failed(error.req_id, error.code.value)
        core.report(error)
        inbox = core.ledger.inbox(error.req_id) if error.req_id else None
        if inbox is not None:
            inbox.fail(error)

    def pair(self, error: Optional[AvatarSDKError]) -> Tuple[Optional[AvatarSDKError], bool]:
        """The connection ended with ``error``: return the error that stands for the end, and whether it was
        reported already (a server error announced this very close: the pair is one error, with both codes)."""
        announced, self._announced = self._announced, None
        if announced is None or error is None or error.close_code is None:
            return error, False
        if str(error.close_code) != announced.server_code:
            return error, False
        if announced.close_code is None:  # the close came after the grace: the error it stands for has both
            announced = announced._derive(
                announced.message, close_code=error.close_code, close_reason=error.close_reason
            )
        return announced, True

    def on_text(self, frame: TextFrame) -> None:
        self.protocol_error(f"received a text message ({frame.size} bytes); the protocol is binary")

    def protocol_error(self, message: str) -> None:
        core = self._core
        core.report(
            AvatarSDKError(
                AvatarSDKErrorCode.protocolError,
                message,
                phase=PHASE_WEBSOCKET_RUNTIME,
                connection_id=core.connection_id,
            )
        )
