"""The ``avatarsdk`` command (also ``python -m avatarsdk``): the top-level parser and its subcommands, one
module each (``demo``, ``send``, ``serve_local``, ``token``), with what they share in ``common``.

Exit status: 0 on success, 1 when the service (or the network) fails, 2 for a usage error (arguments,
credentials, files), 130 on Ctrl-C. A failure prints one line, ``error: <code>: <message> (hint: ...)``,
on stderr (``demo`` prints everything on stdout). Secrets (the API key, session tokens) are never printed,
except the token by ``token --show``.
"""

from __future__ import annotations

import argparse
import logging
from typing import List, Optional, Protocol, TextIO

from .. import __version__
from . import demo, send, serve_local, token
from .common import EXIT_INTERRUPTED, EXIT_OK, EXIT_SERVICE, EXIT_USAGE, guarded

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SERVICE", "EXIT_USAGE", "main"]


class _Command(Protocol):
    """A command module (``send``, ``serve_local``, ``token``); ``demo`` registers itself."""

    NAME: str
    HELP: str
    DESCRIPTION: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> int: ...


COMMANDS: List[_Command] = [send, serve_local, token]


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="avatarsdk",
        description="avatarsdk command line",
        epilog="Credentials come from flags or AVATARSDK_API_KEY, AVATARSDK_APP_ID, AVATARSDK_AVATAR_ID, "
        "AVATARSDK_CONSOLE_URL and AVATARSDK_INGRESS_URL; --local (or AVATARSDK_LOCAL=1) uses the built-in "
        f"stand-in. Exit status: {EXIT_OK} ok, {EXIT_SERVICE} service error, {EXIT_USAGE} usage error.",
    )
    parser.add_argument("--version", action="version", version=f"avatarsdk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the SDK's debug logs")
    # --verbose also after the subcommand; SUPPRESS keeps it from resetting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show the SDK's debug logs"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_parser(subparsers)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, parents=[common], help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(sub)
        sub.set_defaults(func=guarded(command.run))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    # The stand-in's server library logs request headers (session tokens among them) at DEBUG.
    logging.getLogger("websockets").setLevel(logging.INFO if args.verbose else logging.WARNING)
    status: int = args.func(args)
    return status
