"""SessionPool: started sessions shared by the worker threads of a threaded WSGI server.

A relay backend (gunicorn ``gthread``, waitress, mod_wsgi, Django's runserver) sends each utterance on a
session that is already started, so no request pays for the token call, the connect and the handshake::

    pool = SessionPool(avatar_id=..., api_key=..., app_id=..., console_endpoint_url=...,
                       ingress_endpoint_url=..., max_size=8, min_idle=2)

    with pool.session(timeout=5) as session:          # one utterance at a time per session
        frames = session.collect(pcm)

    @app.post("/speak")                                # Flask: the frames stream into the response
    def speak():
        frames = pool.stream(request.get_data(), frame_timeout=5)
        response = Response((f.data for f in frames), mimetype="application/octet-stream")
        response.call_on_close(frames.close)  # the client left: the session comes back at once

How it works, and why:

- **Where sessions are made.** A borrower that finds no idle session while the pool holds fewer than
  ``max_size`` sessions creates one itself (``init()`` + ``start()``), in its own thread and outside the
  pool's lock, so a slow start delays only that borrower. If the start fails, its error is raised to that
  borrower and the slot is freed. The maintenance thread (below) makes the warm ones. Sessions being started
  or being closed count against ``max_size``, so the service never sees more than ``max_size`` connections
  from one pool (its concurrency limit is per account).
- **Waiting.** A borrower that finds every slot taken waits on the pool's condition (no polling) until a
  session is returned or a slot frees, at most its timeout (:class:`PoolTimeoutError`). Waiting borrowers
  are served first come, first served; one arriving while others wait queues behind them.
- **LIFO.** Idle sessions are lent most recently returned first. Under light load a few sessions stay hot
  (their sockets are the ones most recently seen working) and the surplus after a burst stays idle until
  its refresh time, when it is closed and not replaced (unless ``min_idle`` asks for it): the pool shrinks
  back to what the load needs. FIFO would keep every session busy in turn and never let the pool shrink.
- **Health.** A session is never lent when it has ended (``closed``: the server or the network ended it),
  when it reported an error to ``on_error`` (the pool wraps each session's ``on_close`` and ``on_error``;
  even an error the session survives makes it suspect, and a new session costs one round trip set), when
  its borrower's ``with`` block raised an :class:`~avatarsdk.AvatarSDKError`, or when its token is within
  ``refresh_margin`` of expiring. An idle session the server closes is removed at once (its ``on_close``
  tells the pool). Such sessions are counted in ``stats().discarded``.
- **Refresh.** Each session asks for a token valid ``token_lifetime`` seconds. ``refresh_margin`` seconds
  before that, an idle session is closed by the maintenance thread (and replaced if ``min_idle`` asks for
  it); a lent session is never interrupted: it is replaced when it is returned. The service counts the
  expiry in whole seconds (the token call sends an integer), so keep ``refresh_margin`` above a second
  plus the time a session needs to start.
- **Maintenance thread** ``avatarsdk-pool-N``: it starts when there is work for it (at creation when
  ``min_idle > 0``, otherwise when a session first goes idle) and runs until ``close()``, asleep on the
  pool's condition until the next refresh time or until something changes: no polling. It keeps
  ``min_idle`` sessions idle (within ``max_size``), one start at a time, backing off (1 s doubling to 30 s)
  after a failed start, whose error also goes to ``on_error``.
  ``close()`` joins it.
- **Returning.** A request the borrower left open (audio sent without ``end=True``, seen in the session's
  ``current_req_id``) is interrupted before the session goes back idle.
- **Fork.** A pool used in a child process of the one that made it (a pre-fork server with ``--preload``)
  starts over in the child with an empty pool state and new locks (the parent's may have been held at the
  fork), and logs that at INFO; sessions inherited from the parent are released with their ``close()``,
  which in a child only closes the child's copy of the socket. The parent's sessions and their connections
  are never used by the child.
- **Exit.** An unclosed pool is closed at interpreter exit (through a ``WeakSet``: the exit hook does not
  keep a pool alive; a pool's open sessions and its maintenance thread do).

Thread-safety: every method may be called from any thread. Each lent session is for its borrower alone
until it is returned.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, ContextManager, Deque, Generator, List, Optional, Set, Tuple, Type, Union, cast

from ._backoff import Backoff
from ._config_checks import check_audio, check_config, copy_config
from ._dispatch import safe_call
from ._fork import process_generation
from ._ingress import ingress_for
from ._network import warn_insecure_transport
from ._options import Options, SessionOptions
from ._sender import AudioOut
from ._validation import check_int, check_timeout
from .avatar_session import DEFAULT_CHUNK_MS, DEFAULT_FRAME_TIMEOUT, AvatarSession
from .errors import AvatarSDKError, AvatarSDKErrorCode
from .request import Frame
from .session_config import (
    AgoraEgressConfig,
    AudioFormat,
    EncodedAudioCallback,
    ErrorCallback,
    LiveKitEgressConfig,
    OggOpusEncoderConfig,
    PlaybackStateCallback,
    ReconnectCallback,
    SessionConfig,
    TransportFramesCallback,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["PoolStats", "PoolTimeoutError", "SessionPool"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 8
DEFAULT_TOKEN_LIFETIME = 3600.0
DEFAULT_REFRESH_MARGIN = 300.0
DEFAULT_BORROW_TIMEOUT = 30.0
DEFAULT_CLOSE_WAIT = 10.0
MAX_TOKEN_LIFETIME = 86400.0
# The maintenance thread's pause after failed starts: 1 s, doubling to at most 30 s, without limit.
_START_BACKOFF = Backoff(initial=1.0, cap=30.0, multiplier=2.0, jitter=0.0)
_EXIT_WAIT = 5.0  # seconds the exit hook waits for lent sessions before closing them

_pool_numbers = itertools.count(1)
_live_pools: weakref.WeakSet[SessionPool] = weakref.WeakSet()
_fork_lock = threading.Lock()  # serialises the reset of a pool in a forked child (made anew in each child)


def _new_fork_lock() -> None:
    global _fork_lock
    _fork_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_fork_lock)


class PoolTimeoutError(AvatarSDKError, TimeoutError):
    """No session could be borrowed within the borrow timeout: all ``max_size`` sessions were in use.

    Its ``code`` is ``timeout`` and ``retryable`` is ``True``; it is also a builtin ``TimeoutError``.
    """


@dataclasses.dataclass(frozen=True)
class PoolStats:
    """A snapshot of a :class:`SessionPool`.

    Attributes:
        idle: Started sessions waiting to be lent.
        in_use: Sessions lent to borrowers now.
        creating: Sessions being started now (by borrowers or the maintenance thread).
        created: Sessions started successfully so far.
        discarded: Sessions dropped because they ended, failed, or were due for a new token (sessions closed
            by ``close()`` are not counted).
        waits: Borrows that had to wait for a session to be returned.
        timeouts: Borrows that gave up (:class:`PoolTimeoutError`).
        failed: Session starts that raised (the borrower got the error, or the maintenance thread logged it).
    """

    idle: int
    in_use: int
    creating: int
    created: int
    discarded: int
    waits: int
    timeouts: int
    failed: int


class _Entry:
    """A session the pool owns, with what the pool knows about it."""

    __slots__ = ("failure", "from_idle", "generation", "refresh_at", "session")

    session: AvatarSession

    def __init__(self, refresh_at: float, generation: int) -> None:
        self.refresh_at = refresh_at  # time.monotonic() from which it is due for a new token
        self.generation = generation  # the process generation it was made in
        self.failure: Optional[str] = None  # why it must not be lent again (set by its callbacks)
        self.from_idle = False  # lent from the idle set (not started for this borrower)


class SessionPool:
    """A thread-safe pool of started :class:`~avatarsdk.AvatarSession` objects, lent one utterance at a time.

    Nothing is sent when the pool is made (unless ``min_idle`` asks for warm sessions, which the maintenance
    thread then starts); sessions are created on demand up to ``max_size``. See the module documentation
    for how sessions are created, checked, refreshed and shared.

    Thread-safety: every method may be called from any thread. A lent session belongs to its borrower
    until it is returned; ``transport_frames`` and ``on_error`` run on the sessions' dispatcher threads.

    Args:
        avatar_id, api_key, app_id, console_endpoint_url, ingress_endpoint_url: As for
            :func:`~avatarsdk.new_avatar_session`.
        max_size: Most sessions (lent, idle, starting or closing) at once.
        min_idle: Sessions the maintenance thread keeps started and idle (within ``max_size``); 0 for none.
        token_lifetime: Seconds each session's token is asked for (1 to 86400).
        refresh_margin: A session is replaced this many seconds before its token expires (0 or more, less
            than ``token_lifetime``); a lent one when it is returned.
        borrow_timeout: Default seconds :meth:`session` and :meth:`stream` wait for a session (``None``:
            no limit).
        use_query_auth, sample_rate, bitrate, audio_format, ogg_opus_encoder, livekit_egress, agora_egress:
            Every session's configuration, as for :func:`~avatarsdk.new_avatar_session`.
        transport_frames: Receives every frame of every session (``None``: use the pull API).
        on_error: Receives every session's errors, and the errors of starts made by the maintenance thread.
        on_playback_state, on_encoded_audio, on_reconnect: Every session's, as for
            :func:`~avatarsdk.new_avatar_session`.
        options: Every session's options (:class:`~avatarsdk.SessionOptions`: timeouts, limits, network
            settings, reconnect policy, dispatcher), as for :class:`~avatarsdk.AvatarSession`. A lent session
            that reconnects goes on serving its borrower; like any session that reported an error, it is
            replaced when returned. The pool does not close a ``dispatcher`` it is given.

    Raises:
        TypeError, ValueError: an argument is invalid (the message names it); nothing has been sent.
    """

    def __init__(
        self,
        *,
        avatar_id: str,
        api_key: str,
        app_id: str,
        console_endpoint_url: str,
        ingress_endpoint_url: str,
        max_size: int = DEFAULT_MAX_SIZE,
        min_idle: int = 0,
        token_lifetime: float = DEFAULT_TOKEN_LIFETIME,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        borrow_timeout: Optional[float] = DEFAULT_BORROW_TIMEOUT,
        use_query_auth: bool = False,
        sample_rate: int = 16000,
        bitrate: int = 0,
        audio_format: Union[AudioFormat, str] = AudioFormat.PCM_S16LE,
        ogg_opus_encoder: Optional[OggOpusEncoderConfig] = None,
        livekit_egress: Optional[LiveKitEgressConfig] = None,
        agora_egress: Optional[AgoraEgressConfig] = None,
        transport_frames: Optional[TransportFramesCallback] = None,
        on_error: Optional[ErrorCallback] = None,
        on_playback_state: Optional[PlaybackStateCallback] = None,
        on_encoded_audio: Optional[EncodedAudioCallback] = None,
        on_reconnect: Optional[ReconnectCallback] = None,
        **options: Unpack[SessionOptions],
    ) -> None:
        if check_int("max_size", max_size) < 1:
            raise ValueError(f"max_size: expected at least 1, got {max_size!r}")
        if not 0 <= check_int("min_idle", min_idle) <= max_size:
            raise ValueError(f"min_idle: expected 0 to max_size ({max_size}), got {min_idle!r}")
        lifetime = _seconds("token_lifetime", token_lifetime)
        if not 1 <= lifetime <= MAX_TOKEN_LIFETIME:
            raise ValueError(f"token_lifetime: expected 1 to {MAX_TOKEN_LIFETIME:.0f} seconds, got {token_lifetime!r}")
        margin = _seconds("refresh_margin", refresh_margin)
        if not 0 <= margin < lifetime:
            raise ValueError(
                f"refresh_margin: expected 0 or more seconds, less than token_lifetime ({lifetime:g}),"
                f" got {refresh_margin!r}"
            )
        self._borrow_timeout = check_timeout("borrow_timeout", borrow_timeout)
        self._options = Options.checked(options)
        # The sessions' configuration, checked once (no I/O); its copy is the template of every session (later
        # changes to the caller's objects do not reach it).
        template = SessionConfig(
            avatar_id=avatar_id,
            api_key=api_key,
            app_id=app_id,
            use_query_auth=use_query_auth,
            expire_at=datetime.now(timezone.utc) + timedelta(seconds=lifetime),
            sample_rate=sample_rate,
            bitrate=bitrate,
            audio_format=audio_format,  # type: ignore[arg-type]  # coerced by SessionConfig
            transport_frames=transport_frames,
            on_error=on_error,
            console_endpoint_url=console_endpoint_url,
            ingress_endpoint_url=ingress_endpoint_url,
            livekit_egress=livekit_egress,
            agora_egress=agora_egress,
            on_playback_state=on_playback_state,
            ogg_opus_encoder=ogg_opus_encoder,
            on_encoded_audio=on_encoded_audio,
            on_reconnect=on_reconnect,
        )
        self._template = copy_config(check_config(template))
        ingress_for(self._template)  # v1's limits (and its deprecation, said once, here)
        AudioOut(self._template)  # the Ogg Opus encoder needs PyAV: fail here, before I/O
        warn_insecure_transport(console_endpoint_url, ingress_endpoint_url, use_query_auth=use_query_auth)
        self._on_error = on_error
        self._max_size = max_size
        self._min_idle = min_idle
        self._token_lifetime = lifetime
        self._refresh_margin = margin
        close_timeout = self._options.close_timeout
        self._exit_wait = _EXIT_WAIT if close_timeout is None else min(close_timeout, _EXIT_WAIT)
        self._number = next(_pool_numbers)
        self._closed = False
        self._reset_state()
        _live_pools.add(self)
        logger.debug("pool #%d: created (max_size=%d, min_idle=%d)", self._number, max_size, min_idle)
        if min_idle:
            with self._cond:
                self._ensure_maintainer()

    def _reset_state(self) -> None:
        """A fresh, empty pool state (at creation, and in a forked child)."""
        self._cond = threading.Condition(threading.Lock())  # guards everything below; no I/O or user code under it
        self._idle: Deque[_Entry] = deque()  # the right end is the most recently returned (LIFO)
        self._lent: Set[_Entry] = set()
        self._starting: Set[_Entry] = set()
        self._waiters: Deque[object] = deque()  # borrowers waiting for a session, first come first served
        self._closing = 0  # discarded sessions whose close() has not returned yet
        self._maintainer: Optional[threading.Thread] = None
        self._created = self._discarded = self._waits = self._timeouts = self._failed = 0
        self._generation = process_generation()

    # ------------------------------------------------------------------------------------------ info

    @property
    def max_size(self) -> int:
        """Most sessions the pool holds at once."""
        return self._max_size

    @property
    def min_idle(self) -> int:
        """Sessions the maintenance thread keeps idle."""
        return self._min_idle

    @property
    def closed(self) -> bool:
        """``True`` once :meth:`close` has been called."""
        return self._closed

    def stats(self) -> PoolStats:
        """A consistent snapshot of the pool's counts (see :class:`PoolStats`)."""
        self._check_fork()
        with self._cond:
            return PoolStats(
                idle=len(self._idle),
                in_use=len(self._lent),
                creating=len(self._starting),
                created=self._created,
                discarded=self._discarded,
                waits=self._waits,
                timeouts=self._timeouts,
                failed=self._failed,
            )

    def __repr__(self) -> str:
        return (
            f"<SessionPool #{self._number} avatar_id={self._template.avatar_id!r} max_size={self._max_size}"
            f" idle={len(self._idle)} in_use={len(self._lent)}{' closed' if self._closed else ''}>"
        )

    # ------------------------------------------------------------------------------------- borrowing

    def session(self, timeout: Optional[float] = None) -> ContextManager[AvatarSession]:
        """Borrow a started session for the ``with`` block: ``with pool.session() as session: ...``.

        Entering lends an idle healthy session, or starts a new one in this thread while the pool holds
        fewer than ``max_size``, or waits for one to be returned. Leaving returns it: a request left open is
        interrupted; a session that ended, reported an error, saw the block raise an
        :class:`~avatarsdk.AvatarSDKError`, or is due for a new token is closed instead of kept. Use it for
        one utterance (or a few) and give it back; do not keep it after the block.

        Args:
            timeout: Seconds to wait for a session (``None``: the pool's ``borrow_timeout``).

        Raises (on entering):
            PoolTimeoutError: no session within ``timeout`` (all ``max_size`` in use).
            AvatarSDKError: starting a new session failed (as :meth:`AvatarSession.init`/``start``).
            ValueError: the pool is closed, or ``timeout`` is invalid.
        """
        return _Borrow(self, self._borrow_limit(timeout))

    def stream(
        self,
        audio: Union[bytes, bytearray, memoryview],
        *,
        timeout: Optional[float] = None,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        frame_timeout: Optional[float] = DEFAULT_FRAME_TIMEOUT,
        deadline: Optional[float] = None,
    ) -> Generator[Frame, None, None]:
        """Send an utterance on a borrowed session; return an iterator over its frames.

        The session is borrowed and the audio sent before this returns (so a borrow timeout or a failed
        start raises here, where a view can still answer with an error status), and it goes back to the
        pool when the iterator is exhausted, raises, is closed (a WSGI server closing the response when
        the client goes away: the request is then interrupted) or is garbage-collected. Return it from a
        view inside a streaming response; a ``with pool.session()`` block would end before the response is
        streamed. If sending fails on a session taken from the idle set (its connection died unnoticed), the
        utterance is sent once more on another session.

        Args:
            audio: The whole utterance (PCM s16le mono at the pool's ``sample_rate``, or Ogg Opus bytes when
                ``audio_format`` is ``OGG_OPUS`` without ``ogg_opus_encoder``).
            timeout: Seconds to wait for a session (``None``: the pool's ``borrow_timeout``).
            chunk_ms, frame_timeout, deadline: As for :meth:`AvatarSession.stream` (``deadline`` counts from
                when the session is lent).

        Raises:
            As :meth:`session` and :meth:`AvatarSession.stream`; from the iterator as
            :meth:`AvatarRequest.frames` (an :class:`~avatarsdk.AvatarSDKError` also discards the session).
        """
        self._check_fork()
        data = check_audio(audio, self._template.audio_format, pcm=self._template.ogg_opus_encoder is not None)
        if isinstance(chunk_ms, bool) or not isinstance(chunk_ms, int) or chunk_ms <= 0:
            raise ValueError(f"chunk_ms: expected a positive number of milliseconds, got {chunk_ms!r}")
        check_timeout("frame_timeout", frame_timeout)
        check_timeout("deadline", deadline)
        limit = self._borrow_limit(timeout)
        frames = self._stream(data, limit, chunk_ms, frame_timeout, deadline)
        next(frames)  # borrow and send now; once started, the generator returns the session however it ends
        return cast(Generator[Frame, None, None], frames)

    def collect(
        self,
        audio: Union[bytes, bytearray, memoryview],
        *,
        timeout: Optional[float] = None,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        frame_timeout: Optional[float] = DEFAULT_FRAME_TIMEOUT,
        deadline: Optional[float] = None,
    ) -> List[Frame]:
        """Send an utterance on a borrowed session and return all its frames (see :meth:`stream`)."""
        return list(
            self.stream(audio, timeout=timeout, chunk_ms=chunk_ms, frame_timeout=frame_timeout, deadline=deadline)
        )

    def _borrow_limit(self, timeout: Optional[float]) -> Optional[float]:
        return self._borrow_timeout if timeout is None else check_timeout("timeout", timeout)

    def _stream(
        self,
        data: bytes,
        limit: Optional[float],
        chunk_ms: int,
        frame_timeout: Optional[float],
        deadline: Optional[float],
    ) -> Generator[Optional[Frame], None, None]:
        until = None if limit is None else time.monotonic() + limit
        for attempt in (1, 2):
            entry = self._acquire(until, limit, "stream")
            try:
                # A generator: closing it abandons the request.
                frames = entry.session.stream(data, chunk_ms=chunk_ms, frame_timeout=frame_timeout, deadline=deadline)
            except AvatarSDKError as exc:
                self._release(entry, f"sending failed ({exc.code.value})")
                if attempt == 2 or not entry.from_idle:
                    raise
                logger.debug("pool #%d: sending on an idle session failed (%s); trying another", self._number, exc)
                continue
            except BaseException:
                self._release(entry)
                raise
            break
        failure: Optional[str] = None
        try:
            yield None  # stream() stops here: the session is lent and the audio sent
            yield from frames
        except AvatarSDKError as exc:
            failure = f"its request failed ({exc.code.value})"
            raise
        finally:
            frames.close()  # abandons (interrupts) the request unless its last frame arrived
            self._release(entry, failure)

    def _acquire(self, until: Optional[float], limit: Optional[float], op: str) -> _Entry:
        """Lend an idle healthy session, or start one in this thread, or wait; ``until`` is a monotonic
        deadline (``None``: none). Waiting borrowers are served first come, first served: one that arrives
        while others wait queues behind them instead of taking the next returned session."""
        self._check_fork()
        ticket: Optional[object] = None  # this borrower's place in the queue, once it waits
        try:
            while True:
                stale: List[Tuple[_Entry, str]] = []
                lent: Optional[_Entry] = None
                new: Optional[_Entry] = None
                with self._cond:
                    while True:
                        if self._closed:
                            raise ValueError(f"{op}(): the pool is closed")
                        if not self._waiters or self._waiters[0] is ticket:  # nobody is ahead
                            lent = self._take_idle(stale)
                            if lent is not None or stale:
                                break
                            if self._size() < self._max_size:
                                new = self._new_entry()
                                self._starting.add(new)
                                break
                        if ticket is None:
                            ticket = object()
                            self._waiters.append(ticket)
                            self._waits += 1
                        remaining = None if until is None else until - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            self._timeouts += 1
                            raise PoolTimeoutError(
                                AvatarSDKErrorCode.timeout,
                                f"{op}(): no session available within {limit:g}s: all {self._max_size} sessions"
                                f" (max_size) are in use ({len(self._lent)} lent, {len(self._starting)} starting,"
                                f" {self._closing} closing; {len(self._waiters)} borrowers waiting)",
                                retryable=True,
                            )
                        self._cond.wait(remaining)
                    if lent is not None:
                        lent.from_idle = True
                        self._lent.add(lent)
                    if (lent is not None or new is not None) and ticket is not None:
                        self._waiters.remove(ticket)  # served: the next in line may find a session too
                        ticket = None
                        self._cond.notify_all()
                    elif lent is not None and self._min_idle:
                        self._cond.notify_all()  # the maintenance thread: fewer idle than before
                self._dispose(stale)
                if lent is not None:
                    logger.debug("pool #%d: lent session %s", self._number, lent.session.connection_id)
                    return lent
                if new is not None:
                    self._start(new, lend=True)
                    return new
                # Only unfit idle sessions were found; they are closed now: look again.
        finally:
            if ticket is not None:  # leaving the queue without a session (timeout, closed pool, interrupt)
                with self._cond:
                    self._waiters.remove(ticket)
                    self._cond.notify_all()

    def _take_idle(self, stale: List[Tuple[_Entry, str]]) -> Optional[_Entry]:
        """The most recently returned idle session that may be lent; unfit ones go to ``stale`` (and are
        counted as discarded and closing). Called with the lock held."""
        now = time.monotonic()
        while self._idle:
            entry = self._idle.pop()
            reason = self._unfit(entry, now)
            if reason is None:
                return entry
            self._discarded += 1
            self._closing += 1
            stale.append((entry, reason))
        return None

    def _unfit(self, entry: _Entry, now: float) -> Optional[str]:
        """Why ``entry`` must not be lent (``None``: it may be)."""
        if entry.failure is not None:
            return entry.failure
        if entry.session.closed:
            return "the session has ended"
        if now >= entry.refresh_at:
            return "its token expires within refresh_margin"
        return None

    def _size(self) -> int:
        return len(self._idle) + len(self._lent) + len(self._starting) + self._closing

    def _new_entry(self) -> _Entry:
        """A session (not started) with the pool's callbacks and a token lifetime from now."""
        now = datetime.now(timezone.utc)
        entry = _Entry(time.monotonic() + self._token_lifetime - self._refresh_margin, self._generation)
        config = dataclasses.replace(
            self._template,
            expire_at=now + timedelta(seconds=self._token_lifetime),
            on_error=functools.partial(self._session_error, entry),
            on_close=functools.partial(self._session_ended, entry),
        )
        # Warnings about the configuration and options came once, from the pool's construction.
        entry.session = AvatarSession._create(config, self._options)
        return entry

    def _start(self, entry: _Entry, *, lend: bool) -> None:
        """Start ``entry`` (outside the lock), then lend it or put it in the idle set."""
        session = entry.session
        try:
            session.init()
            session.start()
        except BaseException as exc:
            with self._cond:
                self._starting.discard(entry)
                closed = self._closed
                if not closed:
                    self._failed += 1
                self._cond.notify_all()
            session.close()
            if closed and isinstance(exc, (ValueError, AvatarSDKError)):
                raise ValueError("the pool was closed while a session was starting") from exc
            raise
        with self._cond:
            self._starting.discard(entry)
            closed = self._closed
            if not closed:
                self._created += 1
                if lend:
                    self._lent.add(entry)
                else:
                    self._idle.append(entry)
            self._cond.notify_all()  # waiting borrowers, the maintenance thread, or close()
        if closed:
            session.close()
            raise ValueError("the pool was closed while a session was starting")
        logger.debug(
            "pool #%d: started session %s (%s)", self._number, session.connection_id, "lent" if lend else "idle"
        )

    def _release(self, entry: _Entry, failure: Optional[str] = None) -> None:
        """Take back a lent session: keep it idle if it may be lent again, otherwise close it."""
        self._check_fork()
        session = entry.session
        if entry.generation != self._generation:  # lent before a fork: this process may only let it go
            session.close()
            return
        # A request left open (audio sent without end=True): the session has no public signal for it.
        if failure is None and session.current_req_id is not None and not session.closed:
            try:
                session.interrupt()
            except (AvatarSDKError, ValueError) as exc:
                failure = f"interrupting the request left open failed ({exc})"
        with self._cond:
            if entry not in self._lent:
                return  # already returned
            self._lent.discard(entry)
            if self._closed:
                reason: Optional[str] = "the pool is closed"
                counted = False
            else:
                reason = failure or self._unfit(entry, time.monotonic())
                counted = reason is not None
                if reason is None:
                    self._idle.append(entry)
                    self._ensure_maintainer()
                else:
                    self._discarded += 1
                    self._closing += 1
            self._cond.notify_all()
        if reason is None:
            logger.debug("pool #%d: session %s returned", self._number, session.connection_id)
        elif counted:
            self._dispose([(entry, reason)])
        else:
            session.close()

    def _dispose(self, entries: List[Tuple[_Entry, str]]) -> None:
        """Close discarded sessions (outside the lock); they count against ``max_size`` until closed."""
        for entry, reason in entries:
            logger.debug("pool #%d: discarding session %s: %s", self._number, entry.session.connection_id, reason)
            try:
                entry.session.close()
            finally:
                with self._cond:
                    if entry.generation == self._generation:
                        self._closing -= 1
                    self._cond.notify_all()

    # ----------------------------------------------------------------- the sessions' callbacks

    def _session_ended(self, entry: _Entry) -> None:
        """A session's ``on_close`` (its dispatcher thread): an idle one is dropped at once."""
        with self._cond:
            if entry.generation != self._generation:
                return
            if entry.failure is None:
                entry.failure = "the session has ended"
            idle = entry in self._idle
            if idle:
                self._idle.remove(entry)
                self._discarded += 1
                self._cond.notify_all()
        if idle:
            logger.debug(
                "pool #%d: idle session %s ended (server or network); discarded",
                self._number,
                entry.session.connection_id,
            )

    def _session_error(self, entry: _Entry, error: AvatarSDKError) -> None:
        """A session's ``on_error`` (its dispatcher thread): the session is not lent again."""
        with self._cond:
            idle = entry.generation == self._generation and entry in self._idle
            if entry.failure is None:
                entry.failure = f"it reported an error ({error.code.value})"
            if idle:
                self._idle.remove(entry)
                self._discarded += 1
                self._closing += 1
                self._cond.notify_all()
        if idle:
            self._dispose([(entry, entry.failure or "")])
        safe_call("on_error", self._on_error, error)

    # --------------------------------------------------------------------- the maintenance thread

    def _ensure_maintainer(self) -> None:
        """Start the maintenance thread if it is not running (called with the lock held)."""
        if self._maintainer is None and not self._closed:
            thread = threading.Thread(target=self._maintain, name=f"avatarsdk-pool-{self._number}", daemon=True)
            self._maintainer = thread
            thread.start()

    def _maintain(self) -> None:
        """Replace idle sessions due for a new token; keep ``min_idle`` idle. Sleeps on the condition until
        the next refresh time, the end of a back-off, or a change."""
        generation = self._generation
        failures, retry_at = 0, 0.0
        while True:
            stale: List[Tuple[_Entry, str]] = []
            warm: Optional[_Entry] = None
            with self._cond:
                while True:
                    if self._closed or self._generation != generation:
                        return
                    now = time.monotonic()
                    for entry in list(self._idle):
                        reason = self._unfit(entry, now)
                        if reason is not None:
                            self._idle.remove(entry)
                            self._discarded += 1
                            self._closing += 1
                            stale.append((entry, reason))
                    if stale:
                        break
                    wake = min((e.refresh_at for e in self._idle), default=math.inf)
                    if len(self._idle) < self._min_idle and self._size() < self._max_size:
                        if now >= retry_at:
                            warm = self._new_entry()
                            self._starting.add(warm)
                            break
                        wake = min(wake, retry_at)
                    self._cond.wait(None if wake == math.inf else wake - now)
            self._dispose(stale)
            if warm is None:
                continue
            try:
                self._start(warm, lend=False)
            except Exception as exc:  # noqa: BLE001  # the thread outlives any failed start: logged, retried later
                if self.closed:  # (the property: the attribute is narrowed above, but close() may have run)
                    return
                failures += 1
                backoff = _START_BACKOFF.delay(failures)
                retry_at = time.monotonic() + backoff
                logger.warning(
                    "pool #%d: starting a warm session failed (%s); next try in %gs", self._number, exc, backoff
                )
                if isinstance(exc, AvatarSDKError):
                    safe_call("on_error", self._on_error, exc)
                continue
            if warm.refresh_at <= time.monotonic():
                # Sessions are due for a new token as soon as they start: do not replace them in a loop.
                failures += 1
                retry_at = time.monotonic() + _START_BACKOFF.delay(failures)
                logger.warning(
                    "pool #%d: a new session is already due for refresh (token_lifetime %gs, refresh_margin %gs)",
                    self._number,
                    self._token_lifetime,
                    self._refresh_margin,
                )
            else:
                failures = 0

    # ------------------------------------------------------------------------------------ lifecycle

    def close(self, timeout: Optional[float] = DEFAULT_CLOSE_WAIT) -> None:
        """Close the pool: close idle sessions, stop the maintenance thread, and wait up to ``timeout``
        seconds for sessions being started (their starters close them) and lent sessions to come back (each
        is closed when it is returned, also after the wait). Starts still running after the wait are cut
        short. Later borrows raise ``ValueError``. Idempotent; also called at interpreter exit for a pool
        still open then.

        Args:
            timeout: Seconds to wait for starts, lent sessions and the maintenance thread (``None``: no limit).
        """
        limit = check_timeout("timeout", timeout)
        until = None if limit is None else time.monotonic() + limit

        def remaining() -> Optional[float]:
            return None if until is None else max(0.0, until - time.monotonic())

        self._check_fork()
        with self._cond:
            first = not self._closed
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            maintainer = self._maintainer
            self._cond.notify_all()
        if first:
            logger.debug("pool #%d: closing (%d idle, %d lent)", self._number, len(idle), len(self._lent))
        for entry in idle:
            entry.session.close()
        with self._cond:
            self._cond.wait_for(lambda: not self._starting, remaining())
            starting = [entry.session for entry in self._starting]
        for session in starting:
            session.close()  # still starting: cut short (its start() fails and its starter lets it go)
        if maintainer is not None and maintainer is not threading.current_thread():
            maintainer.join(remaining())
            if maintainer.is_alive():
                logger.warning("pool #%d: thread %s still running after close()", self._number, maintainer.name)
        with self._cond:
            done = self._cond.wait_for(lambda: not (self._lent or self._starting or self._closing), remaining())
            lent = len(self._lent)
        if not done:
            logger.debug("pool #%d: %d sessions still lent; each is closed when returned", self._number, lent)
        _live_pools.discard(self)

    def _close_at_exit(self) -> None:
        """At interpreter exit: close, then close the sessions still lent (nothing will return them)."""
        self.close(self._exit_wait)
        with self._cond:
            lent = [entry.session for entry in self._lent]
        for session in lent:
            session.close()

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ fork

    def _check_fork(self) -> None:
        """In a child of the process that made the pool state: start over with a fresh one."""
        if self._generation == process_generation():
            return
        with _fork_lock:
            if self._generation == process_generation():
                return
            # The parent's lock may have been held at the fork: do not touch it.
            inherited = [*self._idle, *self._lent, *self._starting]
            self._reset_state()
            if self._min_idle and not self._closed:
                with self._cond:
                    self._ensure_maintainer()
        logger.info(
            "pool #%d: used in process %d, a fork of the one that made it: starting with an empty pool"
            " (%d sessions of the parent process are left to it)",
            self._number,
            os.getpid(),
            len(inherited),
        )
        for entry in inherited:
            entry.session.close()  # in a child: closes only this process's copy of the socket


class _Borrow:
    """The context manager :meth:`SessionPool.session` returns."""

    def __init__(self, pool: SessionPool, limit: Optional[float]) -> None:
        self._pool = pool
        self._limit = limit
        self._entry: Optional[_Entry] = None

    def __enter__(self) -> AvatarSession:
        if self._entry is not None:
            raise ValueError("session(): this borrow is already in use; call pool.session() again")
        until = None if self._limit is None else time.monotonic() + self._limit
        self._entry = self._pool._acquire(until, self._limit, "session")
        return self._entry.session

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return
        failure = None
        if isinstance(exc, AvatarSDKError):
            failure = f"the borrower's block raised {type(exc).__name__} ({exc.code.value})"
        self._pool._release(entry, failure)


def _seconds(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field}: expected seconds as a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{field}: expected a finite number of seconds, got {value!r}")
    return float(value)


def _close_pools_at_exit() -> None:
    for pool in list(_live_pools):
        try:
            pool._close_at_exit()
        except Exception:
            logger.exception("pool #%d: closing at interpreter exit failed", pool._number)


atexit.register(_close_pools_at_exit)
