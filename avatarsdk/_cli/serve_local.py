"""``avatarsdk serve-local``: run the built-in stand-in service until Ctrl-C or SIGTERM, after printing its URLs
and credentials as ``export`` lines."""

from __future__ import annotations

import argparse
import shlex
import threading
from typing import TextIO

from .common import ENV_VARS, EXIT_OK, UsageError, fake_service, say
from .interrupt import Interrupt


def run(args: argparse.Namespace, out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
    """``avatarsdk serve-local``: run the stand-in until Ctrl-C or SIGTERM, after printing how to reach it."""
    for name, value in (("--port", args.port), ("--console-port", args.console_port)):
        if not 0 <= value <= 65535:
            raise UsageError(f"{name}: expected a port from 0 (any free one) to 65535, got {value}")
    stop = threading.Event()
    with interrupt.stopping(stop.set):  # Ctrl-C or SIGTERM (a graceful command: ``guarded``)
        try:
            service = fake_service(port=args.port, console_port=args.console_port).start()
        except OSError as exc:
            raise UsageError(f"cannot listen on 127.0.0.1 ({exc.strerror or exc})") from exc
        with service:
            say(
                out,
                "avatarsdk stand-in service running (Ctrl-C or SIGTERM stops it)",
                f"  console  {service.console_url}",
                f"  ingress  {service.ingress_url}",
                "credentials (its own test values; paste into a shell to use them):",
                *(f"export {ENV_VARS[name]}={shlex.quote(value)}" for name, value in service.credentials().items()),
                "ready",
            )
            stop.wait()
    say(out, "stopped")
    return EXIT_OK


NAME = "serve-local"
HELP = "run the built-in stand-in service and print its URLs and credentials"
DESCRIPTION = "Runs avatarsdk.testing.FakeAvatarService (testing extra) until Ctrl-C or SIGTERM."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``serve-local``'s arguments."""
    parser.add_argument("--port", type=int, default=0, help="ingress port (default 0: a free one)")
    parser.add_argument("--console-port", type=int, default=0, help="console port (default 0: a free one)")
