"""Which request each message belongs to, without I/O: the session's request bookkeeping.

A request (``req_id``) is one utterance. :class:`RequestLedger` decides which request a chunk of audio or a
control message names, remembers the requests in flight (for a reconnect to fail them), the requests a drop cut
off, the ends already seen (egress mode can repeat one), and the pull requests' inboxes (frames are routed to
them by ``req_id``).

Locking: the request cursor (``current``, ``last``, ``has_audio``, the cut-off map) belongs to the senders and
is used with the session's send lock held; what the dispatcher also touches (requests in flight, ends seen,
inboxes) is guarded by the ledger's own lock, never held while calling out. Reading an inbox for a frame takes
no lock (one dict read).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Deque, Dict, List, Mapping, Optional, Tuple

from .errors import AvatarSDKError
from .logid import generate_log_id
from .request import RequestInbox

MAX_TRACKED_REQUESTS = 256  # requests in flight remembered for a reconnect (oldest forgotten first)
REMEMBERED_ENDS = 64  # recent requests whose last frame was delivered (a repeated end is ignored)


class RequestLedger:
    """The session's requests: the cursor of the senders and what the dispatcher routes by ``req_id``.

    Args:
        track: Remember the requests in flight (sessions that reconnect, and get frames back).
    """

    __slots__ = ("_cut", "_ended", "_in_flight", "_inboxes", "_lock", "current", "has_audio", "last", "track")

    def __init__(self, *, track: bool = False) -> None:
        self.track = track
        self.current: Optional[str] = None  # the request whose end=True chunk has not been sent yet
        self.last: Optional[str] = None  # the most recent request (interrupt, pause and resume name it)
        self.has_audio = False  # a chunk of the current request went out
        self._cut: Dict[str, AvatarSDKError] = {}  # requests the last drop cut off -> that drop's error
        self._lock = threading.Lock()
        self._in_flight: Dict[str, None] = {}  # audio sent, last frame not delivered yet (if track)
        self._ended: Deque[str] = deque(maxlen=REMEMBERED_ENDS)
        self._inboxes: Dict[str, RequestInbox] = {}  # open pull requests by req_id

    # ------------------------------------------------------------------ senders (send lock held)

    def check_cut(self, req_id: Optional[str], phase: str) -> None:
        """Before a chunk of ``req_id`` (a pull request's; ``None``: the current request): raise if a drop cut
        that request off (the next chunk then starts a new one).

        Raises:
            AvatarSDKError: the request was cut off; its frames will not come.
        """
        named = self.current if req_id is None else req_id
        if named is not None and named in self._cut:
            if self.current == named:
                self.current = None
            raise self.cut_error(named, phase)

    def chunk_target(self, req_id: Optional[str], op: str) -> str:
        """The request the next audio chunk belongs to: a pull request's ``req_id``, or (``None``) the current
        request or a new one, which becomes current (and the most recent).

        Raises:
            ValueError: ``req_id`` is over (its end was sent, or it was interrupted).
        """
        if req_id is None:
            self.current = req_id = self.current or generate_log_id()
        elif self.current != req_id:
            raise ValueError(f"{op}(): request {req_id} is over (its end=True chunk was sent, or it was interrupted)")
        self.last = req_id
        return req_id

    def chunk_sent(self, req_id: str, end: bool) -> None:
        """A chunk of ``req_id`` went out (``end``: its last)."""
        if self.track and not self.has_audio:
            with self._lock:
                self._in_flight[req_id] = None
                if len(self._in_flight) > MAX_TRACKED_REQUESTS:
                    del self._in_flight[next(iter(self._in_flight))]
        self.has_audio = not end
        if end:
            self.current = None

    def cut_off_control(self, *, ends_request: bool, phase: str) -> Optional[str]:
        """The most recent request, if a drop cut it off: a control message naming it has nothing to act on
        (its request is gone with its connection). An interrupt (``ends_request``) then only ends it here.

        Raises:
            AvatarSDKError: the request was cut off, and the message is not an interrupt.
        """
        named = self.last
        if named is None or named not in self._cut:
            return None
        if not ends_request:
            raise self.cut_error(named, phase)
        if self.current == named:
            self.current = None
        self.last = None
        return named

    def ended_by_client(self, req_id: str) -> None:
        """An interrupt of ``req_id`` went out: the next chunk starts a new request."""
        if self.current == req_id:
            self.current = None
            self.has_audio = False
        with self._lock:
            self._in_flight.pop(req_id, None)

    def open(self, op: str, req_id: str, inbox: RequestInbox) -> None:
        """Make ``req_id`` (a new pull request's) the current request, and route its frames to ``inbox`` from
        now on.

        Raises:
            ValueError: another request is still open (its end not sent yet; one a drop cut off is gone).
        """
        if self.current is not None and self.current not in self._cut:
            raise ValueError(
                f"{op}(): request {self.current} is still open; send its end=True chunk or interrupt() it first"
            )
        with self._lock:
            self._inboxes[req_id] = inbox
        self.current = self.last = req_id
        self.has_audio = False

    def cut_error(self, req_id: str, phase: str) -> AvatarSDKError:
        """The error of request ``req_id``, cut off by a drop."""
        cause = self._cut[req_id]
        return cause._derive(
            f"request {req_id} was cut off when the connection dropped ({cause.message}); its frames will not"
            " come: send its audio again",
            phase=phase,
            req_id=req_id,
            retryable=True,
        )

    def drop(self, cause: AvatarSDKError) -> Tuple[str, ...]:
        """The connection dropped and a reconnect follows: the requests in flight (and the current one) are cut
        off by ``cause``; return their ids. The new connection knows no request."""
        with self._lock:
            cut = list(self._in_flight)
            self._in_flight.clear()
        current = self.current
        if current is not None and current not in cut:
            cut.append(current)
        self._cut = dict.fromkeys(cut, cause)
        if self.last not in self._cut:
            self.last = None
        self.has_audio = False
        return tuple(cut)

    # ------------------------------------------------------------------------------- any thread

    def release(self, req_id: str, *, abandoned: bool) -> None:
        """A pull request is done (or ``abandoned`` before its last frame): stop routing frames to it."""
        with self._lock:
            self._inboxes.pop(req_id, None)
            if abandoned:
                self._in_flight.pop(req_id, None)

    # ------------------------------------------------------------------------------- dispatcher

    def frame_ended(self, req_id: str) -> bool:
        """The last frame of ``req_id`` arrived: ``False`` if its end was already seen (a repeat to ignore)."""
        with self._lock:
            if req_id in self._ended:
                return False
            self._ended.append(req_id)
            self._in_flight.pop(req_id, None)
        return True

    @property
    def routes(self) -> Mapping[str, RequestInbox]:
        """The open pull requests' inboxes by ``req_id``, live: the dispatcher reads it once per frame, without
        the lock (one dict read); only the ledger changes it."""
        return self._inboxes

    def inbox(self, req_id: str) -> Optional[RequestInbox]:
        """The pull request following ``req_id`` (``None`` if none)."""
        return self._inboxes.get(req_id) if self._inboxes else None

    def inboxes(self) -> List[RequestInbox]:
        """Every open pull request's inbox."""
        with self._lock:
            return list(self._inboxes.values())

    def in_flight(self) -> Tuple[str, ...]:
        """The requests whose audio went out and whose last frame has not arrived (when tracked)."""
        with self._lock:
            return tuple(self._in_flight)
