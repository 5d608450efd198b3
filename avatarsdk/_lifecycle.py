"""A session's lifecycle without I/O: its states, the transitions allowed between them, and how it ended.

:class:`Lifecycle` is the one place a session's state changes (:meth:`Lifecycle.move`, checked against
:data:`TRANSITIONS`). It holds no lock: the session calls it with its state lock held. The thread that moves a
session to ``CLOSED`` is its finisher, and runs ``on_close``: every end passes through ``CLOSING``, and the
table allows the move from there to ``CLOSED`` once.
"""

from __future__ import annotations

import enum
from typing import Dict, FrozenSet, Optional

from .errors import AvatarSDKError


class State(enum.Enum):
    NEW = "new"
    INITIALIZED = "initialized"  # a token is held
    STARTING = "starting"  # connecting and handshaking
    STARTED = "started"
    RECONNECTING = "reconnecting"  # the connection dropped; a reconnect is under way
    CLOSING = "closing"  # ending: close() was called, or the connection ended for good
    CLOSED = "closed"  # on_close has run (or is running, on the finisher's thread)


S = State

#: Which state may follow which. Every change of state goes through :meth:`Lifecycle.move`, which checks it.
TRANSITIONS: Dict[State, FrozenSet[State]] = {
    S.NEW: frozenset({S.INITIALIZED, S.CLOSING}),
    S.INITIALIZED: frozenset({S.INITIALIZED, S.STARTING, S.CLOSING}),
    S.STARTING: frozenset({S.STARTED, S.INITIALIZED, S.CLOSING}),  # INITIALIZED: the start failed
    S.STARTED: frozenset({S.RECONNECTING, S.CLOSING}),
    S.RECONNECTING: frozenset({S.STARTED, S.CLOSING}),
    S.CLOSING: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
}

#: The states in which ``close()`` has nothing left to begin.
ENDING = frozenset({S.CLOSING, S.CLOSED})


class IllegalTransition(RuntimeError):
    """A move the table does not allow: a bug in the SDK, never the user's doing."""


class Lifecycle:
    """The state of one session, and what ended it.

    Attributes:
        state: The current :class:`State`.
        closed_by_user: ``close()`` began the end (it is then never reported to ``on_error``).
        end_error: The fault that ended the session (``None``: ``close()``, or a normal close by the server).
    """

    __slots__ = ("closed_by_user", "end_error", "state")

    def __init__(self) -> None:
        self.state = S.NEW
        self.closed_by_user = False
        self.end_error: Optional[AvatarSDKError] = None

    def __repr__(self) -> str:
        return f"<Lifecycle {self.state.value}{' closed by user' if self.closed_by_user else ''}>"

    def move(self, to: State) -> None:
        """Change the state to ``to``; raise :class:`IllegalTransition` if the table does not allow it."""
        if to not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"a session cannot go from {self.state.value} to {to.value}")
        self.state = to

    def request_close(self) -> Optional[State]:
        """``close()`` was called: move to ``CLOSING`` and return the state it left, or ``None`` if the session
        was already ending (then another thread finishes it)."""
        left = self.state
        if left in ENDING:
            return None
        self.closed_by_user = True
        self.move(S.CLOSING)
        return left

    def ended(self, error: Optional[AvatarSDKError]) -> None:
        """The connection ended for good (no reconnect): move to ``CLOSING`` unless ``close()`` already did, and
        keep the fault that ended it."""
        if self.state is not S.CLOSING:
            self.move(S.CLOSING)
        if error is not None:
            self.end_error = error

    def abandon(self) -> None:
        """In a forked child of the process that made the session: ``CLOSED`` at once, without ``on_close`` (the
        parent's threads own the session; no lock may be taken, and nothing here takes one)."""
        self.state = S.CLOSED

    def require(self, op: str, *allowed: State) -> None:
        """Raise ``ValueError`` naming ``op`` unless the state is one of ``allowed``."""
        state = self.state
        if state in allowed:
            return
        if state in ENDING:
            raise ValueError(f"{op}(): the session is closed")
        if state in (S.STARTING, S.STARTED, S.RECONNECTING):
            raise ValueError(f"{op}(): the session is already started")
        raise ValueError(f"{op}(): call init() first")
