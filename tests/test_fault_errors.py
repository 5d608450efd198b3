"""The errors of a connection's faults (avatarsdk/_faults.py), without I/O: a failed connect, a rejected upgrade
(a real websocket-client exception), a close, a SERVER_ERROR message, the short description of an exception, and
how an unexpected reply is named. Each error's code, retryability, message and fields, secrets removed."""

from __future__ import annotations

import socket
import ssl
from typing import Any, Optional

import pytest
import websocket

from avatarsdk import AvatarSDKError, AvatarSDKErrorCode
from avatarsdk._faults import (
    CLOSE_ABNORMAL,
    CLOSE_NORMAL,
    closed_error,
    connect_failed,
    describe,
    server_error,
    type_of,
    upgrade_rejected,
)
from avatarsdk._protocol import (
    Animation,
    Confirm,
    Malformed,
    PlaybackStateMessage,
    ServerErrorMessage,
    Unknown,
)
from avatarsdk.errors import PHASE_WEBSOCKET_CONNECT, PHASE_WEBSOCKET_HANDSHAKE, PHASE_WEBSOCKET_RUNTIME

C = AvatarSDKErrorCode
SECRET = "tok-SECRET-91d2"
SECRETS = (SECRET, "sk-live-KEY")


def fields(err: AvatarSDKError) -> dict:  # type: ignore[type-arg]
    """Every attribute of an error, to compare whole."""
    assert type(err) is AvatarSDKError
    return dict(vars(err))


def expected(code: AvatarSDKErrorCode, message: str, **changes: Any) -> dict:  # type: ignore[type-arg]
    base = {
        "code": code,
        "message": message,
        "phase": "unknown",
        "http_status": None,
        "server_code": None,
        "server_title": None,
        "server_detail": None,
        "connection_id": None,
        "req_id": None,
        "raw_body": None,
        "close_code": None,
        "close_reason": None,
        "retryable": False,
    }
    base.update(changes)
    return base


def test_close_codes() -> None:
    assert CLOSE_NORMAL == 1000
    assert CLOSE_ABNORMAL == 1006


# --------------------------------------------------------------------------------------------------
# connect_failed
# --------------------------------------------------------------------------------------------------


def test_connect_failed_is_a_retryable_connection_failure() -> None:
    err = connect_failed("could not connect to h.example:443: Connection refused")
    assert fields(err) == expected(
        C.connectionFailed,
        "could not connect to h.example:443: Connection refused",
        phase=PHASE_WEBSOCKET_CONNECT,
        retryable=True,
    )
    assert str(err) == "connectionFailed: could not connect to h.example:443: Connection refused"


# --------------------------------------------------------------------------------------------------
# upgrade_rejected
# --------------------------------------------------------------------------------------------------


def bad_status(status: Any, body: Any, reason: Optional[str] = "Unauthorized") -> websocket.WebSocketBadStatusException:
    return websocket.WebSocketBadStatusException(
        f"Handshake status {status} {reason}", status, reason, {"content-type": "application/json"}, body
    )


def test_upgrade_rejected_reads_a_json_api_body_and_removes_secrets() -> None:
    body = (
        b'{"errors":[{"status":"401","code":"token_expired","title":"Unauthorized",'
        b'"detail":"session token tok-SECRET-91d2 expired"}]}'
    )
    err = upgrade_rejected(bad_status(401, body), "h.example", SECRETS)
    assert fields(err) == expected(
        C.sessionTokenExpired,
        "WebSocket upgrade rejected by h.example (HTTP 401): Unauthorized - session token *** expired",
        phase=PHASE_WEBSOCKET_CONNECT,
        http_status=401,
        server_code="token_expired",
        server_title="Unauthorized",
        server_detail="session token *** expired",
        raw_body=body.decode().replace(SECRET, "***"),
    )


def test_upgrade_rejected_plain_text_body() -> None:
    err = upgrade_rejected(bad_status(403, b"app id mismatch\n", "Forbidden"), "h.example:8443", ())
    assert fields(err) == expected(
        C.appIDMismatch,
        "WebSocket upgrade rejected by h.example:8443 (HTTP 403): app id mismatch",
        phase=PHASE_WEBSOCKET_CONNECT,
        http_status=403,
        server_detail="app id mismatch",
        raw_body="app id mismatch\n",
    )


def test_upgrade_rejected_bytearray_body_is_read_too() -> None:
    err = upgrade_rejected(bad_status(404, bytearray(b"avatar not found"), "Not Found"), "h", ())
    assert err.code is C.avatarNotFound
    assert err.raw_body == "avatar not found"
    assert err.message == "WebSocket upgrade rejected by h (HTTP 404): avatar not found"


@pytest.mark.parametrize("body", [None, "avatar not found", b""])
def test_upgrade_rejected_without_a_body(body: Any) -> None:
    """No body, or one that is not bytes (websocket-client gives bytes or None): only the status counts."""
    err = upgrade_rejected(bad_status(503, body, "Service Unavailable"), "h.example", ())
    assert fields(err) == expected(
        C.serverError,
        "WebSocket upgrade rejected by h.example (HTTP 503)",
        phase=PHASE_WEBSOCKET_CONNECT,
        http_status=503,
        retryable=True,
    )


def test_upgrade_rejected_invalid_utf8_is_replaced() -> None:
    err = upgrade_rejected(bad_status(400, b"bad \xff request", "Bad Request"), "h", ())
    assert err.raw_body == "bad \ufffd request"
    assert err.server_detail == "bad \ufffd request"
    assert err.code is C.sessionTokenInvalid  # 400 at the upgrade
    assert err.http_status == 400


def test_upgrade_rejected_status_is_an_int() -> None:
    err = upgrade_rejected(bad_status("429", b"", "Too Many Requests"), "h", ())
    assert err.http_status == 429
    assert type(err.http_status) is int
    assert err.code is C.concurrencyLimit
    assert err.retryable is True


def test_upgrade_rejected_server_code_alone() -> None:
    err = upgrade_rejected(bad_status(402, b'{"code":"billing_required"}', "Payment Required"), "h", ())
    assert err.message == "WebSocket upgrade rejected by h (HTTP 402): billing_required"
    assert err.server_code == "billing_required"
    assert err.code is C.billingRequired


# --------------------------------------------------------------------------------------------------
# closed_error
# --------------------------------------------------------------------------------------------------


def test_closed_error_lost_without_a_close_frame_is_1006() -> None:
    err = closed_error(None, "", phase=PHASE_WEBSOCKET_RUNTIME, during="the session")
    assert fields(err) == expected(
        C.connectionClosed,
        "connection lost during the session",
        phase=PHASE_WEBSOCKET_RUNTIME,
        close_code=1006,
        retryable=True,
    )


def test_closed_error_lost_keeps_a_reason_out_of_the_message() -> None:
    err = closed_error(None, "eof", phase=PHASE_WEBSOCKET_HANDSHAKE, during="the handshake")
    assert err.message == "connection lost during the handshake"
    assert err.close_reason == "eof"
    assert err.close_code == 1006


def test_closed_error_with_a_code_and_no_reason() -> None:
    err = closed_error(1000, "", phase=PHASE_WEBSOCKET_RUNTIME, during="the session", req_id="r-1", connection_id="c-1")
    assert fields(err) == expected(
        C.connectionClosed,
        "connection closed by the server during the session (code 1000)",
        phase=PHASE_WEBSOCKET_RUNTIME,
        close_code=1000,
        req_id="r-1",
        connection_id="c-1",
    )


def test_closed_error_with_a_code_and_a_reason() -> None:
    err = closed_error(4001, "credits exhausted", phase=PHASE_WEBSOCKET_RUNTIME, during="request r-1")
    assert fields(err) == expected(
        C.creditsExhausted,
        "connection closed by the server during request r-1 (code 4001: credits exhausted)",
        phase=PHASE_WEBSOCKET_RUNTIME,
        close_code=4001,
        close_reason="credits exhausted",
    )


def test_closed_error_removes_secrets_from_the_reason() -> None:
    err = closed_error(1008, f"bad key {SECRET}", phase=PHASE_WEBSOCKET_RUNTIME, during="the session", secrets=SECRETS)
    assert err.close_reason == "bad key ***"
    assert err.message == "connection closed by the server during the session (code 1008: bad key ***)"
    assert SECRET not in repr(err) and SECRET not in str(err)


@pytest.mark.parametrize(
    ("close_code", "reason", "code", "retryable"),
    [
        (4002, "", C.sessionDurationExceeded, True),
        (4003, "", C.concurrencyLimit, False),
        (4010, "token expired", C.sessionTokenExpired, False),
        (4010, "", C.sessionTokenInvalid, False),
        (4503, "", C.upstreamError, True),
        (1011, "", C.connectionClosed, True),
        (1001, "", C.connectionClosed, True),
        (1008, "", C.connectionClosed, False),
        (1008, "Invalid Session Token", C.sessionTokenInvalid, False),  # the reason's text, any case
        (1000, "avatar not found", C.avatarNotFound, False),
        (None, "session denied", C.billingRequired, False),
    ],
)
def test_closed_error_classified_by_code_and_reason(
    close_code: Optional[int], reason: str, code: AvatarSDKErrorCode, retryable: bool
) -> None:
    err = closed_error(close_code, reason, phase=PHASE_WEBSOCKET_RUNTIME, during="the session")
    assert (err.code, err.retryable) == (code, retryable)


def test_closed_error_is_classified_by_the_phase() -> None:
    # 4001 means credits exhausted on a WebSocket phase only; elsewhere it is no code the table knows.
    err = closed_error(4001, "", phase="session_token", during="x")
    assert (err.code, err.retryable) == (C.unknown, False)


# --------------------------------------------------------------------------------------------------
# server_error
# --------------------------------------------------------------------------------------------------


def test_server_error_with_a_message() -> None:
    reply = ServerErrorMessage(code=4001, message=f"credits exhausted for {SECRET}", connection_id="c-1", req_id="r-1")
    err = server_error(reply, phase=PHASE_WEBSOCKET_RUNTIME, prefix="server error", secrets=SECRETS)
    assert fields(err) == expected(
        C.creditsExhausted,
        "server error: credits exhausted for *** (server code 4001)",
        phase=PHASE_WEBSOCKET_RUNTIME,
        server_code="4001",
        server_detail="credits exhausted for ***",
        connection_id="c-1",
        req_id="r-1",
    )


def test_server_error_without_a_message() -> None:
    reply = ServerErrorMessage(code=14, message="", connection_id="", req_id="")
    err = server_error(reply, phase=PHASE_WEBSOCKET_HANDSHAKE, prefix="handshake refused", connection_id="c-arg")
    assert fields(err) == expected(
        C.egressUnavailable,
        "handshake refused: server code 14",
        phase=PHASE_WEBSOCKET_HANDSHAKE,
        server_code="14",
        connection_id="c-arg",
        retryable=True,
    )


def test_server_error_connection_id_from_the_message_first() -> None:
    reply = ServerErrorMessage(code=3, message="bad", connection_id="c-msg", req_id="")
    err = server_error(reply, phase=PHASE_WEBSOCKET_RUNTIME, prefix="p", connection_id="c-arg")
    assert err.connection_id == "c-msg"
    assert err.req_id is None


def test_server_error_no_connection_id_at_all_is_none() -> None:
    reply = ServerErrorMessage(code=3, message="bad", connection_id="", req_id="r-9")
    err = server_error(reply, phase=PHASE_WEBSOCKET_RUNTIME, prefix="p")
    assert err.connection_id is None
    assert err.req_id == "r-9"
    assert (err.code, err.message) == (C.invalidRequest, "p: bad (server code 3)")


def test_server_error_a_message_that_is_all_secret() -> None:
    reply = ServerErrorMessage(code=0, message=SECRET, connection_id="", req_id="")
    err = server_error(reply, phase=PHASE_WEBSOCKET_RUNTIME, prefix="p", secrets=SECRETS)
    assert err.message == "p: *** (server code 0)"
    assert err.server_detail == "***"
    assert err.server_code == "0"
    assert err.code is C.serverError


@pytest.mark.parametrize(
    ("code", "text", "expected_code", "retryable"),
    [
        (3, "livekit room missing", C.invalidEgressConfig, False),
        (3, "no such thing", C.invalidRequest, False),
        (16, "", C.invalidEgressConfig, False),
        (0, "unsupported sample rate 44100", C.unsupportedSampleRate, False),
        (0, "Driven server request failed", C.upstreamError, True),
        (4002, "", C.sessionDurationExceeded, True),
    ],
)
def test_server_error_classified_by_code_and_text(
    code: int, text: str, expected_code: AvatarSDKErrorCode, retryable: bool
) -> None:
    reply = ServerErrorMessage(code=code, message=text, connection_id="", req_id="")
    err = server_error(reply, phase=PHASE_WEBSOCKET_RUNTIME, prefix="p")
    assert (err.code, err.retryable) == (expected_code, retryable)


def test_server_error_is_classified_by_the_phase() -> None:
    reply = ServerErrorMessage(code=3, message="", connection_id="", req_id="")
    # INVALID_ARGUMENT is a server code of the handshake and runtime phases only.
    assert server_error(reply, phase=PHASE_WEBSOCKET_HANDSHAKE, prefix="p").code is C.invalidRequest
    assert server_error(reply, phase="session_token", prefix="p").code is C.unknown


# --------------------------------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------------------------------

URL_TEXT = f"wss://h.example/websocket?sessionKey={SECRET}"


def ssl_error(kind: type, reason: Optional[str], **extra: Any) -> ssl.SSLError:
    """An SSL error as _ssl.c makes them: its text, and the ``reason`` and ``library`` attributes."""
    exc = kind(1, f"[SSL: X] something about {URL_TEXT} (_ssl.c:1000)")
    exc.reason = reason
    exc.library = "SSL"
    for name, value in extra.items():
        setattr(exc, name, value)
    return exc


def test_describe_certificate_errors() -> None:
    exc = ssl_error(ssl.SSLCertVerificationError, "CERTIFICATE_VERIFY_FAILED", verify_message="self-signed certificate")
    assert describe(exc) == "TLS certificate verification failed (self-signed certificate)"
    exc = ssl_error(ssl.SSLCertVerificationError, "CERTIFICATE_VERIFY_FAILED", verify_message=None)
    assert describe(exc) == "TLS certificate verification failed (CERTIFICATE_VERIFY_FAILED)"
    exc = ssl_error(ssl.SSLCertVerificationError, "CERTIFICATE_VERIFY_FAILED", verify_message="")
    assert describe(exc) == "TLS certificate verification failed (CERTIFICATE_VERIFY_FAILED)"


def test_describe_other_ssl_errors() -> None:
    assert describe(ssl_error(ssl.SSLError, "WRONG_VERSION_NUMBER")) == "TLS error (WRONG_VERSION_NUMBER)"
    assert describe(ssl_error(ssl.SSLError, None)) == "TLS error (SSLError)"
    assert describe(ssl_error(ssl.SSLEOFError, None)) == "TLS error (SSLEOFError)"
    assert describe(ssl_error(ssl.SSLZeroReturnError, "")) == "TLS error (SSLZeroReturnError)"


def test_describe_a_real_ssl_error() -> None:
    context = ssl.create_default_context()
    with pytest.raises(ssl.SSLError) as info:
        context.load_verify_locations(cadata="not a certificate")
    assert describe(info.value) == "TLS error (SSLError)"  # _ssl.c gave no reason: its text is not shown


def test_describe_an_ssl_error_raised_in_python() -> None:
    context = ssl.create_default_context()
    with pytest.raises(ssl.SSLError) as info:
        context.set_alpn_protocols(["x" * 300])
    assert describe(info.value) == "TLS error (SSLError)"


def test_describe_proxy_refusals() -> None:
    exc = websocket.WebSocketProxyException(f"failed CONNECT via proxy status: 407 for {URL_TEXT}")
    assert describe(exc) == "the proxy refused the tunnel"


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "Connection refused"),
        (ConnectionResetError(104, "Connection reset by peer"), "Connection reset by peer"),
        (socket.gaierror(-2, "Name or service not known"), "Name or service not known"),
        (OSError(113, "No route to host"), "No route to host"),
    ],
)
def test_describe_os_errors_by_their_strerror(exc: OSError, text: str) -> None:
    assert describe(exc) == text


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (OSError(f"cannot reach {URL_TEXT}"), "OSError"),
        (OSError(5, ""), "OSError"),
        (TimeoutError(), "TimeoutError"),
        (ValueError(URL_TEXT), "ValueError"),
        (websocket.WebSocketAddressException(URL_TEXT), "WebSocketAddressException"),
        (websocket.WebSocketException(URL_TEXT), "WebSocketException"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
    ],
)
def test_describe_anything_else_by_its_type_never_its_text(exc: BaseException, text: str) -> None:
    assert describe(exc) == text
    assert SECRET not in describe(exc)


# --------------------------------------------------------------------------------------------------
# type_of
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "name"),
    [
        (Unknown(type=42), "42"),
        (Unknown(type=0), "0"),
        (Animation(data=b"x", req_id="r", end=False), "Animation"),
        (Confirm(connection_id="c"), "Confirm"),
        (ServerErrorMessage(code=1, message="", connection_id="", req_id=""), "ServerErrorMessage"),
        (PlaybackStateMessage(req_id="r", state=1, played_ms=0, reason="", connection_id=""), "PlaybackStateMessage"),
        (Malformed(reason="truncated", size=3), "Malformed"),
    ],
)
def test_type_of_names_a_reply(reply: Any, name: str) -> None:
    assert type_of(reply) == name
