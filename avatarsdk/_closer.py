"""``close()``: end a session within ``close_timeout``, whatever its other threads are doing.

One deadline bounds every step: the closing handshake (the close frame needs the send lock; a send blocked on a
server that stopped reading is cut by shutting the socket down, as the ``websockets`` library does when a closing
handshake cannot be sent), the server's close reply (the reader's end), and the dispatcher's end. Past the
deadline the socket is shut down and the threads get :data:`CLOSE_GRACE` more seconds; a thread still running
then is logged, never waited for. The session is finished (``on_close``) by exactly one thread: here for a
session that never started, otherwise ``start()``, the reconnect or the dispatcher, whoever holds the end.
"""

from __future__ import annotations

import logging
import threading

from ._connection import Connection, StreamEnd
from ._core import Core
from ._deadline import Deadline
from ._dispatch import Dispatcher
from ._faults import CLOSE_NORMAL
from ._lifecycle import State

logger = logging.getLogger(__name__)

CLOSE_GRACE = 0.5  # seconds close() still gives the threads once close_timeout has passed and the socket is shut


def close_session(core: Core, send_lock: threading.Lock) -> None:
    """End the session (see the module documentation); idempotent, from any thread."""
    if core.forked():
        _close_in_forked_child(core)
        return
    deadline = Deadline(core.options.close_timeout)
    with core.lock:
        left = core.lifecycle.request_close()
        if left is not None:
            core.changed.notify_all()
            core.token = None
        conn, reader, dispatcher, queue = core.conn, core.reader, core.dispatcher, core.queue
        parked, core.parked = core.parked, None
    if parked is not None:  # never started: let the parked reader thread go
        parked.cancel()
        parked.thread.join(deadline.remaining())
    on_dispatcher = dispatcher is not None and dispatcher.is_current()
    if left in (State.NEW, State.INITIALIZED):
        core.finish()
        return
    if left in (State.STARTING, State.RECONNECTING):
        core.wake.set()  # cut a reconnect's backoff short
        if conn is not None:
            conn.shutdown()  # cut the handshake short: start() (or the reconnect) fails and finishes the close
    if left is not State.STARTED:
        # Another thread finishes the session (start(), the reconnect, or an earlier close): wait for the end.
        if not on_dispatcher and threading.get_ident() != core.finisher:
            core.closed.wait(deadline.remaining())
            if left is State.RECONNECTING and dispatcher is not None:
                dispatcher.join(deadline.remaining())
                core.warn_if_running(dispatcher.name, dispatcher.is_alive())
        return
    assert conn is not None and reader is not None and dispatcher is not None and queue is not None
    logger.debug("session #%d: closing", core.number)
    queue.release()  # a reader blocked on a full queue goes on, to read the close reply
    _handshake(core, conn, send_lock, deadline)
    _join(core, conn, reader, dispatcher, deadline=deadline, on_dispatcher=on_dispatcher)


def _handshake(core: Core, conn: Connection, send_lock: threading.Lock, deadline: Deadline) -> None:
    """The close frame, once the send lock is free; a send still blocked at the deadline is cut."""
    if send_lock.acquire(timeout=deadline.lock_timeout()):
        try:
            if conn.end is None:
                conn.send_close(CLOSE_NORMAL, timeout=deadline.remaining())
        finally:
            send_lock.release()
    else:
        logger.debug("session #%d: a send is blocked; shutting the socket down", core.number)
        conn.shutdown()  # wakes the blocked send, which raises


def _join(
    core: Core,
    conn: Connection,
    reader: threading.Thread,
    dispatcher: Dispatcher[StreamEnd],
    *,
    deadline: Deadline,
    on_dispatcher: bool,
) -> None:
    """The reader ends with the server's close reply (or the shutdown at the deadline); the dispatcher after
    delivering what came before it. From a callback, the dispatcher is not waited for (it is this thread)."""
    grace = deadline.extended(CLOSE_GRACE)
    reader.join(deadline.remaining())
    if reader.is_alive():
        logger.debug(
            "session #%d: no close reply within %ss; shutting the socket down", core.number, core.options.close_timeout
        )
        conn.shutdown()
        reader.join(grace.remaining())
    if not on_dispatcher:
        dispatcher.join(grace.remaining() if deadline.passed() else deadline.remaining())
        core.warn_if_running(reader.name, reader.is_alive())
        core.warn_if_running(dispatcher.name, dispatcher.is_alive())


def _close_in_forked_child(core: Core) -> None:
    """close() in a child of the process that made the session: release this process's copy of the socket
    without a close frame or a shutdown (either would end the parent's connection); no callbacks. No lock is
    taken: one held by a parent thread at the fork stays held forever in the child."""
    core.lifecycle.abandon()
    conn, core.conn = core.conn, None
    if conn is not None:
        conn.release_copy()
