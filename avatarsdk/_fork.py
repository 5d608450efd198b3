"""Fork detection: a session's socket and threads belong to the process that made them.

After ``os.fork()`` the child has a copy of each socket (shared with the parent's) and none of the threads.
Objects remember :func:`process_generation` when made and compare it with the current one (an int, no
system call) before using what the parent left them.
"""

from __future__ import annotations

import os

_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)


def process_generation() -> int:
    """How many forks separate this process from the one that imported avatarsdk (the same in a process and in
    every thread of it, different in each forked child)."""
    return _forks
