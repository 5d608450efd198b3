"""A session's options beside its configuration: declared once, with their defaults, checked in one place.

:class:`SessionOptions` is the keyword API that :class:`~avatarsdk.AvatarSession`,
:func:`~avatarsdk.new_avatar_session` and :class:`~avatarsdk.SessionPool` share (``**options``); the defaults are
the ``DEFAULT_*`` constants; :meth:`Options.checked` checks what was given, before any I/O, and returns the
frozen :class:`Options` a session runs with. A pool checks its options once and makes every session from the
same :class:`Options`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple, TypedDict, Union

from ._backoff import Backoff
from ._dispatch import SharedDispatcher
from ._network import NetworkOptions
from ._tls import ClientCert
from ._validation import HttpTimeout, check_http_timeout, check_int, check_timeout, check_url
from .limiter import Limiter
from .reconnect import ReconnectPolicy, reconnect_policy
from .regions import BOOTSTRAP_URL_ENV, default_bootstrap_url

__all__ = ["Options", "SessionOptions"]

DEFAULT_HTTP_TIMEOUT: Tuple[float, float] = (5.0, 15.0)
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_SEND_TIMEOUT = 10.0
DEFAULT_CLOSE_TIMEOUT = 5.0
DEFAULT_MAX_QUEUED_FRAMES = 4096
DEFAULT_MAX_QUEUED_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 20.0
DEFAULT_HTTP_RETRIES = 2
DEFAULT_HTTP_RETRY_DEADLINE = 30.0
DEFAULT_LIMITER_TIMEOUT = 30.0
# The token call's backoff: 0.5 s doubling, at most 8 s, full jitter.
TOKEN_BACKOFF_INITIAL, TOKEN_BACKOFF_CAP = 0.5, 8.0


class SessionOptions(TypedDict, total=False):
    """The keyword options of a session (every one may be left out; its default is given).

    Every timeout is in seconds and may be ``None`` for no limit (at most 86400).

    Keys:
        http_timeout: The token call's timeout: seconds, or ``(connect, read)`` (default ``(5, 15)``).
        connect_timeout: Each blocking step of the WebSocket connect: TCP, TLS, upgrade (default 10).
        handshake_timeout: From sending the session configuration to its confirmation (default 10).
        send_timeout: The longest a send call waits in all: for a reconnect to finish, for other senders, and
            for a server that is not reading (default 10).
        close_timeout: The longest ``close()`` takes: the server's close reply, then the threads' ends; past it
            the socket is shut down (default 5).
        max_queued_frames: Received messages that may wait for the callbacks (default 4096).
        max_queued_bytes: Bytes of received messages that may wait for the callbacks (default 4 MiB; one
            larger message still passes, alone). Past either bound the reader stops reading and TCP holds the
            server back until the callbacks catch up: nothing is dropped.
        max_message_size: The largest message accepted from the server, in bytes (default 16 MiB; ``None``: no
            limit); a larger one ends the session with ``protocolError`` (close code 1009).
        ping_interval: Seconds of silence from the server after which a ping is sent (default 20; ``None``: no
            keepalive).
        ping_timeout: Seconds a ping may go unanswered before the connection counts as dead (default 20): the
            session then ends with ``connectionClosed`` (close code 1006, retryable).
        http_retries: Retries of the token call after connection failures, 5xx and 429 (never another 4xx),
            with capped, jittered exponential backoff and ``Retry-After`` honoured (default 2).
        http_retry_deadline: Seconds from the first token call within which retries may start (default 30).
        verify_tls: Check the servers' certificates (default ``True``; ``False`` warns).
        ca_bundle: A PEM file of certificate authorities to trust instead of the default store.
        client_cert: A client certificate: a PEM file holding certificate and key, or ``(cert, key)`` paths.
        proxy: ``http://[user:password@]host:port`` for both connections; by default the environment's
            ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` apply, as in requests and websocket-client.
        reconnect: ``True`` or a :class:`~avatarsdk.ReconnectPolicy` to reconnect after a drop worth retrying
            (default off). Each reconnect is a new billed session on the service.
        dispatcher: A :class:`~avatarsdk.SharedDispatcher` whose threads run the callbacks, shared with other
            sessions (default ``None``: the session's own dispatcher thread).
        bootstrap_url: Where ``region="auto"`` asks for the app's region (default: ``AVATARSDK_BOOTSTRAP_URL``,
            else ``https://global.spatialwalk.top/bootstrap``); read when the session is created.
        limiter: A :class:`~avatarsdk.Limiter` (:class:`~avatarsdk.LocalLimiter`, :class:`~avatarsdk.RedisLimiter`)
            shared by the sessions that count against one plan (default ``None``: no limit). The session takes a
            slot in ``init()``, before the token call, and gives it back once its connection has closed (a
            reconnect keeps it); a failed ``init()`` or ``start()`` gives it back too.
        limiter_timeout: The longest ``init()`` waits for a slot (default 30); then it raises a retryable
            ``SessionTokenError`` with code ``concurrencyLimit``.
    """

    http_timeout: HttpTimeout
    connect_timeout: Optional[float]
    handshake_timeout: Optional[float]
    send_timeout: Optional[float]
    close_timeout: Optional[float]
    max_queued_frames: int
    max_queued_bytes: int
    max_message_size: Optional[int]
    ping_interval: Optional[float]
    ping_timeout: Optional[float]
    http_retries: int
    http_retry_deadline: Optional[float]
    verify_tls: bool
    ca_bundle: Optional[str]
    client_cert: Optional[ClientCert]
    proxy: Optional[str]
    reconnect: Union[bool, ReconnectPolicy, None]
    dispatcher: Optional[SharedDispatcher]
    bootstrap_url: Optional[str]
    limiter: Optional[Limiter]
    limiter_timeout: Optional[float]


@dataclass(frozen=True)
class Options:
    """:class:`SessionOptions`, checked and resolved: what a session runs with. Made by :meth:`checked`."""

    __slots__ = (
        "bootstrap_url",
        "close_timeout",
        "connect_timeout",
        "dispatcher",
        "handshake_timeout",
        "http_timeout",
        "keepalive",
        "limiter",
        "limiter_timeout",
        "max_message_size",
        "max_queued_bytes",
        "max_queued_frames",
        "network",
        "reconnect",
        "send_timeout",
        "token_retry",
    )

    http_timeout: Optional[Tuple[Optional[float], Optional[float]]]
    connect_timeout: Optional[float]
    handshake_timeout: Optional[float]
    send_timeout: Optional[float]
    close_timeout: Optional[float]
    max_queued_frames: int
    max_queued_bytes: int
    max_message_size: Optional[int]
    keepalive: Tuple[Optional[float], Optional[float]]  # (ping_interval, ping_timeout)
    token_retry: Backoff
    network: NetworkOptions
    reconnect: Optional[ReconnectPolicy]
    dispatcher: Optional[SharedDispatcher]
    bootstrap_url: str
    limiter: Optional[Limiter]
    limiter_timeout: Optional[float]

    @classmethod
    def checked(cls, given: Mapping[str, Any]) -> Options:
        """Check ``given`` (keywords of :class:`SessionOptions`); the defaults fill in the rest.

        Raises:
            TypeError: an unknown keyword, or a value of the wrong type (the message names it).
            ValueError: a value out of range (the message names it and what was expected).
        """
        unknown = sorted(set(given) - set(SessionOptions.__annotations__))
        if unknown:
            raise TypeError(_unknown_keyword(unknown[0]))
        get = given.get
        dispatcher = get("dispatcher")
        if dispatcher is not None and not isinstance(dispatcher, SharedDispatcher):
            raise TypeError(f"dispatcher: expected a SharedDispatcher or None, got {type(dispatcher).__name__}")
        return cls(
            http_timeout=check_http_timeout(get("http_timeout", DEFAULT_HTTP_TIMEOUT)),
            connect_timeout=check_timeout("connect_timeout", get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
            handshake_timeout=check_timeout("handshake_timeout", get("handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT)),
            send_timeout=check_timeout("send_timeout", get("send_timeout", DEFAULT_SEND_TIMEOUT)),
            close_timeout=check_timeout("close_timeout", get("close_timeout", DEFAULT_CLOSE_TIMEOUT)),
            max_queued_frames=_at_least_one("max_queued_frames", get("max_queued_frames", DEFAULT_MAX_QUEUED_FRAMES)),
            max_queued_bytes=_at_least_one("max_queued_bytes", get("max_queued_bytes", DEFAULT_MAX_QUEUED_BYTES)),
            max_message_size=_size_or_none(get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)),
            keepalive=(
                check_timeout("ping_interval", get("ping_interval", DEFAULT_PING_INTERVAL)),
                check_timeout("ping_timeout", get("ping_timeout", DEFAULT_PING_TIMEOUT)),
            ),
            token_retry=_token_retry(
                get("http_retries", DEFAULT_HTTP_RETRIES), get("http_retry_deadline", DEFAULT_HTTP_RETRY_DEADLINE)
            ),
            network=NetworkOptions.checked(
                verify_tls=get("verify_tls", True),
                ca_bundle=get("ca_bundle"),
                client_cert=get("client_cert"),
                proxy=get("proxy"),
            ),
            reconnect=reconnect_policy(get("reconnect")),
            dispatcher=dispatcher,
            bootstrap_url=_bootstrap_url(get("bootstrap_url")),
            limiter=_limiter(get("limiter")),
            limiter_timeout=check_timeout("limiter_timeout", get("limiter_timeout", DEFAULT_LIMITER_TIMEOUT)),
        )


def _unknown_keyword(name: str) -> str:
    close = difflib.get_close_matches(name, SessionOptions.__annotations__, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unexpected keyword argument {name!r}{hint}"


def _at_least_one(field: str, value: Any) -> int:
    if check_int(field, value) < 1:
        raise ValueError(f"{field}: expected at least 1, got {value!r}")
    return int(value)


def _size_or_none(value: Any) -> Optional[int]:
    if value is None:
        return None
    if check_int("max_message_size", value) < 1:
        raise ValueError(f"max_message_size: expected at least 1 byte or None, got {value!r}")
    return int(value)


def _limiter(value: Any) -> Optional[Limiter]:
    if value is not None and not isinstance(value, Limiter):
        raise TypeError(
            "limiter: expected a Limiter (LocalLimiter, RedisLimiter, or an object with acquire(timeout) and"
            f" release(slot)) or None, got {type(value).__name__}"
        )
    return value


def _token_retry(retries: Any, deadline: Any) -> Backoff:
    if check_int("http_retries", retries) < 0:
        raise ValueError(f"http_retries: expected 0 or more, got {retries!r}")
    return Backoff(
        initial=TOKEN_BACKOFF_INITIAL,
        cap=TOKEN_BACKOFF_CAP,
        retries=retries,
        deadline=check_timeout("http_retry_deadline", deadline),
    )


def _bootstrap_url(value: Any) -> str:
    if value is not None:
        return check_url("bootstrap_url", value, ("http", "https"))
    return check_url(f"bootstrap_url (from {BOOTSTRAP_URL_ENV})", default_bootstrap_url(), ("http", "https"))
