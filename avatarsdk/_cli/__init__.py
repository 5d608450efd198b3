"""The ``avatarsdk`` command (also ``python -m avatarsdk``): the top-level parser and its subcommands, one
module each (``demo``, ``send``, ``serve_local``, ``token``), with what they share in ``common``.

The common options (``-v``, ``--local``, ``--ca-bundle``, ``--insecure``: ``common.COMMON_OPTIONS``) are
taken before or after the command name by every command, with the same meaning; ``serve-local`` connects
nowhere and refuses the TLS ones (in either place).

Exit status: 0 on success, 1 when the service (or the network) fails or the output cannot be written (a full
disk), 2 for a usage error (arguments, credentials, files), 130 on Ctrl-C, 141 when the output's reader went
away (``| head``: quietly, as SIGPIPE ends other tools). A failure prints one line, ``error: <code>: <message>
(hint: ...)``, on stderr (``demo`` prints its errors on stdout). Secrets (the API key, session tokens) are
never printed, except the token by ``token --show``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional, Protocol, TextIO

from .. import __version__
from . import demo, send, serve_local, token
from .common import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_USAGE,
    OutputError,
    add_common_options,
    flush_output,
    guarded,
    output_failed,
    say,
)
from .interrupt import Interrupt

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SERVICE", "EXIT_USAGE", "main"]


class _Command(Protocol):
    """A command module."""

    NAME: str
    HELP: str
    DESCRIPTION: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace, out: TextIO, err: TextIO, interrupt: Interrupt) -> int: ...


COMMANDS: List[_Command] = [demo, send, serve_local, token]
LOCAL_ONLY = {serve_local.NAME}  # commands that connect nowhere: no TLS options
GRACEFUL = {serve_local.NAME}  # commands that stop as they choose on Ctrl-C or SIGTERM (``guarded``)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit status."""
    try:
        try:
            return _main(argv)
        finally:
            flush_output()  # what is still buffered (help) fails here, not in the interpreter's exit
    except OutputError as exc:
        return output_failed(exc)
    except KeyboardInterrupt:  # outside a command (their own Ctrl-C is theirs), or a second one
        try:
            say(sys.stderr, "interrupted")
        except OutputError:
            pass
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatarsdk",
        description="avatarsdk command line",
        epilog="Credentials come from flags or AVATARSDK_API_KEY, AVATARSDK_APP_ID, AVATARSDK_AVATAR_ID, "
        "AVATARSDK_CONSOLE_URL and AVATARSDK_INGRESS_URL; --local (or AVATARSDK_LOCAL=1) uses the built-in "
        "stand-in. The common options may also follow the command name. Exit status: "
        f"{EXIT_OK} ok, {EXIT_SERVICE} service error, {EXIT_USAGE} usage error, {EXIT_INTERRUPTED} Ctrl-C.",
    )
    parser.add_argument("--version", action="version", version=f"avatarsdk {__version__}")
    add_common_options(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(sub)
        add_common_options(sub, top=False)
        sub.set_defaults(func=guarded(command.run, graceful=command.NAME in GRACEFUL))
    return parser


def _main(argv: Optional[List[str]]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command in LOCAL_ONLY and (args.ca_bundle or args.insecure):
        flag = "--ca-bundle" if args.ca_bundle else "--insecure"
        say(sys.stderr, f"error: {flag}: {args.command} serves the stand-in and connects nowhere")
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    # The stand-in's server library logs request headers (session tokens among them) at DEBUG.
    logging.getLogger("websockets").setLevel(logging.INFO if args.verbose else logging.WARNING)
    status: int = args.func(args)
    return status
