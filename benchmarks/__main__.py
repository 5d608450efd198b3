"""``python -m benchmarks`` (the comparison) or ``python -m benchmarks soak`` (the soak): see the README."""

from __future__ import annotations

import sys

from .run import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["soak"]:
        from .soak import main as soak

        sys.exit(soak(sys.argv[2:]))
    sys.exit(main())
