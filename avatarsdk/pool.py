"""SessionPool: started sessions shared by the worker threads of a threaded WSGI server.

A relay backend (gunicorn ``gthread``, waitress, mod_wsgi, Django's runserver) sends each utterance on a
session that is already started (``pool.session()``, ``pool.stream()``), so no request pays for the token
call, the connect and the handshake. docs/GUIDE.md's "Session pool" says how to use it.

How it works, and why:

- **Cost.** The service bills every connected second of every session (1 credit per started 6 s) and counts
  each against the plan's concurrent sessions, lent or idle. So an idle session is closed ``max_idle_time``
  after it was returned, except the ``min_idle`` most recently returned (kept around the clock: 600 credits an
  hour each), and every session is retired before ``max_session_age``, below the plan's session length, so
  that the service never cuts one mid-utterance (close 4002): from ``AGE_MARGIN`` (60 s) before that age it
  is no longer lent; an idle one is closed then, a lent one when it is returned. ``stats()`` adds up the
  connected time.
- **Where sessions are made.** A borrower that finds no idle session while the pool holds fewer than
  ``max_size`` starts one itself, in its own thread and outside the pool's lock, so a slow start delays only
  that borrower; a failed start raises to it and frees the slot. Sessions being started or closed count
  against ``max_size``.
- **Back-pressure.** A start the service refuses for its concurrency limit (HTTP 429, or close 4003) is not
  the borrower's error: the borrower waits again, first in line, for a returned session or for the end of a
  pause of new starts (0.5 s doubling to 5 s, jittered), within its borrow timeout; a
  :class:`PoolTimeoutError` then names the refusal (``last_error``).
- **Waiting.** A borrower that finds every slot taken waits on the pool's condition (no polling), first come
  first served, at most its timeout.
- **LIFO.** Idle sessions are lent most recently returned first: under light load a few sessions stay hot and
  the surplus after a burst stays idle until ``max_idle_time`` closes it. FIFO would keep every session busy
  in turn and never let the pool shrink.
- **Health.** A session is never lent when it has ended, reported an error to ``on_error``, saw its borrower's
  ``with`` block raise an :class:`~avatarsdk.AvatarSDKError`, is within ``refresh_margin`` of its token's
  expiry or near ``max_session_age``. An idle session the server closes is removed at once (its ``on_close``
  tells the pool). A request the borrower left open is interrupted before the session goes back idle.
- **Tokens.** Each session asks for a token valid ``token_lifetime`` seconds and is replaced ``refresh_margin``
  before it expires (keep the margin above a second plus a start: the service counts whole seconds).
- **Maintenance thread** ``avatarsdk-pool-N``: it starts when there is work for it and runs until ``close()``,
  asleep on the pool's condition until the next time an idle session is due to go or something changes. It
  closes idle sessions that must go and keeps ``min_idle`` warm, one start at a time, backing off (1 s
  doubling to 30 s) after a failed start, whose error also goes to ``on_error`` (a refusal for the
  concurrency limit does not).
- **Fork.** A pool used in a child process of the one that made it (a pre-fork server with ``--preload``)
  starts over in the child with an empty state and new locks (the parent's may have been held at the fork);
  the parent's sessions are let go with their ``close()``, which in a child only closes the child's copy of
  the socket.
- **Exit.** An unclosed pool is closed at interpreter exit (through a ``WeakSet``: the exit hook does not
  keep a pool alive).

Where each part lives: this module holds the public API, the pool's construction, the fork reset and the exit
hook. The decisions without I/O are ``_pool_state.LendingState``'s; the condition and the sessions' I/O are
``_pool_lender.Lender``'s, one per process; the maintenance thread is ``_pool_maintainer.Maintainer``; the
``with`` block and ``stream()``'s iterator are in ``_pool_borrow``; the arguments' checks and the sessions'
template are in ``_pool_config``.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import weakref
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, ContextManager, Generator, List, Mapping, Optional, Type, Union, cast

from ._config_checks import check_audio
from ._deadline import Deadline
from ._fork import process_generation
from ._options import Options, SessionOptions
from ._pool_borrow import Borrow, stream_frames
from ._pool_config import PoolConfig, check_limits, check_retirement, session_template
from ._pool_lender import Lender, PooledSession
from ._pool_types import PoolStats, PoolTimeoutError
from ._validation import check_timeout
from .avatar_session import DEFAULT_CHUNK_MS, DEFAULT_FRAME_TIMEOUT, AvatarSession
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
from .tracing import TraceContext

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["PoolStats", "PoolTimeoutError", "SessionPool"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 8
DEFAULT_TOKEN_LIFETIME = 3600.0
DEFAULT_REFRESH_MARGIN = 300.0
DEFAULT_BORROW_TIMEOUT = 30.0
DEFAULT_CLOSE_WAIT = 10.0
DEFAULT_MAX_IDLE_TIME = 30.0  # covers the pause between the turns of a conversation; 5 credits at most after it
DEFAULT_MAX_SESSION_AGE = 540.0  # a minute below the shortest plan's session length (Free: 10 minutes)
_EXIT_WAIT = 5.0  # seconds the exit hook waits for lent sessions before closing them

_pool_numbers = itertools.count(1)
_live_pools: weakref.WeakSet[SessionPool] = weakref.WeakSet()
_fork_lock = threading.Lock()  # serialises the reset of a pool in a forked child (made anew in each child)


def _new_fork_lock() -> None:
    global _fork_lock
    _fork_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_fork_lock)


class SessionPool:
    """A thread-safe pool of started :class:`~avatarsdk.AvatarSession` objects, lent one utterance at a time.

    Nothing is sent when the pool is made (unless ``min_idle`` asks for warm sessions, which the maintenance
    thread then starts); sessions are created on demand up to ``max_size``. See the module documentation
    for how sessions are created, checked, refreshed, retired and shared.

    Cost: the service bills every connected second (1 credit per started 6 s), idle or lent, and counts every
    connected session against the plan's concurrent sessions. An idle session costs 10 credits a minute until
    ``max_idle_time`` closes it; each ``min_idle`` session costs 600 credits an hour and a concurrency slot,
    around the clock.

    Thread-safety: every method may be called from any thread. A lent session belongs to its borrower
    until it is returned; ``transport_frames`` and ``on_error`` run on the sessions' dispatcher threads.

    ``avatar_id``, ``api_key``, ``app_id``, ``console_endpoint_url``, ``ingress_endpoint_url``, ``region`` and
    ``token_route`` are as for :func:`~avatarsdk.new_avatar_session` (``region="auto"`` is resolved at each
    session's ``init()``, from the process-wide cache after the first); so are every session's configuration
    (``use_query_auth``, ``sample_rate``, ``bitrate``, ``audio_format``, ``ogg_opus_encoder``,
    ``livekit_egress``, ``agora_egress``, ``extra_params``) and callbacks (``on_playback_state``,
    ``on_encoded_audio``, ``on_reconnect``).

    Args:
        max_size: Most sessions (lent, idle, starting or closing) at once.
        min_idle: Sessions the maintenance thread keeps started and idle (within ``max_size``), around the clock
            (600 credits an hour each); 0 for none.
        max_idle_time: Seconds an idle session is kept after it was returned (the ``min_idle`` most recently
            returned are kept regardless); ``None``: until its token is due or it is retired.
        max_session_age: Seconds of age (from the start of its token call) before which each session is
            retired: not lent from 60 s (or a quarter of it, if less) before that age, an idle one closed then,
            a lent one when it is returned. Keep it below the plan's session length (10, 30, 60 or 120
            minutes); ``None``: no limit.
        token_lifetime: Seconds each session's token is asked for (1 to 86400).
        refresh_margin: A session is replaced this many seconds before its token expires (0 or more, less
            than ``token_lifetime``); a lent one when it is returned.
        borrow_timeout: Default seconds :meth:`session` and :meth:`stream` wait for a session (``None``:
            no limit).
        transport_frames: Receives every frame of every session (``None``: use the pull API).
        on_error: Receives every session's errors, and the errors of starts made by the maintenance thread.
        options: Every session's options (:class:`~avatarsdk.SessionOptions`: timeouts, limits, network
            settings, reconnect policy, dispatcher), as for :class:`~avatarsdk.AvatarSession`. A lent session
            that reconnects goes on serving its borrower; like any session that reported an error, it is
            replaced when returned. The pool does not close a ``dispatcher`` it is given.

    Raises:
        TypeError, ValueError: an argument is invalid, or ``ca_bundle``/``client_cert`` would not load (the
            message names it); nothing has been sent.
    """

    def __init__(
        self,
        *,
        avatar_id: str,
        api_key: str,
        app_id: str,
        console_endpoint_url: str = "",
        ingress_endpoint_url: str = "",
        region: Optional[str] = None,
        token_route: Optional[str] = None,
        max_size: int = DEFAULT_MAX_SIZE,
        min_idle: int = 0,
        max_idle_time: Optional[float] = DEFAULT_MAX_IDLE_TIME,
        max_session_age: Optional[float] = DEFAULT_MAX_SESSION_AGE,
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
        extra_params: Optional[Mapping[str, str]] = None,
        transport_frames: Optional[TransportFramesCallback] = None,
        on_error: Optional[ErrorCallback] = None,
        on_playback_state: Optional[PlaybackStateCallback] = None,
        on_encoded_audio: Optional[EncodedAudioCallback] = None,
        on_reconnect: Optional[ReconnectCallback] = None,
        **options: Unpack[SessionOptions],
    ) -> None:
        lifetime, margin = check_limits(max_size, min_idle, token_lifetime, refresh_margin)
        retire = check_retirement(max_idle_time, max_session_age)  # max_idle, max_age
        self._borrow_timeout = check_timeout("borrow_timeout", borrow_timeout)
        checked = Options.checked(options)
        template = session_template(
            SessionConfig(
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
                extra_params={} if extra_params is None else extra_params,
                on_playback_state=on_playback_state,
                ogg_opus_encoder=ogg_opus_encoder,
                on_encoded_audio=on_encoded_audio,
                on_reconnect=on_reconnect,
                region=region,
                token_route=token_route,
            ),
            checked.network,
        )
        self._exit_wait = _EXIT_WAIT if checked.close_timeout is None else min(checked.close_timeout, _EXIT_WAIT)
        self._number = number = next(_pool_numbers)
        self._config = PoolConfig(max_size, min_idle, lifetime, margin, template, checked, on_error, number, *retire)
        self._lender = Lender(self._config)
        _live_pools.add(self)
        logger.debug("pool #%d: created (max_size=%d, min_idle=%d)", number, max_size, min_idle)
        self._lender.keep_warm()

    # ------------------------------------------------------------------------------------------ info

    @property
    def max_size(self) -> int:
        """Most sessions the pool holds at once."""
        return self._config.max_size

    @property
    def min_idle(self) -> int:
        """Sessions the maintenance thread keeps idle."""
        return self._config.min_idle

    @property
    def max_idle_time(self) -> Optional[float]:
        """Seconds an idle session beyond ``min_idle`` is kept (``None``: no limit)."""
        return self._config.max_idle

    @property
    def max_session_age(self) -> Optional[float]:
        """Seconds of age before which each session is retired (``None``: no limit)."""
        return self._config.max_age

    @property
    def closed(self) -> bool:
        """``True`` once :meth:`close` has been called."""
        return self._lender.state.closed

    def stats(self) -> PoolStats:
        """A consistent snapshot of the pool's counts (see :class:`PoolStats`)."""
        self._check_fork()
        lender = self._lender
        with lender.lock:
            return lender.state.counts(time.monotonic())

    def __repr__(self) -> str:
        state = self._lender.state
        return (
            f"<SessionPool #{self._number} avatar_id={self._config.template.avatar_id!r} max_size={state.max_size}"
            f" idle={len(state.idle)} in_use={len(state.lent)}{' closed' if state.closed else ''}>"
        )

    # ------------------------------------------------------------------------------------- borrowing

    def session(self, timeout: Optional[float] = None) -> ContextManager[AvatarSession]:
        """Borrow a started session for the ``with`` block: ``with pool.session() as session: ...``.

        Entering lends an idle healthy session, or starts a new one in this thread while the pool holds
        fewer than ``max_size``, or waits for one to be returned (also when the service refuses a new one for
        its concurrency limit: then new starts are tried again after a pause). Leaving returns it: a request
        left open is interrupted; a session that ended, reported an error, saw the block raise an
        :class:`~avatarsdk.AvatarSDKError`, is due for a new token or near ``max_session_age`` is closed
        instead of kept. Use it for one utterance (or a few) and give it back; do not keep it after the block.

        Args:
            timeout: Seconds to wait for a session (``None``: the pool's ``borrow_timeout``).

        Raises (on entering):
            PoolTimeoutError: no session within ``timeout``: all ``max_size`` in use, or the service refused
                new ones for its concurrency limit (its ``last_error``).
            AvatarSDKError: starting a new session failed (as :meth:`AvatarSession.init`/``start``).
            ValueError: the pool is closed, or ``timeout`` is invalid.
        """
        return Borrow(self._acquire, self._release, self._borrow_limit(timeout))

    def stream(
        self,
        audio: Union[bytes, bytearray, memoryview],
        *,
        timeout: Optional[float] = None,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        frame_timeout: Optional[float] = DEFAULT_FRAME_TIMEOUT,
        deadline: Optional[float] = None,
        trace_context: Optional[TraceContext] = None,
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

        ``chunk_ms``, ``frame_timeout``, ``deadline`` and ``trace_context`` are as for
        :meth:`AvatarSession.stream` (``deadline`` counts from when the session is lent).

        Errors are those of :meth:`session` and :meth:`AvatarSession.stream`; the iterator raises what
        :meth:`AvatarRequest.frames` raises (an :class:`~avatarsdk.AvatarSDKError` also discards the session).
        """
        self._check_fork()
        template = self._config.template
        data = check_audio(audio, template.audio_format, pcm=template.ogg_opus_encoder is not None)
        if isinstance(chunk_ms, bool) or not isinstance(chunk_ms, int) or chunk_ms <= 0:
            raise ValueError(f"chunk_ms: expected a positive number of milliseconds, got {chunk_ms!r}")
        check_timeout("frame_timeout", frame_timeout)
        check_timeout("deadline", deadline)
        limit = self._borrow_limit(timeout)
        frames = stream_frames(
            self._acquire,
            self._release,
            data,
            limit,
            chunk_ms=chunk_ms,
            frame_timeout=frame_timeout,
            deadline=deadline,
            trace_context=trace_context,
            number=self._number,
        )
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
        trace_context: Optional[TraceContext] = None,
    ) -> List[Frame]:
        """Send an utterance on a borrowed session and return all its frames (see :meth:`stream`)."""
        frames = self.stream(
            audio,
            timeout=timeout,
            chunk_ms=chunk_ms,
            frame_timeout=frame_timeout,
            deadline=deadline,
            trace_context=trace_context,
        )
        return list(frames)

    def _borrow_limit(self, timeout: Optional[float]) -> Optional[float]:
        return self._borrow_timeout if timeout is None else check_timeout("timeout", timeout)

    def _acquire(self, deadline: Deadline, limit: Optional[float], op: str) -> PooledSession:
        """Lend a session by ``deadline`` (see :meth:`Lender.acquire`)."""
        self._check_fork()
        return self._lender.acquire(deadline, limit, op)

    def _release(self, entry: PooledSession, failure: Optional[str] = None) -> None:
        """Take back a lent session: keep it idle if it may be lent again, otherwise close it."""
        self._check_fork()
        self._lender.release(entry, failure)

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
        self._check_fork()
        self._lender.close(Deadline(limit))
        _live_pools.discard(self)

    def _close_at_exit(self) -> None:
        """At interpreter exit: close, then close the sessions still lent (nothing will return them)."""
        self.close(self._exit_wait)
        self._lender.close_lent()

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
        """In a child of the process that made the pool's lender: start over with a fresh one."""
        if self._lender.state.generation == process_generation():
            return
        with _fork_lock:
            old = self._lender
            if old.state.generation == process_generation():
                return
            # The parent's lock may have been held at the fork: do not touch it.
            inherited = old.state.entries()
            self._lender = Lender(self._config, closed=old.state.closed)
            self._lender.keep_warm()
        logger.info(
            "pool #%d: used in process %d, a fork of the one that made it: starting with an empty pool"
            " (%d sessions of the parent process are left to it)",
            self._number,
            os.getpid(),
            len(inherited),
        )
        for entry in inherited:
            entry.session.close()  # in a child: closes only this process's copy of the socket


def _close_pools_at_exit() -> None:
    for pool in list(_live_pools):
        try:
            pool._close_at_exit()
        except Exception:
            logger.exception("pool #%d: closing at interpreter exit failed", pool._number)


atexit.register(_close_pools_at_exit)
