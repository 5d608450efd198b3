"""Command line: ``python -m avatarsdk demo``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from . import __version__, _demo


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="avatarsdk", description="avatarsdk command line")
    parser.add_argument("--version", action="version", version=f"avatarsdk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the SDK's debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _demo.add_parser(subparsers)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    if not args.verbose:
        logging.getLogger("websockets").setLevel(logging.WARNING)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
