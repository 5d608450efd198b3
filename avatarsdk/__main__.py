"""Command line: ``avatarsdk`` (or ``python -m avatarsdk``) with ``demo``, ``send``, ``serve-local``, ``token``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from . import __version__, _cli, _demo


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="avatarsdk",
        description="avatarsdk command line",
        epilog="Credentials come from flags or AVATARSDK_API_KEY, AVATARSDK_APP_ID, AVATARSDK_AVATAR_ID, "
        "AVATARSDK_CONSOLE_URL and AVATARSDK_INGRESS_URL; --local (or AVATARSDK_LOCAL=1) uses the built-in "
        "stand-in. Exit status: 0 ok, 1 service error, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"avatarsdk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the SDK's debug logs")
    # --verbose also after the subcommand; SUPPRESS keeps it from resetting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show the SDK's debug logs"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _demo.add_parser(subparsers)
    _cli.add_parsers(subparsers, common)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    # The stand-in's server library logs request headers (session tokens among them) at DEBUG.
    logging.getLogger("websockets").setLevel(logging.INFO if args.verbose else logging.WARNING)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
