"""The command line's Ctrl-C: a command runs on a worker thread while the main thread waits in ``select()`` on the
signal wake-up socket (``avatarsdk._cli.interrupt``). Real signals, sent to this process or to one thread."""

from __future__ import annotations

import io
import os
import signal
import threading
from typing import Iterator, List, Optional, TextIO

import pytest

from avatarsdk._cli.interrupt import Interrupt, run_interruptible

WAIT = 30.0  # what a blocked command would sit out without the stop: the tests fail long before it passes


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of each test, so that no command thread is left waiting."""
    event = threading.Event()
    yield event
    event.set()


def test_a_signal_on_another_thread_wakes_the_main_thread_and_stops_the_command() -> None:
    """The signal lands on the worker thread (not the main thread, whose wait it does not interrupt): its C
    handler's byte on the wake-up socket is enough. The stop action ends the command's wait; what the command
    prints after the signal is not printed; the outcome is the signal."""
    stopped, finished = threading.Event(), threading.Event()
    woken: List[bool] = []

    def work(out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
        with interrupt.stopping(stopped.set):
            out.write("before\n")
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            woken.append(stopped.wait(WAIT))
            out.write("after\n")
            err.write("error: the session was closed\n")
        finished.set()
        return 1

    out, err = io.StringIO(), io.StringIO()
    assert run_interruptible(work, out, err) == (None, signal.SIGINT)
    assert finished.wait(WAIT) and woken == [True]
    assert out.getvalue() == "before\n"
    assert err.getvalue() == ""


def test_once_its_stop_is_done_the_command_is_not_waited_for(release: threading.Event) -> None:
    """The stop (a session's close()) undid what costs; a call that cannot be cut (a token call) ends with the
    process."""
    stops: List[str] = []

    def work(out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
        with interrupt.stopping(lambda: stops.append("close")):
            os.kill(os.getpid(), signal.SIGINT)
            release.wait(WAIT)  # the token call, still waiting for its answer
        return 0

    assert run_interruptible(work, io.StringIO(), io.StringIO()) == (None, signal.SIGINT)
    assert stops == ["close"] and not release.is_set()


def test_a_second_signal_stops_waiting_for_a_stop_that_hangs(release: threading.Event) -> None:
    """The stop actions run on a thread of their own: a second Ctrl-C is noticed while one still runs."""
    started = threading.Event()

    def hanging_stop() -> None:
        started.set()
        os.kill(os.getpid(), signal.SIGINT)  # the second one
        release.wait(WAIT)

    def work(out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
        with interrupt.stopping(hanging_stop):
            os.kill(os.getpid(), signal.SIGINT)
            release.wait(WAIT)
        return 0

    assert run_interruptible(work, io.StringIO(), io.StringIO()) == (None, signal.SIGINT)
    assert started.is_set() and not release.is_set()  # returned while the stop still ran


def test_with_nothing_to_stop_the_wait_ends_at_once(release: threading.Event) -> None:
    """No stop action registered (a token call, files being checked): nothing connected to undo, no wait."""

    def work(out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
        os.kill(os.getpid(), signal.SIGINT)
        release.wait(WAIT)
        return 0

    assert run_interruptible(work, io.StringIO(), io.StringIO()) == (None, signal.SIGINT)
    assert not release.is_set()


def test_a_graceful_command_ends_as_it_chooses_on_sigterm() -> None:
    stop = threading.Event()

    def work(out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
        with interrupt.stopping(stop.set):
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(WAIT)
        out.write("stopped\n")
        return 0

    out = io.StringIO()
    signals = (signal.SIGINT, signal.SIGTERM)
    assert run_interruptible(work, out, io.StringIO(), signals=signals, graceful=True) == (0, signal.SIGTERM)
    assert out.getvalue() == "stopped\n"


def test_other_signals_with_a_handler_do_not_stop_the_command() -> None:
    """Every signal with a Python handler writes to the wake-up socket; only the command's own count."""
    seen: List[int] = []
    handled = threading.Event()

    def handler(signum: int, frame: object) -> None:
        seen.append(signum)
        handled.set()

    previous = signal.signal(signal.SIGUSR1, handler)
    try:

        def work(out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert handled.wait(WAIT)  # the main thread ran the handler, and went on waiting
            out.write("done\n")
            return 7

        out = io.StringIO()
        assert run_interruptible(work, out, io.StringIO()) == (7, None)
        assert out.getvalue() == "done\n" and seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_what_the_command_raises_is_raised_on_the_main_thread() -> None:
    def work(out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_interruptible(work, io.StringIO(), io.StringIO())


def test_handlers_and_the_wake_up_fd_are_restored() -> None:
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    assert run_interruptible(lambda out, err, interrupt: 3, io.StringIO(), io.StringIO()) == (3, None)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert signal.set_wakeup_fd(fd) == fd


def test_off_the_main_thread_the_command_runs_in_place() -> None:
    ran_on: List[Optional[threading.Thread]] = []
    results: List[object] = []

    def work(out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
        ran_on.append(threading.current_thread())
        return 5

    caller = threading.Thread(target=lambda: results.append(run_interruptible(work, io.StringIO(), io.StringIO())))
    caller.start()
    caller.join(WAIT)
    assert results == [(5, None)] and ran_on == [caller]


def test_a_stop_registered_after_the_signal_runs_at_once() -> None:
    interrupt = Interrupt()
    assert interrupt.signaled(signal.SIGINT) == []
    ran: List[str] = []
    with interrupt.stopping(lambda: ran.append("stop")):
        assert ran == ["stop"]
    assert interrupt.signum == signal.SIGINT
    assert interrupt.signaled(signal.SIGINT) == []  # the first signal only
