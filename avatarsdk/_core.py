"""A session's shared state: its lifecycle, its current connection and that connection's threads, under one lock.

The parts of a session (``_sender``: the send path; ``_receiver``: the dispatcher's handlers; ``_reconnector``:
the end of a connection and reconnects; ``avatar_session``: the public calls, start and close) each hold the
same :class:`Core` and change it only under :attr:`Core.lock`. No I/O and no user code run under that lock.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Callable, FrozenSet, Optional, Tuple

from ._connection import Connection, StreamEnd
from ._dispatch import safe_call
from ._faults import CLOSE_NORMAL, closed_error
from ._fork import process_generation
from ._hosting import check_server
from ._ingress import Ingress
from ._ledger import RequestLedger
from ._lifecycle import Lifecycle, State
from ._options import Options
from ._otel import SessionTelemetry, session_telemetry
from ._reader import ParkedThread, Reader
from ._slot import SlotHolder
from .errors import PHASE_WEBSOCKET_RUNTIME, PHASE_WEBSOCKET_SEND, AvatarSDKError, AvatarSDKErrorCode
from .session_config import SessionConfig

if TYPE_CHECKING:
    from ._dispatch import Dispatcher
    from ._queue import FrameQueue

logger = logging.getLogger(__name__)


class Core:
    """What the parts of one session share (see the module documentation)."""

    __slots__ = (
        "capabilities",
        "changed",
        "closed",
        "config",
        "conn",
        "connection_id",
        "dispatcher",
        "finisher",
        "ingress",
        "ledger",
        "lifecycle",
        "lock",
        "number",
        "on_finish",
        "options",
        "parked",
        "pid",
        "process",
        "queue",
        "reader",
        "send_failure",
        "slot",
        "telemetry",
        "token",
        "wake",
    )

    def __init__(self, number: int, config: SessionConfig, options: Options, ingress: Ingress) -> None:
        self.number = number
        self.config = config
        self.options = options
        self.ingress = ingress
        check_server()  # a uWSGI worker without threads: warned once
        self.telemetry: Optional[SessionTelemetry] = session_telemetry(
            config, protocol_version=ingress.version, traces=ingress.traces
        )  # None without opentelemetry-api
        # Requests in flight are tracked only for a reconnect to fail them (egress sessions get no frames back).
        self.ledger = RequestLedger(
            track=options.reconnect is not None and not (config.livekit_egress or config.agora_egress)
        )
        self.lock = threading.Lock()  # guards everything below
        self.changed = threading.Condition(self.lock)  # notified on every change of state
        self.lifecycle = Lifecycle()
        self.token: Optional[str] = None
        self.conn: Optional[Connection] = None
        self.connection_id: Optional[str] = None
        self.capabilities: FrozenSet[str] = frozenset()
        self.parked: Optional[ParkedThread] = None  # the reader's thread, started by init() ahead of start()
        self.reader: Optional[threading.Thread] = None
        self.dispatcher: Optional[Dispatcher[StreamEnd]] = None
        self.queue: Optional[FrameQueue[StreamEnd]] = None
        self.send_failure: Optional[AvatarSDKError] = None  # the send that broke the connection
        self.wake = threading.Event()  # set by close(): cuts a reconnect's backoff short
        self.closed = threading.Event()  # set once on_close has run
        self.slot = SlotHolder(options.limiter, options.limiter_timeout, cancel=self.wake, number=number)
        self.finisher: Optional[int] = None  # the thread that finished the session (it runs on_close)
        self.on_finish: Callable[[], None] = lambda: None  # releases what outlives connections (the HTTP pool)
        self.process = process_generation()  # fork detection
        self.pid = os.getpid()

    @property
    def state(self) -> State:
        return self.lifecycle.state

    def move(self, to: State) -> None:
        """Change the state (lock held) and wake whoever waits for a change."""
        self.lifecycle.move(to)
        self.changed.notify_all()

    def end(self, error: Optional[AvatarSDKError]) -> None:
        """The connection ended for good (lock held): ``CLOSING``, keeping the fault that ended it."""
        self.lifecycle.ended(error)
        self.changed.notify_all()

    def adopt(
        self,
        conn: Connection,
        queue: FrameQueue[StreamEnd],
        confirmed: Tuple[str, Tuple[str, ...]],
        *,
        expected: State,
        dispatcher: Optional[Dispatcher[StreamEnd]] = None,
    ) -> bool:
        """Make ``conn`` (its handshake done; ``confirmed`` is its connection id and capabilities) the session's
        and start its reader on ``queue``, for ``start()`` and for a reconnect. ``False`` if ``close()`` came
        while the session was ``expected``: ``conn`` is then closed, never used."""
        with self.lock:
            adopted = self.lifecycle.state is expected
            if adopted:
                parked = self.parked or ParkedThread(f"avatarsdk-reader-{self.number}")
                self.parked = None
                self.conn, self.queue, self.reader = conn, queue, parked.thread
                if dispatcher is not None:
                    self.dispatcher = dispatcher
                self.connection_id, capabilities = confirmed
                self.capabilities = frozenset(capabilities)
                self.token = None  # a token is for one connection
                self.send_failure = None
                self.ingress.connected()
                self.move(State.STARTED)
                parked.run(Reader(conn, queue).run)
        if not adopted:
            conn.send_close(CLOSE_NORMAL)
            conn.close()
        return adopted

    def forked(self) -> bool:
        """Whether this process is a fork of the one that made the session."""
        return self.process != process_generation()

    def check_process(self, op: str) -> None:
        if self.forked():
            raise RuntimeError(
                f"{op}(): this session was created in process {self.pid}, before a fork; its connection and"
                " threads belong to that process: create a new session in this one"
            )

    def sendable(self, op: str) -> Optional[Connection]:
        """The connection, if a client message may be sent on it now, or ``None`` while a reconnect runs (lock
        not held; the send lock is).

        Raises:
            ValueError: the session is not started, or ``close()`` closed it.
            AvatarSDKError: the server (or the network) ended it.
        """
        self.check_process(op)
        with self.lock:
            state, conn = self.lifecycle.state, self.conn
            closed_by_user, end_error = self.lifecycle.closed_by_user, self.lifecycle.end_error
        if state is State.STARTED and conn is not None and conn.end is None:
            return conn
        if state is State.RECONNECTING:
            return None
        if state in (State.NEW, State.INITIALIZED, State.STARTING):
            raise ValueError(f"{op}(): the session is not started; call start() first")
        if closed_by_user:
            raise ValueError(f"{op}(): the session is closed")
        # The server (or the network) ended the session.
        reason = end_error or self.end_error(conn.end if conn is not None else None)
        if reason is None:
            raise AvatarSDKError(
                AvatarSDKErrorCode.connectionClosed,
                f"{op}(): the session has ended",
                phase=PHASE_WEBSOCKET_SEND,
                connection_id=self.connection_id,
            )
        raise reason._derive(
            f"{op}(): the session has ended ({reason.message})",
            phase=PHASE_WEBSOCKET_SEND,
            connection_id=self.connection_id,
            req_id=None,
        )

    def not_reconnected(self, op: str) -> AvatarSDKError:
        return AvatarSDKError(
            AvatarSDKErrorCode.connectionClosed,
            f"{op}(): the connection dropped and is not re-established yet (waited {self.options.send_timeout}s);"
            " try again",
            phase=PHASE_WEBSOCKET_SEND,
            connection_id=self.connection_id,
            retryable=True,
        )

    def end_error(self, end: Optional[StreamEnd]) -> Optional[AvatarSDKError]:
        """The error a stream end stands for (``None`` for a server's normal close)."""
        if end is None:
            return None
        if end.peer_closed and end.close_code in (None, CLOSE_NORMAL):
            return None
        return closed_error(
            end.close_code,
            end.close_reason,
            phase=PHASE_WEBSOCKET_RUNTIME,
            during="the session",
            connection_id=self.connection_id,
            secrets=self.conn.secrets if self.conn is not None else (),
        )

    def report(self, error: AvatarSDKError) -> None:
        """Give ``error`` to ``on_error`` (on the calling thread, outside every lock)."""
        safe_call("on_error", self.config.on_error, error)

    def finish(self) -> None:
        """Move from ``CLOSING`` to ``CLOSED`` and run ``on_close``: only the first caller, the session's
        finisher, does."""
        with self.lock:
            if self.lifecycle.state is State.CLOSED:
                return
            self.move(State.CLOSED)
            self.token = None
            self.finisher = threading.get_ident()
            end_error = self.lifecycle.end_error
        if self.telemetry is not None:
            self.telemetry.finished(end_error)
        self.slot.give_back(final=True)  # every connection of the session has closed
        self.on_finish()
        logger.debug("session #%d: closed", self.number)
        safe_call("on_close", self.config.on_close)
        self.closed.set()

    def drop_unused_slot(self) -> None:
        """The session was dropped without ``close()``: its slot goes back unless a connection may hold it."""
        if self.lifecycle.state in (State.NEW, State.INITIALIZED):
            self.slot.give_back(final=True)

    def warn_if_running(self, name: str, alive: bool) -> None:
        """A thread of the session outlived ``close()``'s bounded wait (a callback or a call still blocking)."""
        if alive:
            logger.warning(
                "session #%d: thread %s still running %ss after close()",
                self.number,
                name,
                self.options.close_timeout,
            )
