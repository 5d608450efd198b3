"""Playback state of the service's newer generation: what ``on_playback_state`` and pull requests receive."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["PlaybackState", "PlaybackStatus"]


class PlaybackStatus(str, Enum):
    """Where the avatar's playback of a request is."""

    UNSPECIFIED = "unspecified"
    PLAYING = "playing"
    PAUSED = "paused"
    ENDED = "ended"
    INTERRUPTED = "interrupted"


_BY_WIRE = {0: PlaybackStatus.UNSPECIFIED, 1: PlaybackStatus.PLAYING, 2: PlaybackStatus.PAUSED,
            3: PlaybackStatus.ENDED, 4: PlaybackStatus.INTERRUPTED}  # fmt: skip


@dataclass(frozen=True)
class PlaybackState:
    """A SERVER_PLAYBACK_STATE message: each ``pause()``/``resume()`` is answered with one.

    Attributes:
        req_id: The request it is about.
        status: :class:`PlaybackStatus`.
        played_ms: Milliseconds of the request played so far.
        reason: Why, when the service says: ``"explicit"``, ``"preempted"`` or ``"pause_timeout"``.
        connection_id: The connection it came on.
    """

    req_id: str
    status: PlaybackStatus
    played_ms: int
    reason: str
    connection_id: str

    @classmethod
    def from_wire(cls, req_id: str, state: int, played_ms: int, reason: str, connection_id: str) -> PlaybackState:
        return cls(req_id, _BY_WIRE.get(state, PlaybackStatus.UNSPECIFIED), played_ms, reason, connection_id)
