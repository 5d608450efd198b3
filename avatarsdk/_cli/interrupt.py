"""Ctrl-C (and, for ``serve-local``, SIGTERM) for the commands, without a lost signal or a lock left held.

A command runs on a worker thread; the main thread only waits, in ``select()`` on a socket that the signal's C
handler writes to (``signal.set_wakeup_fd``), for the worker to end or a signal to come. Two faults of letting
Ctrl-C raise ``KeyboardInterrupt`` in the command's own code are gone with it:

- a signal that arrives just before the main thread blocks in a lock's wait (a frame, a latch) is noticed only
  when that wait ends, since CPython runs Python signal handlers between bytecodes and a lock's wait does not
  look for one that came before it: the command sat out its timeout (up to ``--timeout``) after Ctrl-C;
- ``KeyboardInterrupt`` lands between any two bytecodes, also inside Python code that holds a lock of its own
  (``logging``'s handlers, ``threading.Event``, ``Thread.start``), and a lock left held stops every other
  thread that needs it: a session's dispatcher thread blocked on it until ``close()`` gave up.

On the signal, the main thread runs the command's stop actions (:meth:`Interrupt.stopping`: close the session,
stop the stand-in) on a thread of their own, so that a second Ctrl-C is noticed at once. A command that ends on
Ctrl-C prints nothing more (its output is shut) and is not waited for once its stop actions are done (its
session is closed: what its thread still does, a token call that cannot be cut, ends with the process); with no
stop action registered (a token call, files being checked: nothing connected to undo), not at all. The status
is then ``EXIT_INTERRUPTED``. A command that stops gracefully (``serve-local``) is waited for, and ends as it
chooses. Either wait lasts at most :data:`STOP_WAIT` seconds; a second signal ends it at once.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import threading
import time
from contextlib import contextmanager
from types import FrameType
from typing import Callable, FrozenSet, Iterator, List, Optional, Sequence, TextIO, Tuple, cast

logger = logging.getLogger("avatarsdk.cli")

STOP_WAIT = 10.0
"""Seconds the main thread waits, after the signal, for the stop actions (or a graceful command) to end (a
session's ``close()`` takes at most its ``close_timeout``, 5 s by default); then the process ends without them."""

_DONE = b"\x00"  # the worker's last byte on the wake-up socket (signal numbers are never 0)
_STOPPED = b"\xff"  # the stop actions' last byte (signal numbers are below 255)


class Interrupt:
    """Given to a command: what Ctrl-C does to it (its stop actions), and whether it came."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._actions: List[Callable[[], None]] = []
        self._signum: Optional[int] = None

    @property
    def signum(self) -> Optional[int]:
        """The signal that came (``None``: none yet)."""
        return self._signum

    @contextmanager
    def stopping(self, action: Callable[[], None]) -> Iterator[None]:
        """While the block runs, a signal calls ``action`` (on another thread; it must not raise, and must make
        the block end soon: close the session it waits on). A signal that came already calls it at once."""
        with self._lock:
            came = self._signum is not None
            if not came:
                self._actions.append(action)
        if came:
            action()
        try:
            yield
        finally:
            with self._lock:
                if action in self._actions:
                    self._actions.remove(action)

    def signaled(self, signum: int) -> List[Callable[[], None]]:
        """The signal came: return the stop actions registered now (later ones run at once, in ``stopping``)."""
        with self._lock:
            if self._signum is not None:
                return []
            self._signum = signum
            actions, self._actions = self._actions, []
        return actions


def _stop(actions: List[Callable[[], None]], wake: socket.socket) -> None:
    """Run the stop actions (a failure is logged: the command is ending anyway), then say so on ``wake``."""
    for action in actions:
        try:
            action()
        except Exception:
            logger.exception("while stopping the command")
    _send(wake, _STOPPED)


def _send(wake: socket.socket, byte: bytes) -> None:
    try:
        wake.send(byte)
    except OSError:  # the main thread stopped waiting and closed it
        pass


class _Shut:
    """Writes that pass to ``stream`` until :meth:`shut`, then vanish (an interrupted command prints no more)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.open = True

    def shut(self) -> None:
        self.open = False

    def write(self, text: str) -> int:
        if self.open:
            return self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        if self.open:
            self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


Work = Callable[[TextIO, TextIO, Interrupt], int]


def run_interruptible(
    work: Work, out: TextIO, err: TextIO, *, signals: Sequence[int] = (signal.SIGINT,), graceful: bool = False
) -> Tuple[Optional[int], Optional[int]]:
    """Run ``work(out, err, interrupt)`` on a worker thread while the main thread waits for it or a signal of
    ``signals``; return ``(status, signum)``: the status ``work`` returned and the signal that came (``None``:
    none). What ``work`` raised is raised here. Unless ``graceful``, ``work``'s output is shut when the signal
    comes and its outcome is not looked at (status ``None``); if ``graceful``, the status is ``None`` only if
    ``work`` had not ended when the wait did. Off the main thread (where no signal handler can be set),
    ``work`` runs right here."""
    interrupt = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        return work(out, err, interrupt), None
    shut = [_Shut(out), _Shut(err)]
    given = (out, err) if graceful else (cast(TextIO, shut[0]), cast(TextIO, shut[1]))
    worker = _Worker(work, given, interrupt)
    receive, wake = socket.socketpair()
    with receive, wake:
        wake.setblocking(False)
        receive.setblocking(False)
        with _signals_to(wake, signals):
            worker.start(wake)
            signum = _wait(receive, wake, interrupt, frozenset(signals), None if graceful else shut)
    if signum is not None and not graceful:
        return None, signum  # whatever the command did after the signal is not its outcome
    return worker.result(), signum


def _wait(
    receive: socket.socket,
    wake: socket.socket,
    interrupt: Interrupt,
    signals: FrozenSet[int],
    shut: Optional[List[_Shut]],
) -> Optional[int]:
    """Wait for the worker's end or one of ``signals`` (another signal with a Python handler also writes its
    number: ignored). On the first: shut ``shut`` and start the stop actions; then wait for the worker's end,
    or (unless graceful: ``shut`` is ``None``) the stop actions' end, at most :data:`STOP_WAIT` more. A second
    signal stops the wait."""
    signum: Optional[int] = None
    deadline: Optional[float] = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([receive], [], [], timeout)
        if not readable:  # STOP_WAIT passed
            logger.warning("the command did not stop within %ss of the signal; leaving it", STOP_WAIT)
            return signum
        for byte in _drain(receive):
            if byte == _DONE[0] or (byte == _STOPPED[0] and shut is not None):
                return signum
            if byte not in signals:
                continue
            if signum is not None:
                return signum  # a second signal: no more waiting
            signum = byte
            for stream in shut or ():
                stream.shut()
            actions = interrupt.signaled(signum)
            if not actions:
                return signum  # nothing to stop: what runs has nothing to undo (no session is connected)
            deadline = time.monotonic() + STOP_WAIT
            threading.Thread(target=_stop, args=(actions, wake), name="avatarsdk-cli-stop", daemon=True).start()


def _drain(receive: socket.socket) -> bytes:
    try:
        return receive.recv(64)
    except (BlockingIOError, InterruptedError):
        return b""


class _Worker:
    """The command's thread: keeps what it returned or raised, and writes :data:`_DONE` when it ends."""

    def __init__(self, work: Work, streams: Tuple[TextIO, TextIO], interrupt: Interrupt) -> None:
        self._work = work
        self._streams = streams
        self._interrupt = interrupt
        self._status: Optional[int] = None
        self._raised: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None

    def start(self, wake: socket.socket) -> None:
        self._thread = threading.Thread(target=self._run, args=(wake,), name="avatarsdk-cli", daemon=True)
        self._thread.start()

    def _run(self, wake: socket.socket) -> None:
        try:
            self._status = self._work(*self._streams, self._interrupt)
        except BaseException as exc:  # noqa: BLE001 - raised again on the main thread
            self._raised = exc
        finally:
            _send(wake, _DONE)

    def result(self) -> Optional[int]:
        """What the command returned (``None``: it has not ended); raises what it raised."""
        if self._raised is not None:
            raised, self._raised = self._raised, None
            raise raised
        return self._status


@contextmanager
def _signals_to(wake: socket.socket, signals: Sequence[int]) -> Iterator[None]:
    """While in the block: ``signals`` write their number to ``wake`` (from the C handler, so none is missed
    whatever thread it lands on) and raise nothing."""
    previous_fd = signal.set_wakeup_fd(wake.fileno())
    previous = [(signum, signal.signal(signum, _noticed)) for signum in signals]
    try:
        yield
    finally:
        for signum, handler in previous:
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)


def _noticed(signum: int, frame: Optional[FrameType]) -> None:
    """The Python-level handler: nothing (the wake-up byte carries the signal to the main thread's wait)."""
