"""``python -m avatarsdk`` and the ``avatarsdk`` console script; the command line is in ``avatarsdk._cli``."""

from __future__ import annotations

import sys

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
