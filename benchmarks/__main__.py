"""``python -m benchmarks`` (the comparison), ``python -m benchmarks soak`` (the soak), ``python -m benchmarks
big-file`` (``avatarsdk send`` of a long file) or ``python -m benchmarks joins`` (join latency over a slow
link): see the README."""

from __future__ import annotations

import sys

from .run import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["joins"]:
        from .joins import main as joins

        sys.exit(joins(sys.argv[2:]))
    if sys.argv[1:2] == ["soak"]:
        from .soak import main as soak

        sys.exit(soak(sys.argv[2:]))
    if sys.argv[1:2] == ["big-file"]:
        from .big_file import main as big_file

        sys.exit(big_file(sys.argv[2:]))
    sys.exit(main())
