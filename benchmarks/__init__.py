"""The avatarsdk performance benchmark (not part of the package): run it with ``python -m benchmarks``."""
