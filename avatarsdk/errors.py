"""Errors raised by avatarsdk and passed to ``on_error``.

Every fault the service or the network can produce becomes one :class:`AvatarSDKError` with a stable
:class:`AvatarSDKErrorCode` (the same string values as the official SDKs) and the structured context the
service gave (HTTP status, server code, close code, ids). Which code a fault gets is decided by one ordered
table, :data:`CLASSIFICATION_RULES`, read top to bottom by :func:`classify`.

Misuse (bad configuration, calls in the wrong state) raises ``ValueError`` or ``TypeError`` instead, before
anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Dict, FrozenSet, Optional, Tuple, Type, TypeVar, Union

__all__ = [
    "CLASSIFICATION_RULES",
    "AvatarSDKError",
    "AvatarSDKErrorCode",
    "ClassificationRule",
    "CloseCode",
    "RequestTimeoutError",
    "SessionTokenError",
    "classify",
]


class AvatarSDKErrorCode(str, Enum):
    """Stable error codes; string values serialise cleanly to logs and JSON."""

    sessionTokenExpired = "sessionTokenExpired"
    sessionTokenInvalid = "sessionTokenInvalid"
    appIDUnrecognized = "appIDUnrecognized"
    appIDMismatch = "appIDMismatch"
    avatarNotFound = "avatarNotFound"
    billingRequired = "billingRequired"
    creditsExhausted = "creditsExhausted"
    sessionDurationExceeded = "sessionDurationExceeded"
    concurrencyLimit = "concurrencyLimit"
    unsupportedSampleRate = "unsupportedSampleRate"
    invalidEgressConfig = "invalidEgressConfig"
    egressUnavailable = "egressUnavailable"
    idleTimeout = "idleTimeout"
    upstreamError = "upstreamError"
    invalidRequest = "invalidRequest"
    connectionFailed = "connectionFailed"
    connectionClosed = "connectionClosed"
    protocolError = "protocolError"
    serverError = "serverError"
    timeout = "timeout"
    """Not the service's: the SDK gave up waiting (a pull request's frame timeout or deadline)."""
    unknown = "unknown"


class CloseCode(IntEnum):
    """The service's own WebSocket close codes (an error's ``close_code`` is one of these when it matches; it
    compares equal to the plain number either way)."""

    CREDITS_EXHAUSTED = 4001
    """The account ran out of credits."""
    SESSION_TIMEOUT = 4002
    """The session reached the plan's maximum length (worth retrying with a new session)."""
    CONCURRENCY_LIMIT = 4003
    """The plan's concurrent sessions are all in use."""
    AUTH_FAILED = 4010
    """The session token expired or is invalid."""
    UPSTREAM_UNAVAILABLE = 4503
    """The service's upstream is unavailable (worth retrying with a new session)."""

    # The number in text on every Python (3.9 and 3.10 would say "CloseCode.CREDITS_EXHAUSTED"), as 3.11 does.
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(self.value, format_spec)


def close_code_value(code: Optional[int]) -> Union[CloseCode, int, None]:
    """``code`` as a :class:`CloseCode` when it is one of the service's, else as it is."""
    if code is None or isinstance(code, CloseCode):
        return code
    try:
        return CloseCode(code)
    except ValueError:
        return code


# Phases, in the order a session goes through them.
PHASE_SESSION_TOKEN = "session_token"
PHASE_WEBSOCKET_CONNECT = "websocket_connect"
PHASE_WEBSOCKET_HANDSHAKE = "websocket_handshake"
PHASE_WEBSOCKET_SEND = "websocket_send"
PHASE_WEBSOCKET_RUNTIME = "websocket_runtime"


_E = TypeVar("_E", bound="AvatarSDKError")


class AvatarSDKError(Exception):
    """A fault reported by the service or the transport, with structured context.

    Attributes:
        code: What went wrong, as a stable :class:`AvatarSDKErrorCode`.
        message: A human-readable sentence (never contains credentials).
        phase: Where it happened: ``session_token``, ``websocket_connect``, ``websocket_handshake``,
            ``websocket_send`` or ``websocket_runtime``.
        http_status: HTTP status of a rejected token call or WebSocket upgrade.
        server_code: The service's own code (JSON:API ``code``, or ``ServerError.code`` as a string).
        server_title: JSON:API ``title``.
        server_detail: JSON:API ``detail`` or ``ServerError.message``.
        connection_id: The connection the fault belongs to, when known.
        req_id: The request (utterance) the fault belongs to, when known.
        raw_body: The response body the service sent (truncated to 64 KiB), when there was one.
        close_code: WebSocket close code, when the connection was closed (a :class:`CloseCode` when it is one of
            the service's own).
        close_reason: WebSocket close reason, when the connection was closed.
        retryable: ``True`` when trying again (with a new session where a session is involved) may succeed.
    """

    def __init__(
        self,
        code: AvatarSDKErrorCode,
        message: str,
        *,
        phase: str = "unknown",
        http_status: Optional[int] = None,
        server_code: Optional[str] = None,
        server_title: Optional[str] = None,
        server_detail: Optional[str] = None,
        connection_id: Optional[str] = None,
        req_id: Optional[str] = None,
        raw_body: Optional[str] = None,
        close_code: Optional[int] = None,
        close_reason: Optional[str] = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = AvatarSDKErrorCode(code)
        self.message = message
        self.phase = phase
        self.http_status = http_status
        self.server_code = server_code
        self.server_title = server_title
        self.server_detail = server_detail
        self.connection_id = connection_id
        self.req_id = req_id
        self.raw_body = raw_body
        self.close_code = close_code_value(close_code)
        self.close_reason = close_reason
        self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"

    def __repr__(self) -> str:
        fields = [f"code={self.code.value!r}", f"phase={self.phase!r}"]
        for name in ("http_status", "server_code", "close_code", "connection_id", "req_id"):
            value = getattr(self, name)
            if value is not None:
                fields.append(f"{name}={int(value) if name == 'close_code' else value!r}")
        fields.append(f"retryable={self.retryable}")
        fields.append(f"message={self.message!r}")
        return f"{type(self).__name__}({', '.join(fields)})"

    def _derive(self: _E, message: str, **changes: Any) -> _E:
        """A new error of the same kind and context (code, server and close details, ...) with ``message`` and
        the attributes in ``changes`` replaced: what a request or a later call raises for this fault."""
        state = {**self.__dict__, "message": message}
        for name, value in changes.items():
            if name not in state:
                raise AttributeError(f"AvatarSDKError has no attribute {name!r}")
            state[name] = value
        return _rebuild(type(self), state)

    def __reduce__(self) -> Tuple[Any, ...]:
        # Keyword-only constructor arguments: rebuild from the attribute dict so errors pickle
        # (multiprocessing, logging handlers that ship records to other processes).
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: Type[_E], state: Dict[str, Any]) -> _E:
    obj = cls.__new__(cls)
    Exception.__init__(obj, state["message"])  # __reduce__ and _derive always pass it
    obj.__dict__.update(state)
    return obj


class SessionTokenError(AvatarSDKError):
    """Raised by :meth:`AvatarSession.init` when the session token cannot be obtained."""

    def __init__(
        self,
        message: str,
        *,
        code: AvatarSDKErrorCode = AvatarSDKErrorCode.invalidRequest,
        phase: str = PHASE_SESSION_TOKEN,
        http_status: Optional[int] = None,
        server_code: Optional[str] = None,
        server_title: Optional[str] = None,
        server_detail: Optional[str] = None,
        connection_id: Optional[str] = None,
        req_id: Optional[str] = None,
        raw_body: Optional[str] = None,
        close_code: Optional[int] = None,
        close_reason: Optional[str] = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(
            code,
            message,
            phase=phase,
            http_status=http_status,
            server_code=server_code,
            server_title=server_title,
            server_detail=server_detail,
            connection_id=connection_id,
            req_id=req_id,
            raw_body=raw_body,
            close_code=close_code,
            close_reason=close_reason,
            retryable=retryable,
        )


class RequestTimeoutError(AvatarSDKError, TimeoutError):
    """A pull request (:class:`~avatarsdk.AvatarRequest`) waited longer than its frame timeout or deadline.

    Its ``code`` is ``timeout``; it is also a builtin ``TimeoutError``.
    """


# --------------------------------------------------------------------------------------------------
# Classification: one ordered table, first matching row wins.
# --------------------------------------------------------------------------------------------------

_ANY_PHASE: FrozenSet[str] = frozenset()
_WS_PHASES = frozenset(
    {PHASE_WEBSOCKET_CONNECT, PHASE_WEBSOCKET_HANDSHAKE, PHASE_WEBSOCKET_SEND, PHASE_WEBSOCKET_RUNTIME}
)
_WS_SERVER_PHASES = frozenset({PHASE_WEBSOCKET_HANDSHAKE, PHASE_WEBSOCKET_RUNTIME})
_START_PHASES = frozenset({PHASE_WEBSOCKET_CONNECT, PHASE_WEBSOCKET_HANDSHAKE})  # start(): before the confirmation


@dataclass(frozen=True)
class ClassificationRule:
    """One row of the classification table.

    A row matches when every condition it sets holds: ``codes`` (a server code or a close code, compared
    as strings), ``statuses`` (HTTP status), ``texts`` (any of them, lowercase, found in the server's
    text), ``phases`` and ``transport`` (the fault is a network failure, not a server answer).
    """

    code: AvatarSDKErrorCode
    retryable: bool = False
    codes: FrozenSet[str] = frozenset()
    statuses: FrozenSet[int] = frozenset()
    texts: Tuple[str, ...] = ()
    phases: FrozenSet[str] = _ANY_PHASE
    transport: Optional[bool] = None
    note: str = ""

    def matches(
        self,
        *,
        phase: str,
        http_status: Optional[int],
        codes: Tuple[str, ...],
        text: str,
        transport: bool,
    ) -> bool:
        if self.transport is not None and self.transport != transport:
            return False
        if self.phases and phase not in self.phases:
            return False
        if self.codes and not any(c in self.codes for c in codes):
            return False
        if self.statuses and http_status not in self.statuses:
            return False
        return not self.texts or any(t in text for t in self.texts)


def _codes(*values: object) -> FrozenSet[str]:
    return frozenset(str(v) for v in values)


def _range(lo: int, hi: int) -> FrozenSet[int]:
    return frozenset(range(lo, hi + 1))


C = AvatarSDKErrorCode

#: The classification table, in the order it is read. Each row has a test (tests/test_errors.py).
CLASSIFICATION_RULES: Tuple[ClassificationRule, ...] = (
    # Network failures before or without any answer from the service.
    ClassificationRule(C.connectionFailed, True, transport=True, note="timeout, refused, reset, DNS, TLS"),
    # Close codes / ServerError codes of the service's newer generation (PROTOCOL.md section 4).
    ClassificationRule(C.creditsExhausted, False, codes=_codes(4001), phases=_WS_PHASES),
    ClassificationRule(
        C.sessionDurationExceeded, True, codes=_codes(4002), phases=_WS_PHASES, note="retry with a new session"
    ),
    ClassificationRule(
        C.concurrencyLimit,
        True,
        codes=_codes(4003),
        phases=_START_PHASES,
        note="a refused start: a session ending frees a slot, as after the token call's 429",
    ),
    ClassificationRule(C.concurrencyLimit, False, codes=_codes(4003), phases=_WS_PHASES),
    ClassificationRule(C.sessionTokenExpired, False, codes=_codes(4010), texts=("expired",), phases=_WS_PHASES),
    ClassificationRule(C.sessionTokenInvalid, False, codes=_codes(4010), phases=_WS_PHASES),
    ClassificationRule(C.upstreamError, True, codes=_codes(4503), phases=_WS_PHASES, note="retry with a new session"),
    # Texts the service is known to send (PROTOCOL.md section 5).
    ClassificationRule(C.creditsExhausted, False, texts=("credits exhausted",)),
    ClassificationRule(
        C.sessionDurationExceeded, True, texts=("session time limit reached", "maximum session duration")
    ),
    ClassificationRule(C.billingRequired, False, texts=("session denied",)),
    ClassificationRule(C.sessionTokenInvalid, False, texts=("invalid session token", "empty token")),
    ClassificationRule(C.sessionTokenExpired, False, texts=("token is expired", "session token expired")),
    ClassificationRule(C.appIDMismatch, False, texts=("app id mismatch",)),
    ClassificationRule(C.appIDUnrecognized, False, texts=("app id unrecognized", "appidunrecognized")),
    ClassificationRule(C.avatarNotFound, False, texts=("avatar not found",)),
    ClassificationRule(C.unsupportedSampleRate, False, texts=("unsupported sample rate",)),
    ClassificationRule(C.idleTimeout, False, texts=("livekit silence timeout", "no audio input for")),
    ClassificationRule(C.invalidEgressConfig, False, texts=("missing livekit credentials",)),
    ClassificationRule(
        C.egressUnavailable,
        True,
        texts=("egress client is not configured on server", "failed to create egress connection"),
    ),
    ClassificationRule(
        C.upstreamError, True, texts=("driven server returned non-200 status code", "driven server request failed")
    ),
    ClassificationRule(
        C.protocolError,
        False,
        texts=(
            "expected clientconfiguresession message",
            "unexpected message type",
            "failed to unmarshal initial message",
        ),
    ),
    # gRPC codes carried in ServerError.code, when the text said nothing more specific.
    ClassificationRule(
        C.invalidEgressConfig,
        False,
        codes=_codes(3, "INVALID_ARGUMENT"),
        texts=("livekit", "agora", "egress"),
        phases=_WS_SERVER_PHASES,
    ),
    ClassificationRule(C.invalidRequest, False, codes=_codes(3, "INVALID_ARGUMENT"), phases=_WS_SERVER_PHASES),
    ClassificationRule(C.invalidEgressConfig, False, codes=_codes(16, "UNAUTHENTICATED"), phases=_WS_SERVER_PHASES),
    ClassificationRule(C.egressUnavailable, True, codes=_codes(14, "UNAVAILABLE"), phases=_WS_SERVER_PHASES),
    # HTTP statuses (token call and WebSocket upgrade).
    ClassificationRule(
        C.sessionTokenExpired, False, statuses=frozenset({401}), phases=frozenset({PHASE_WEBSOCKET_CONNECT})
    ),
    ClassificationRule(
        C.invalidRequest,
        False,
        statuses=frozenset({401, 403}),
        phases=frozenset({PHASE_SESSION_TOKEN}),
        note="the API key was refused",
    ),
    ClassificationRule(C.billingRequired, False, statuses=frozenset({402})),
    ClassificationRule(C.appIDUnrecognized, False, statuses=frozenset({404})),
    ClassificationRule(C.concurrencyLimit, True, statuses=frozenset({429})),
    ClassificationRule(
        C.sessionTokenInvalid, False, statuses=frozenset({400}), phases=frozenset({PHASE_WEBSOCKET_CONNECT})
    ),
    ClassificationRule(C.invalidRequest, False, statuses=_range(400, 499)),
    ClassificationRule(C.serverError, True, statuses=_range(500, 599)),
    # Connection closes without a more specific code above.
    ClassificationRule(
        C.connectionClosed,
        True,
        codes=_codes(1001, 1006, 1011, 1012, 1013, 1014),
        phases=_WS_PHASES,
        note="dropped or going away: worth retrying",
    ),
    ClassificationRule(C.connectionClosed, False, codes=_codes(*range(1000, 5000)), phases=_WS_PHASES),
    # Anything else the server said during the handshake or at runtime.
    ClassificationRule(C.serverError, False, phases=_WS_SERVER_PHASES),
)


def classify(
    *,
    phase: str,
    http_status: Optional[int] = None,
    server_code: Optional[str] = None,
    close_code: Optional[int] = None,
    text: str = "",
    transport: bool = False,
) -> Tuple[AvatarSDKErrorCode, bool, Optional[int]]:
    """Classify a fault with :data:`CLASSIFICATION_RULES`.

    Args:
        phase: The phase the fault happened in.
        http_status: HTTP status of a token call or WebSocket upgrade.
        server_code: The service's code (JSON:API code or ServerError code).
        close_code: The WebSocket close code.
        text: Free text from the service (titles, details, messages, close reasons); matched lowercase.
        transport: ``True`` for a network failure (timeout, refused, reset) rather than a server answer.

    Returns:
        ``(code, retryable, row)``: the error code, whether retrying may help, and the index of the matching
        row (``None`` when no row matched and the code is ``unknown``).
    """
    codes = tuple(str(c) for c in (server_code, close_code) if c is not None and str(c) != "")
    lowered = text.lower()
    for index, rule in enumerate(CLASSIFICATION_RULES):
        if rule.matches(phase=phase, http_status=http_status, codes=codes, text=lowered, transport=transport):
            return rule.code, rule.retryable, index
    return AvatarSDKErrorCode.unknown, False, None
