"""The end of a session's connection, on its dispatcher: report it and end the session, or reconnect.

:meth:`Reconnector.on_end` runs once every frame received before the end has been delivered. Without a
reconnect policy (or for an end not worth retrying) it reports the fault, fails the open pull requests and
finishes the session. With one, it fails the requests the drop cut off and reconnects as the policy's
:class:`~avatarsdk._backoff.Backoff` says (a new token, connection and handshake each time), then hands the
dispatcher the new connection's queue; ``close()`` cuts a reconnect short at any point.
"""

from __future__ import annotations

import logging
import math
import time
from typing import NamedTuple, Optional, Tuple

from ._connection import StreamEnd
from ._connector import Connector
from ._core import Core
from ._dispatch import safe_call
from ._lifecycle import State
from ._queue import FrameQueue
from ._receiver import Receiver
from ._sender import Sender
from .errors import PHASE_WEBSOCKET_RUNTIME, AvatarSDKError, AvatarSDKErrorCode
from .reconnect import ReconnectEvent, ReconnectState

logger = logging.getLogger(__name__)


class _Drop(NamedTuple):
    """The drop a reconnect follows."""

    cause: AvatarSDKError
    previous: Optional[str]  # the connection id that dropped
    cut: Tuple[str, ...]  # the requests it cut off


class Reconnector:
    """The end-of-connection handling of one session (see the module documentation)."""

    __slots__ = ("_connector", "_core", "_receiver", "_sender")

    def __init__(self, core: Core, sender: Sender, receiver: Receiver, connector: Connector) -> None:
        self._core = core
        self._sender = sender
        self._receiver = receiver
        self._connector = connector

    def on_end(self, end: StreamEnd) -> Optional[FrameQueue[StreamEnd]]:
        """The connection ended: report it and finish the session, or reconnect and return the new queue."""
        core = self._core
        conn, reader = core.conn, core.reader
        assert conn is not None and reader is not None
        reader.join()  # it queued the end as its last act
        with core.lock:
            closed_by_user, send_failure = core.lifecycle.closed_by_user, core.send_failure
        closing = core.end_error(end)  # what the close (or the loss) stands for
        error: Optional[AvatarSDKError] = None
        if not closed_by_user:
            if end.fault is not None:
                error = end.fault._derive(end.fault.message, connection_id=core.connection_id)
            else:
                error = closing if end.peer_closed else send_failure or closing
        ending, reported = self._receiver.pair(error)
        cut: Optional[Tuple[str, ...]] = None
        with self._sender.lock:
            conn.close()
            self._sender.audio.drop()  # the encoder's stream, if a request was cut off
            with core.lock:
                if core.options.reconnect is not None and core.state is State.STARTED and ending and ending.retryable:
                    core.move(State.RECONNECTING)
                    cut = core.ledger.drop(ending)
                else:
                    core.end(ending or closing)
        if cut is not None:
            assert ending is not None
            return self._reconnect(ending, cut, reported)
        if ending is None and not closed_by_user:
            logger.info("session #%d: closed by the server (code %s)", core.number, end.close_code)
        if ending is not None and reported:
            logger.debug("session #%d: close %s follows the server error already reported", core.number, end.close_code)
        elif ending is not None:
            logger.debug("session #%d: ended by %r", core.number, ending)
            core.report(ending)
        self._fail_pulls(ending)
        core.finish()
        return None

    # ------------------------------------------------------------------------------ reconnect

    def _reconnect(
        self, cause: AvatarSDKError, cut: Tuple[str, ...], reported: bool
    ) -> Optional[FrameQueue[StreamEnd]]:
        """After a drop worth retrying: fail the requests it cut off, then try again as the policy says."""
        core = self._core
        policy = core.options.reconnect
        assert policy is not None
        previous = core.connection_id
        logger.warning("session #%d: connection %s dropped (%s); reconnecting", core.number, previous, cause.code.value)
        for req_id in cut:
            error = core.ledger.cut_error(req_id, PHASE_WEBSOCKET_RUNTIME)
            if core.telemetry is not None:
                core.telemetry.failed(req_id, error.code.value)
            core.report(error)
            inbox = core.ledger.inbox(req_id)
            if inbox is not None:
                inbox.fail(error)
        if not cut and not reported:
            core.report(cause)
        drop = _Drop(cause, previous, cut)
        backoff = policy.backoff
        began = time.monotonic()
        last: Optional[AvatarSDKError] = None
        attempt = 0
        while True:
            elapsed = time.monotonic() - began if attempt else -math.inf  # the first attempt always starts
            delay = backoff.next_delay(attempt + 1, elapsed)
            if delay is None:
                break
            attempt += 1
            self._tell(drop, ReconnectState.reconnecting, attempt, error=last, delay=delay)
            if core.wake.wait(delay) or not self._reconnecting():
                break  # close()
            queue, last, go_on = self._attempt(attempt, last)
            if queue is not None:
                self._tell(drop, ReconnectState.reconnected, attempt, connection_id=core.connection_id)
                return queue
            if not go_on:
                break
        self._give_up(drop, last, attempt, time.monotonic() - began)
        return None

    def _attempt(
        self, attempt: int, last: Optional[AvatarSDKError]
    ) -> Tuple[Optional[FrameQueue[StreamEnd]], Optional[AvatarSDKError], bool]:
        """One reconnect attempt: ``(queue, None, _)`` on success, else ``(None, why, whether to go on)``."""
        core = self._core
        try:
            conn, confirmed = self._connector.connect(self._connector.reconnect_token(), State.RECONNECTING)
        except AvatarSDKError as err:
            logger.info("session #%d: reconnect attempt %d failed: %s", core.number, attempt, err)
            return None, err, err.retryable and self._reconnecting()
        except Exception as exc:
            if not self._reconnecting():
                return None, last, False  # close() cut the attempt short
            logger.exception("session #%d: reconnect attempt %d failed unexpectedly", core.number, attempt)
            failure = AvatarSDKError(
                AvatarSDKErrorCode.unknown,
                f"reconnect attempt {attempt} failed: {type(exc).__name__}",
                phase=PHASE_WEBSOCKET_RUNTIME,
            )
            return None, failure, False
        assert core.dispatcher is not None
        queue = core.dispatcher.new_queue()
        if not core.adopt(conn, queue, confirmed, expected=State.RECONNECTING):
            return None, last, False  # close() came first
        logger.info(
            "session #%d: reconnected after %d attempt%s (connection id %s)",
            core.number,
            attempt,
            "s" if attempt > 1 else "",
            confirmed[0],
        )
        return queue, None, True

    def _give_up(self, drop: _Drop, last: Optional[AvatarSDKError], attempts: int, elapsed: float) -> None:
        """The reconnect ended without a connection: the policy gave up, or ``close()`` came. Finish."""
        core = self._core
        cause = drop.cause
        with core.lock:
            closing = not self._reconnecting()
            if not closing:
                core.end(None)
        if closing:
            self._fail_pulls(None)
        else:
            why = last or cause
            final = why._derive(
                f"reconnect failed after {attempts} attempt{'s' if attempts != 1 else ''} in {elapsed:.1f}s"
                f" (connection dropped: {cause.message}; last attempt: {why.message})",
                connection_id=core.connection_id,
                req_id=None,
            )
            with core.lock:
                core.lifecycle.end_error = final
            logger.warning("session #%d: %s", core.number, final.message)
            core.report(final)
            self._tell(drop, ReconnectState.failed, attempts, error=last)
            self._fail_pulls(final)
        core.finish()

    def _reconnecting(self) -> bool:
        """Whether the reconnect goes on (``close()`` ends it)."""
        return self._core.state is State.RECONNECTING

    def _tell(
        self,
        drop: _Drop,
        state: ReconnectState,
        attempt: int,
        *,
        error: Optional[AvatarSDKError] = None,
        delay: float = 0.0,
        connection_id: Optional[str] = None,
    ) -> None:
        event = ReconnectEvent(state, attempt, drop.cause, error, delay, connection_id, drop.previous, drop.cut)
        safe_call("on_reconnect", self._core.config.on_reconnect, event)

    # ------------------------------------------------------------------------------ pull requests

    def _fail_pulls(self, cause: Optional[AvatarSDKError]) -> None:
        """The session ends: the open pull requests' last frames will not come."""
        core = self._core
        for inbox in core.ledger.inboxes():
            message = f"the session ended before the last frame of request {inbox.req_id}"
            if cause is None:
                error = AvatarSDKError(
                    AvatarSDKErrorCode.connectionClosed,
                    message,
                    phase=PHASE_WEBSOCKET_RUNTIME,
                    req_id=inbox.req_id,
                    connection_id=core.connection_id,
                )
            else:
                error = cause._derive(
                    f"{message}: {cause.message}", req_id=inbox.req_id, connection_id=core.connection_id
                )
            inbox.fail(error)
