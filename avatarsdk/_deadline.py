"""A point in time that several blocking steps share (``None``: no limit), as the ``websockets`` library does."""

from __future__ import annotations

import time
from typing import Optional


class Deadline:
    """``timeout`` seconds from now (``None``: never); each wait asks :meth:`remaining` what is left."""

    __slots__ = ("_until",)

    def __init__(self, timeout: Optional[float]) -> None:
        self._until = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> Optional[float]:
        """Seconds left (0 once passed), or ``None`` for no limit."""
        if self._until is None:
            return None
        return max(0.0, self._until - time.monotonic())

    def lock_timeout(self) -> float:
        """:meth:`remaining` as ``Lock.acquire`` takes it (``-1``: no limit)."""
        left = self.remaining()
        return -1 if left is None else left

    def passed(self) -> bool:
        return self._until is not None and time.monotonic() >= self._until

    def extended(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` after this one (still none if this has none)."""
        later = Deadline(None)
        later._until = None if self._until is None else self._until + seconds
        return later
