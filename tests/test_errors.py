"""The error type and the classification table (avatarsdk/errors.py).

Each row of CLASSIFICATION_RULES has at least one case below, written out by hand (not derived from the
table): the inputs given to classify(), the code and retryability expected, and a readable description of
the row that should match. The row index is looked up from that description, so reordering the table keeps
these tests meaningful while a case that lands on the wrong row fails.
"""

from __future__ import annotations

import pickle
from typing import Any, Dict, List, Optional

import pytest

from avatarsdk import AvatarSDKError, AvatarSDKErrorCode, SessionTokenError
from avatarsdk.errors import CLASSIFICATION_RULES, classify

C = AvatarSDKErrorCode

TOKEN = "session_token"
CONNECT = "websocket_connect"
HANDSHAKE = "websocket_handshake"
SEND = "websocket_send"
RUNTIME = "websocket_runtime"

# --------------------------------------------------------------------------------------------------
# Readable descriptions of the rows, and how to find each row in the table.
# --------------------------------------------------------------------------------------------------

ROW_SPECS: Dict[str, Dict[str, Any]] = {
    "network failure": {"code": C.connectionFailed, "transport": True},
    "close 4001 credits exhausted": {"code": C.creditsExhausted, "close": "4001"},
    "close 4002 session timeout": {"code": C.sessionDurationExceeded, "close": "4002"},
    "close 4003 refusing a start": {"code": C.concurrencyLimit, "close": "4003", "retryable": True},
    "close 4003 concurrency limit": {"code": C.concurrencyLimit, "close": "4003", "retryable": False},
    "close 4010 with 'expired'": {"code": C.sessionTokenExpired, "close": "4010"},
    "close 4010 otherwise": {"code": C.sessionTokenInvalid, "close": "4010"},
    "close 4503 upstream unavailable": {"code": C.upstreamError, "close": "4503"},
    "gRPC 3 with egress words": {"code": C.invalidEgressConfig, "close": "3"},
    "gRPC 3 otherwise": {"code": C.invalidRequest, "close": "3"},
    "gRPC 16 unauthenticated": {"code": C.invalidEgressConfig, "close": "16"},
    "gRPC 14 unavailable": {"code": C.egressUnavailable, "close": "14"},
    "text: credits exhausted": {"code": C.creditsExhausted, "text": "credits exhausted"},
    "text: session duration": {"code": C.sessionDurationExceeded, "text": "maximum session duration"},
    "text: session denied": {"code": C.billingRequired, "text": "session denied"},
    "text: invalid token": {"code": C.sessionTokenInvalid, "text": "empty token"},
    "text: token expired": {"code": C.sessionTokenExpired, "text": "token is expired"},
    "text: app id mismatch": {"code": C.appIDMismatch, "text": "app id mismatch"},
    "text: app id unrecognized": {"code": C.appIDUnrecognized, "text": "app id unrecognized"},
    "text: avatar not found": {"code": C.avatarNotFound, "text": "avatar not found"},
    "text: unsupported sample rate": {"code": C.unsupportedSampleRate, "text": "unsupported sample rate"},
    "text: idle timeout": {"code": C.idleTimeout, "text": "no audio input for"},
    "text: missing livekit credentials": {"code": C.invalidEgressConfig, "text": "missing livekit credentials"},
    "text: egress unavailable": {"code": C.egressUnavailable, "text": "failed to create egress connection"},
    "text: driven server failed": {"code": C.upstreamError, "text": "driven server request failed"},
    "text: protocol violation": {"code": C.protocolError, "text": "unexpected message type"},
    "HTTP 401 on upgrade": {"code": C.sessionTokenExpired, "status": 401, "phases": {CONNECT}},
    "HTTP 401/403 on token call": {"code": C.invalidRequest, "status": 403, "phases": {TOKEN}},
    "HTTP 402": {"code": C.billingRequired, "status": 402},
    "HTTP 404": {"code": C.appIDUnrecognized, "status": 404},
    "HTTP 429": {"code": C.concurrencyLimit, "status": 429},
    "HTTP 400 on upgrade": {"code": C.sessionTokenInvalid, "status": 400, "phases": {CONNECT}},
    "HTTP other 4xx": {"code": C.invalidRequest, "status": 418, "phases": set()},
    "HTTP 5xx": {"code": C.serverError, "status": 503},
    "close dropped (retryable)": {"code": C.connectionClosed, "close": "1006", "retryable": True},
    "close other (final)": {"code": C.connectionClosed, "close": "1008", "retryable": False},
    "server error fallback": {"code": C.serverError, "bare": True},
}


def find_row(description: str) -> int:
    """Index of the single row of CLASSIFICATION_RULES that ``description`` names."""
    spec = ROW_SPECS[description]
    found = []
    for index, rule in enumerate(CLASSIFICATION_RULES):
        if rule.code != spec["code"]:
            continue
        if "transport" in spec and rule.transport is not spec["transport"]:
            continue
        if "close" in spec and spec["close"] not in rule.codes:
            continue
        if "status" in spec and spec["status"] not in rule.statuses:
            continue
        if "text" in spec and spec["text"] not in rule.texts:
            continue
        if "phases" in spec and rule.phases != frozenset(spec["phases"]):
            continue
        if "retryable" in spec and rule.retryable is not spec["retryable"]:
            continue
        if spec.get("bare") and (rule.codes or rule.statuses or rule.texts or rule.transport is not None):
            continue
        found.append(index)
    assert len(found) == 1, f"{description!r} names rows {found}"
    return found[0]


# --------------------------------------------------------------------------------------------------
# The cases: (classify() inputs, expected code, expected retryable, row description)
# --------------------------------------------------------------------------------------------------


def case(
    row: Optional[str], code: AvatarSDKErrorCode, retryable: bool, id: str, **inputs: Any
) -> Any:  # pytest.param's type is private
    return pytest.param(inputs, code, retryable, row, id=id)


CASES: List[Any] = [
    # Transport failures: first row, whatever else is known.
    case("network failure", C.connectionFailed, True, "transport-token", phase=TOKEN, transport=True),
    case("network failure", C.connectionFailed, True, "transport-connect", phase=CONNECT, transport=True),
    case(
        "network failure",
        C.connectionFailed,
        True,
        "transport-beats-close-code",
        phase=RUNTIME,
        close_code=4001,
        text="connection reset by peer",
        transport=True,
    ),
    # Close codes / business codes of the newer generation.
    case("close 4001 credits exhausted", C.creditsExhausted, False, "close-4001", phase=RUNTIME, close_code=4001),
    case(
        "close 4001 credits exhausted",
        C.creditsExhausted,
        False,
        "server-code-4001-handshake",
        phase=HANDSHAKE,
        server_code="4001",
    ),
    case("close 4002 session timeout", C.sessionDurationExceeded, True, "close-4002", phase=RUNTIME, close_code=4002),
    case(
        "close 4002 session timeout",
        C.sessionDurationExceeded,
        True,
        "server-code-4002-send",
        phase=SEND,
        server_code="4002",
    ),
    case("close 4003 concurrency limit", C.concurrencyLimit, False, "close-4003", phase=RUNTIME, close_code=4003),
    case(
        "close 4003 concurrency limit",
        C.concurrencyLimit,
        False,
        "server-code-4003-send",
        phase=SEND,
        server_code="4003",
    ),
    case(
        "close 4003 refusing a start",
        C.concurrencyLimit,
        True,
        "close-4003-handshake",
        phase=HANDSHAKE,
        close_code=4003,
    ),
    case(
        "close 4003 refusing a start",
        C.concurrencyLimit,
        True,
        "server-code-4003-connect",
        phase=CONNECT,
        server_code="4003",
    ),
    case(
        "close 4010 with 'expired'",
        C.sessionTokenExpired,
        False,
        "close-4010-expired",
        phase=RUNTIME,
        close_code=4010,
        text="auth failed: token EXPIRED",
    ),
    case(
        "close 4010 otherwise",
        C.sessionTokenInvalid,
        False,
        "close-4010-auth-failed",
        phase=RUNTIME,
        close_code=4010,
        text="auth failed",
    ),
    case("close 4010 otherwise", C.sessionTokenInvalid, False, "close-4010-no-text", phase=CONNECT, close_code=4010),
    case("close 4503 upstream unavailable", C.upstreamError, True, "close-4503", phase=RUNTIME, close_code=4503),
    # gRPC codes in ServerError.code, as ints-as-strings and as names.
    case(
        "gRPC 3 with egress words",
        C.invalidEgressConfig,
        False,
        "grpc-3-livekit",
        phase=HANDSHAKE,
        server_code="3",
        text="LiveKit url is not valid",
    ),
    case(
        "gRPC 3 with egress words",
        C.invalidEgressConfig,
        False,
        "grpc-invalid-argument-agora",
        phase=HANDSHAKE,
        server_code="INVALID_ARGUMENT",
        text="Agora channel name required",
    ),
    case(
        "gRPC 3 with egress words",
        C.invalidEgressConfig,
        False,
        "grpc-3-egress",
        phase=RUNTIME,
        server_code="3",
        text="bad Egress settings",
    ),
    case(
        "gRPC 3 otherwise",
        C.invalidRequest,
        False,
        "grpc-3-plain",
        phase=RUNTIME,
        server_code="3",
        text="req_id is required",
    ),
    case(
        "gRPC 3 otherwise",
        C.invalidRequest,
        False,
        "grpc-invalid-argument-plain",
        phase=HANDSHAKE,
        server_code="INVALID_ARGUMENT",
    ),
    case("gRPC 16 unauthenticated", C.invalidEgressConfig, False, "grpc-16", phase=HANDSHAKE, server_code="16"),
    case(
        "gRPC 16 unauthenticated",
        C.invalidEgressConfig,
        False,
        "grpc-unauthenticated",
        phase=RUNTIME,
        server_code="UNAUTHENTICATED",
    ),
    case("gRPC 14 unavailable", C.egressUnavailable, True, "grpc-14", phase=RUNTIME, server_code="14"),
    case(
        "gRPC 14 unavailable",
        C.egressUnavailable,
        True,
        "grpc-unavailable",
        phase=HANDSHAKE,
        server_code="UNAVAILABLE",
    ),
    # Every known server text of PROTOCOL.md section 5, each in a casing of its own.
    case(
        "text: invalid token",
        C.sessionTokenInvalid,
        False,
        "text-invalid-session-token",
        phase=CONNECT,
        http_status=400,
        text="Bad Request | Invalid Session Token",
    ),
    case("text: invalid token", C.sessionTokenInvalid, False, "text-empty-token", phase=RUNTIME, text="EMPTY TOKEN"),
    case(
        "text: token expired",
        C.sessionTokenExpired,
        False,
        "text-token-is-expired",
        phase=RUNTIME,
        text="Token Is Expired",
    ),
    case(
        "text: token expired",
        C.sessionTokenExpired,
        False,
        "text-session-token-expired",
        phase=HANDSHAKE,
        text="the Session Token Expired at 12:00",
    ),
    case(
        "text: app id mismatch", C.appIDMismatch, False, "text-app-id-mismatch", phase=RUNTIME, text="App ID Mismatch"
    ),
    case(
        "text: app id unrecognized",
        C.appIDUnrecognized,
        False,
        "text-app-id-unrecognized",
        phase=RUNTIME,
        text="APP ID UNRECOGNIZED",
    ),
    case(
        "text: app id unrecognized",
        C.appIDUnrecognized,
        False,
        "text-appidunrecognized-code",
        phase=HANDSHAKE,
        server_code="AppIDUnrecognized",
        text="AppIDUnrecognized",
    ),
    case(
        "text: avatar not found",
        C.avatarNotFound,
        False,
        "text-avatar-not-found",
        phase=CONNECT,
        http_status=404,
        text="Not Found | Avatar Not Found",
    ),
    case("text: session denied", C.billingRequired, False, "text-session-denied", phase=RUNTIME, text="Session Denied"),
    case(
        "text: credits exhausted",
        C.creditsExhausted,
        False,
        "text-credits-exhausted",
        phase=RUNTIME,
        text="Credits Exhausted",
    ),
    case(
        "text: session duration",
        C.sessionDurationExceeded,
        True,
        "text-session-time-limit-reached",
        phase=RUNTIME,
        text="Session Time Limit Reached",
    ),
    case(
        "text: session duration",
        C.sessionDurationExceeded,
        True,
        "text-maximum-session-duration",
        phase=RUNTIME,
        text="MAXIMUM SESSION DURATION of 30m",
    ),
    case(
        "text: unsupported sample rate",
        C.unsupportedSampleRate,
        False,
        "text-unsupported-sample-rate",
        phase=HANDSHAKE,
        text="Unsupported Sample Rate: 11025",
    ),
    case(
        "text: idle timeout",
        C.idleTimeout,
        False,
        "text-livekit-silence-timeout",
        phase=RUNTIME,
        text="LiveKit Silence Timeout",
    ),
    case(
        "text: idle timeout",
        C.idleTimeout,
        False,
        "text-no-audio-input-for",
        phase=RUNTIME,
        text="No Audio Input For 60s",
    ),
    case(
        "text: missing livekit credentials",
        C.invalidEgressConfig,
        False,
        "text-missing-livekit-credentials",
        phase=HANDSHAKE,
        text="Missing LiveKit Credentials",
    ),
    case(
        "text: egress unavailable",
        C.egressUnavailable,
        True,
        "text-egress-client-not-configured",
        phase=HANDSHAKE,
        text="Egress Client Is Not Configured On Server",
    ),
    case(
        "text: egress unavailable",
        C.egressUnavailable,
        True,
        "text-failed-to-create-egress",
        phase=HANDSHAKE,
        text="FAILED TO CREATE EGRESS CONNECTION",
    ),
    case(
        "text: driven server failed",
        C.upstreamError,
        True,
        "text-driven-non-200",
        phase=RUNTIME,
        text="Driven Server Returned Non-200 Status Code: 503",
    ),
    case(
        "text: driven server failed",
        C.upstreamError,
        True,
        "text-driven-request-failed",
        phase=RUNTIME,
        text="driven server REQUEST FAILED",
    ),
    case(
        "text: protocol violation",
        C.protocolError,
        False,
        "text-expected-configure",
        phase=HANDSHAKE,
        text="expected ClientConfigureSession message",
    ),
    case(
        "text: protocol violation",
        C.protocolError,
        False,
        "text-unexpected-message-type",
        phase=RUNTIME,
        text="Unexpected Message Type 9",
    ),
    case(
        "text: protocol violation",
        C.protocolError,
        False,
        "text-failed-to-unmarshal",
        phase=HANDSHAKE,
        text="Failed To Unmarshal Initial Message",
    ),
    # HTTP statuses (token call and upgrade).
    case(
        "HTTP 401 on upgrade",
        C.sessionTokenExpired,
        False,
        "http-401-connect",
        phase=CONNECT,
        http_status=401,
        server_code="UNAUTHENTICATED",
        text="Unauthorized",
    ),
    case(
        "HTTP 401/403 on token call",
        C.invalidRequest,
        False,
        "http-401-token",
        phase=TOKEN,
        http_status=401,
        server_code="UNAUTHENTICATED",
        text="Unauthorized | invalid api key",
    ),
    case("HTTP 401/403 on token call", C.invalidRequest, False, "http-403-token", phase=TOKEN, http_status=403),
    case("HTTP other 4xx", C.invalidRequest, False, "http-403-connect", phase=CONNECT, http_status=403),
    case("HTTP 402", C.billingRequired, False, "http-402-connect", phase=CONNECT, http_status=402),
    case("HTTP 402", C.billingRequired, False, "http-402-token", phase=TOKEN, http_status=402),
    case("HTTP 404", C.appIDUnrecognized, False, "http-404-connect", phase=CONNECT, http_status=404, text="Not Found"),
    case("HTTP 429", C.concurrencyLimit, True, "http-429-token", phase=TOKEN, http_status=429),
    case(
        "HTTP 429",
        C.concurrencyLimit,
        True,
        "http-429-token-with-close-like-code",
        phase=TOKEN,
        http_status=429,
        server_code="4003",
    ),
    case("HTTP 400 on upgrade", C.sessionTokenInvalid, False, "http-400-connect", phase=CONNECT, http_status=400),
    case(
        "HTTP other 4xx",
        C.invalidRequest,
        False,
        "http-400-token",
        phase=TOKEN,
        http_status=400,
        server_code="INVALID_ARGUMENT",
        text="expireAt out of range",
    ),
    case("HTTP other 4xx", C.invalidRequest, False, "http-409-token", phase=TOKEN, http_status=409),
    case("HTTP other 4xx", C.invalidRequest, False, "http-418-connect", phase=CONNECT, http_status=418),
    case("HTTP 5xx", C.serverError, True, "http-500-token", phase=TOKEN, http_status=500, text="internal"),
    case("HTTP 5xx", C.serverError, True, "http-502-connect", phase=CONNECT, http_status=502),
    case("HTTP 5xx", C.serverError, True, "http-599-token", phase=TOKEN, http_status=599),
    # Closes without a more specific code.
    case("close dropped (retryable)", C.connectionClosed, True, "close-1006", phase=RUNTIME, close_code=1006),
    case("close dropped (retryable)", C.connectionClosed, True, "close-1011", phase=RUNTIME, close_code=1011),
    case("close dropped (retryable)", C.connectionClosed, True, "close-1001", phase=HANDSHAKE, close_code=1001),
    case("close dropped (retryable)", C.connectionClosed, True, "close-1006-send", phase=SEND, close_code=1006),
    case("close other (final)", C.connectionClosed, False, "close-1008", phase=RUNTIME, close_code=1008),
    case("close other (final)", C.connectionClosed, False, "close-1002", phase=HANDSHAKE, close_code=1002),
    case("close other (final)", C.connectionClosed, False, "close-4999", phase=RUNTIME, close_code=4999),
    # Anything else said during the handshake or at runtime.
    case(
        "server error fallback",
        C.serverError,
        False,
        "fallback-handshake",
        phase=HANDSHAKE,
        server_code="13",
        text="something odd happened",
    ),
    case("server error fallback", C.serverError, False, "fallback-runtime", phase=RUNTIME, server_code="99"),
    case("server error fallback", C.serverError, False, "fallback-runtime-empty", phase=RUNTIME),
    # No row: unknown.
    case(None, C.unknown, False, "unknown-token-nothing", phase=TOKEN),
    case(None, C.unknown, False, "unknown-token-text", phase=TOKEN, text="something odd happened"),
    case(None, C.unknown, False, "unknown-connect-nothing", phase=CONNECT),
    case(None, C.unknown, False, "unknown-send-nothing", phase=SEND),
    case(None, C.unknown, False, "unknown-grpc-3-on-connect", phase=CONNECT, server_code="3"),
    case(None, C.unknown, False, "unknown-http-200-token", phase=TOKEN, http_status=200),
]


@pytest.mark.parametrize(("inputs", "code", "retryable", "row"), CASES)
def test_classify_case(inputs: Dict[str, Any], code: AvatarSDKErrorCode, retryable: bool, row: Optional[str]) -> None:
    got_code, got_retryable, got_row = classify(**inputs)
    assert got_code is code
    assert got_retryable is retryable
    expected_row = None if row is None else find_row(row)
    assert got_row == expected_row, (
        f"matched row {got_row} ({CLASSIFICATION_RULES[got_row] if got_row is not None else None}),"
        f" expected {row!r} = row {expected_row}"
    )


def test_every_row_is_hit_by_a_case() -> None:
    hit = set()
    for param in CASES:
        inputs = param.values[0]
        hit.add(classify(**inputs)[2])
    hit.discard(None)
    missing = sorted(set(range(len(CLASSIFICATION_RULES))) - hit)
    assert not missing, f"rows without a case: {[(i, CLASSIFICATION_RULES[i]) for i in missing]}"


def test_every_row_has_one_description() -> None:
    rows = [find_row(description) for description in ROW_SPECS]
    assert sorted(rows) == list(range(len(CLASSIFICATION_RULES)))


def test_the_unknown_result_has_no_row() -> None:
    assert classify(phase=TOKEN) == (C.unknown, False, None)


@pytest.mark.parametrize("code", [4001, 4002, 4003, 4010, 4503])
@pytest.mark.parametrize("as_server_code", [False, True])
def test_40xx_codes_do_not_classify_on_the_token_call(code: int, as_server_code: bool) -> None:
    kwargs: Dict[str, Any] = {"server_code": str(code)} if as_server_code else {"close_code": code}
    assert classify(phase=TOKEN, **kwargs) == (C.unknown, False, None)
    # ... while the same code does classify on the WebSocket.
    got_code, _, got_row = classify(phase=RUNTIME, **kwargs)
    assert got_code not in (C.unknown, C.connectionClosed)
    assert got_row is not None


@pytest.mark.parametrize("phase", [TOKEN, CONNECT, HANDSHAKE, SEND, RUNTIME])
def test_transport_failure_is_connection_failed_in_every_phase(phase: str) -> None:
    assert classify(phase=phase, transport=True) == (C.connectionFailed, True, find_row("network failure"))


def test_text_is_matched_case_insensitively_but_must_be_present() -> None:
    assert classify(phase=RUNTIME, text="CrEdItS eXhAuStEd")[0] is C.creditsExhausted
    assert classify(phase=RUNTIME, text="credits left: 0")[0] is C.serverError


# --------------------------------------------------------------------------------------------------
# AvatarSDKError
# --------------------------------------------------------------------------------------------------


def full_error(cls: type = AvatarSDKError) -> AvatarSDKError:
    kwargs: Dict[str, Any] = {
        "phase": "websocket_runtime",
        "http_status": 503,
        "server_code": "14",
        "server_title": "Unavailable",
        "server_detail": "egress down",
        "connection_id": "conn-7",
        "req_id": "20260101000000_abcdefghijkl",
        "raw_body": '{"errors": []}',
        "close_code": 4503,
        "close_reason": "upstream unavailable",
        "retryable": True,
    }
    if cls is SessionTokenError:
        return SessionTokenError("the message", code=C.egressUnavailable, **kwargs)
    return AvatarSDKError(C.egressUnavailable, "the message", **kwargs)


def test_str_is_code_colon_message() -> None:
    err = AvatarSDKError(C.creditsExhausted, "no credits left", phase=RUNTIME)
    assert str(err) == "creditsExhausted: no credits left"
    assert err.message == "no credits left"
    assert err.code is C.creditsExhausted


def test_code_given_as_string_becomes_the_enum() -> None:
    err = AvatarSDKError("serverError", "boom")  # type: ignore[arg-type]
    assert err.code is C.serverError
    with pytest.raises(ValueError):
        AvatarSDKError("notACode", "boom")  # type: ignore[arg-type]


def test_repr_shows_context_and_never_the_raw_body() -> None:
    secret = "sk-live-0123456789-SECRET"
    err = AvatarSDKError(
        C.sessionTokenInvalid,
        "session token request failed (HTTP 400)",
        phase=CONNECT,
        http_status=400,
        server_code="INVALID_ARGUMENT",
        connection_id="conn-1",
        req_id="req-9",
        raw_body=f'{{"apiKey": "{secret}"}}',
    )
    text = repr(err)
    assert "sessionTokenInvalid" in text
    assert "websocket_connect" in text
    assert "400" in text
    assert "conn-1" in text
    assert "req-9" in text
    assert "retryable=False" in text
    assert secret not in text
    assert secret not in str(err)
    retryable = AvatarSDKError(C.serverError, "x", retryable=True)
    assert "retryable=True" in repr(retryable)


@pytest.mark.parametrize("cls", [AvatarSDKError, SessionTokenError])
def test_pickle_round_trips_every_attribute(cls: type) -> None:
    err = full_error(cls)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is cls
    names = (
        "code",
        "message",
        "phase",
        "http_status",
        "server_code",
        "server_title",
        "server_detail",
        "connection_id",
        "req_id",
        "raw_body",
        "close_code",
        "close_reason",
        "retryable",
    )
    for name in names:
        assert getattr(copy, name) == getattr(err, name), name
    assert copy.code is C.egressUnavailable
    assert str(copy) == str(err)
    assert copy.args == err.args


def test_session_token_error_defaults() -> None:
    err = SessionTokenError("no token")
    assert isinstance(err, AvatarSDKError)
    assert err.code is C.invalidRequest
    assert err.phase == "session_token"
    assert err.retryable is False
    assert err.http_status is None
    assert err.raw_body is None
    assert str(err) == "invalidRequest: no token"
    with pytest.raises(AvatarSDKError):
        raise err


OFFICIAL_CODES = [
    "sessionTokenExpired",
    "sessionTokenInvalid",
    "appIDUnrecognized",
    "appIDMismatch",
    "avatarNotFound",
    "billingRequired",
    "creditsExhausted",
    "sessionDurationExceeded",
    "unsupportedSampleRate",
    "invalidEgressConfig",
    "egressUnavailable",
    "idleTimeout",
    "upstreamError",
    "invalidRequest",
    "connectionFailed",
    "connectionClosed",
    "protocolError",
    "serverError",
    "unknown",
]


def test_error_code_values_are_the_official_names_plus_ours() -> None:
    """The official SDK's codes, plus concurrencyLimit (the service's newer generation) and timeout (the
    SDK's own: a pull request gave up waiting)."""
    ours = ["concurrencyLimit", "timeout"]
    assert {c.value for c in AvatarSDKErrorCode} == {*OFFICIAL_CODES, *ours}
    assert len(AvatarSDKErrorCode) == len(OFFICIAL_CODES) + len(ours)
    for name in [*OFFICIAL_CODES, *ours]:
        member = AvatarSDKErrorCode(name)
        assert member.name == name
        assert member.value == name
        assert member == name  # a str enum: compares and serialises as its value


def test_a_derived_error_keeps_the_context_of_its_cause() -> None:
    """What a request or a later call raises for a fault: the cause's kind and context, its own message and
    the fields it names."""
    cause = SessionTokenError(
        "rejected", code=AvatarSDKErrorCode.serverError, http_status=503, raw_body="down", retryable=True
    )
    derived = cause._derive("request r1 failed: rejected", req_id="r1", phase="websocket_send")
    assert type(derived) is SessionTokenError and derived is not cause
    assert (derived.code, derived.http_status, derived.raw_body, derived.retryable) == (
        AvatarSDKErrorCode.serverError,
        503,
        "down",
        True,
    )
    assert (derived.req_id, derived.phase, str(derived)) == (
        "r1",
        "websocket_send",
        "serverError: request r1 failed: rejected",
    )
    assert cause.req_id is None and cause.message == "rejected"
    assert pickle.loads(pickle.dumps(derived)).req_id == "r1"
    with pytest.raises(AttributeError, match="nope"):
        cause._derive("x", nope=1)


# --------------------------------------------------------------------------------------------------
# The edges of the ranges in the table, and what an error keeps
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "status", "expected"),
    [
        (TOKEN, 399, (C.unknown, False)),
        (TOKEN, 400, (C.invalidRequest, False)),
        (TOKEN, 499, (C.invalidRequest, False)),
        (TOKEN, 500, (C.serverError, True)),
        (TOKEN, 599, (C.serverError, True)),
        (TOKEN, 600, (C.unknown, False)),
        (CONNECT, 399, (C.unknown, False)),
        (CONNECT, 499, (C.invalidRequest, False)),
        (CONNECT, 500, (C.serverError, True)),
        (CONNECT, 600, (C.unknown, False)),
    ],
)
def test_http_status_ranges_end_where_they_should(phase: str, status: int, expected: Any) -> None:
    assert classify(phase=phase, http_status=status)[:2] == expected


RETRYABLE_CLOSES = {1001, 1006, 1011, 1012, 1013, 1014}


@pytest.mark.parametrize("close_code", [1000, 1001, 1002, 1005, 1006, 1010, 1011, 1014, 1015, 3000, 4000, 4999])
@pytest.mark.parametrize("phase", [CONNECT, HANDSHAKE, SEND, RUNTIME])
def test_close_codes_from_1000_to_4999_are_connection_closed(close_code: int, phase: str) -> None:
    assert classify(phase=phase, close_code=close_code)[:2] == (C.connectionClosed, close_code in RETRYABLE_CLOSES)


@pytest.mark.parametrize("close_code", [999, 5000, 65535])
def test_close_codes_outside_1000_to_4999_are_not_connection_closed(close_code: int) -> None:
    assert classify(phase=RUNTIME, close_code=close_code)[:2] == (C.serverError, False)  # the fallback row
    assert classify(phase=SEND, close_code=close_code) == (C.unknown, False, None)
    assert classify(phase=TOKEN, close_code=close_code) == (C.unknown, False, None)


def test_missing_and_empty_codes_match_no_code_row() -> None:
    for server_code in (None, ""):
        assert classify(phase=SEND, server_code=server_code) == (C.unknown, False, None)
        assert classify(phase=SEND, server_code=server_code, close_code=1006)[:2] == (C.connectionClosed, True)
    assert classify(phase=SEND, server_code="4001") == (
        C.creditsExhausted,
        False,
        find_row("close 4001 credits exhausted"),
    )


@pytest.mark.parametrize("cls", [AvatarSDKError, SessionTokenError])
def test_an_error_keeps_every_context_attribute_it_is_given(cls: type) -> None:
    err = full_error(cls)
    assert (err.code, err.message, err.phase, err.http_status, err.retryable) == (
        C.egressUnavailable,
        "the message",
        "websocket_runtime",
        503,
        True,
    )
    assert (err.server_code, err.server_title, err.server_detail) == ("14", "Unavailable", "egress down")
    assert (err.connection_id, err.req_id) == ("conn-7", "20260101000000_abcdefghijkl")
    assert (err.raw_body, err.close_code, err.close_reason) == ('{"errors": []}', 4503, "upstream unavailable")
    assert err.args == ("the message",)


def test_an_error_without_context_has_none_of_it() -> None:
    err = AvatarSDKError(C.unknown, "?")
    assert err.phase == "unknown"
    assert err.retryable is False
    names = ("http_status", "server_code", "server_title", "server_detail", "connection_id", "req_id")
    names += ("raw_body", "close_code", "close_reason")
    assert {name: getattr(err, name) for name in names} == dict.fromkeys(names)


def test_repr_in_full() -> None:
    err = AvatarSDKError(
        C.upstreamError,
        "closed: 'upstream'",
        phase=RUNTIME,
        http_status=502,
        server_code="14",
        close_code=4503,
        connection_id="c1",
        req_id="r1",
        server_title="not shown",
        raw_body="not shown",
        retryable=True,
    )
    assert repr(err) == (
        "AvatarSDKError(code='upstreamError', phase='websocket_runtime', http_status=502, server_code='14',"
        " close_code=4503, connection_id='c1', req_id='r1', retryable=True, message=\"closed: 'upstream'\")"
    )
    assert repr(SessionTokenError("no token")) == (
        "SessionTokenError(code='invalidRequest', phase='session_token', retryable=False, message='no token')"
    )
