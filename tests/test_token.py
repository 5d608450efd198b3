"""The session token call (PROTOCOL.md section 1) against the stand-in service over real HTTP on loopback,
through AvatarSession.init(), and parse_token_response() for the pure cases."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
from conftest import unused_port

from avatarsdk import AvatarSDKError, AvatarSDKErrorCode, AvatarSession, SessionTokenError
from avatarsdk._token import parse_token_response
from avatarsdk.testing import FakeAvatarService, TokenReply, jsonapi_error

C = AvatarSDKErrorCode
MiB = 1 << 20


def init_error(make_session: Callable[..., AvatarSession], **overrides: Any) -> SessionTokenError:
    """init() of a new session fails: the SessionTokenError it raised (one attempt: retries are tested
    separately)."""
    session = make_session(**{"http_retries": 0, **overrides})
    with pytest.raises(SessionTokenError) as info:
        session.init()
    err = info.value
    assert isinstance(err, AvatarSDKError)
    assert err.phase == "session_token"
    return err


# --------------------------------------------------------------------------------------------------
# Success
# --------------------------------------------------------------------------------------------------


def test_success_request_shape(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    expire_at = datetime.now(timezone.utc) + timedelta(minutes=30)
    session = make_session(expire_at=expire_at)
    session.init()
    assert len(service.token_requests) == 1
    request = service.token_requests[0]
    body = request.json
    assert body == {"expireAt": int(expire_at.timestamp())}
    assert type(body["expireAt"]) is int
    assert request.headers["x-api-key"] == service.api_key
    assert request.headers["content-type"] == "application/json"
    assert service.upgrade_attempts == 0
    # The token obtained is the one the service issued, and it opens the WebSocket.
    session.start()
    conn = service.connection()
    assert conn.request_headers["X-Session-Key"] == service.issued_tokens[0]


def test_success_expire_at_in_another_timezone(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    expire_at = datetime.now(timezone(timedelta(hours=9))) + timedelta(hours=3)
    make_session(expire_at=expire_at).init()
    assert service.token_requests[0].json == {"expireAt": int(expire_at.timestamp())}


def test_console_url_with_trailing_slash(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    make_session(console_endpoint_url=service.console_url + "/").init()
    assert len(service.token_requests) == 1  # the fake records only POST /session-tokens


def test_init_twice_replaces_the_token(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    session = make_session()
    session.init()
    session.init()
    assert len(service.token_requests) == 2
    first, second = service.issued_tokens
    session.start()
    assert service.connection().request_headers["X-Session-Key"] == second != first


def test_init_after_close(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    session = make_session()
    session.close()
    with pytest.raises(ValueError, match="closed"):
        session.init()
    assert service.token_requests == []


def test_init_after_close_of_an_initialised_session(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    session = make_session()
    session.init()
    session.close()
    with pytest.raises(ValueError, match="closed"):
        session.init()
    assert len(service.token_requests) == 1


# --------------------------------------------------------------------------------------------------
# Failures from the service
# --------------------------------------------------------------------------------------------------


def test_401_jsonapi_error(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    body = jsonapi_error(401, "UNAUTHENTICATED", "Unauthorized", "invalid api key")
    service.script_token(TokenReply(401, body))
    err = init_error(make_session)
    assert err.code is C.invalidRequest
    assert err.retryable is False
    assert err.http_status == 401
    assert err.server_code == "UNAUTHENTICATED"
    assert err.server_title == "Unauthorized"
    assert err.server_detail == "invalid api key"
    assert err.raw_body is not None
    assert json.loads(err.raw_body) == body
    assert "401" in str(err)


def test_wrong_api_key_is_refused(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    err = init_error(make_session, api_key="not-the-key")
    assert err.code is C.invalidRequest
    assert err.http_status == 401
    assert err.retryable is False
    assert "not-the-key" not in (err.raw_body or "")
    assert "not-the-key" not in str(err)


def test_429_concurrency_limit(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    service.script_token(TokenReply(429, jsonapi_error(429, "RESOURCE_EXHAUSTED", "Too Many Requests", "slow down")))
    err = init_error(make_session)
    assert err.code is C.concurrencyLimit
    assert err.retryable is True
    assert err.http_status == 429


def test_500_plain_text(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    service.script_token(TokenReply(500, "internal failure"))
    err = init_error(make_session)
    assert err.code is C.serverError
    assert err.retryable is True
    assert err.http_status == 500
    assert err.server_detail == "internal failure"
    assert err.server_code is None
    assert err.raw_body == "internal failure"


def test_200_with_errors_list_reports_its_status(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    service.script_token(TokenReply(200, jsonapi_error(403, "PERMISSION_DENIED", "Forbidden", "key revoked")))
    err = init_error(make_session)
    assert err.http_status == 403
    assert err.code is C.invalidRequest
    assert err.server_code == "PERMISSION_DENIED"
    assert err.server_detail == "key revoked"


@pytest.mark.parametrize(
    "body",
    [
        "<html>ok</html>",
        '{"sessionToken": ',
        ["sessionToken", "tok"],
        {},
        {"sessionToken": ""},
        {"sessionToken": 123},
        {"sessionToken": None},
        {"sessionToken": ["tok"]},
        {"token": "tok"},
        "",
    ],
    ids=[
        "html",
        "truncated-json",
        "list",
        "empty-object",
        "empty",
        "int",
        "null",
        "list-token",
        "other-key",
        "no-body",
    ],
)
def test_200_without_a_usable_token(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession], body: Any
) -> None:
    service.script_token(TokenReply(200, body))
    err = init_error(make_session)
    assert err.code is C.protocolError
    assert err.retryable is False
    assert err.http_status == 200


@pytest.mark.parametrize("token", ["tok\r\nX-Injected: 1", "tok\n", "\ttok", "tok\x00"])
def test_200_with_a_token_unusable_in_a_header(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession], token: str
) -> None:
    service.script_token(TokenReply(200, {"sessionToken": token}))
    err = init_error(make_session)
    assert err.code is C.protocolError
    assert service.upgrade_attempts == 0


def test_502_empty_body(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    service.script_token(TokenReply(502, None))
    err = init_error(make_session)
    assert err.code is C.serverError
    assert err.retryable is True
    assert err.http_status == 502
    assert err.raw_body is None
    assert err.server_detail is None


def test_non_utf8_body(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    service.script_token(TokenReply(503, b"\xff\xfebad gateway \xc3"))
    err = init_error(make_session)
    assert err.code is C.serverError
    assert err.http_status == 503
    assert err.raw_body is not None
    assert "\ufffd" in err.raw_body
    assert "bad gateway" in err.raw_body


def test_body_over_one_mib(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    big = {"sessionToken": "tok", "padding": "x" * (MiB + 100)}
    service.script_token(TokenReply(200, big))
    err = init_error(make_session)
    assert err.code is C.protocolError
    assert err.raw_body is None or len(err.raw_body) <= 64 * 1024
    assert len(str(err)) < 1000


def test_server_echoing_the_api_key(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    key = service.api_key
    body = jsonapi_error(400, "INVALID_ARGUMENT", f"key {key} rejected", f"the api key {key} is not allowed")
    service.script_token(TokenReply(400, body))
    err = init_error(make_session)
    assert err.code is C.invalidRequest
    assert err.raw_body is not None
    assert "***" in err.raw_body
    assert key not in err.raw_body
    assert "***" in err.message
    for text in (err.message, str(err), repr(err), err.server_title or "", err.server_detail or ""):
        assert key not in text


# --------------------------------------------------------------------------------------------------
# Network failures
# --------------------------------------------------------------------------------------------------


def test_slow_reply_times_out(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    service.script_token(TokenReply(200, {"sessionToken": "late"}, delay=2.0))
    started = time.monotonic()
    err = init_error(make_session, http_timeout=0.3)
    elapsed = time.monotonic() - started
    assert err.code is C.connectionFailed
    assert err.retryable is True
    assert err.phase == "session_token"
    assert elapsed < 1.5, f"init() took {elapsed:.2f}s with a 0.3 s timeout"
    assert len(service.token_requests) == 1


def test_closed_port(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    started = time.monotonic()
    err = init_error(make_session, console_endpoint_url=f"http://127.0.0.1:{unused_port()}", http_timeout=2)
    assert err.code is C.connectionFailed
    assert err.retryable is True
    assert err.http_status is None
    assert time.monotonic() - started < 2
    assert service.token_requests == []


def test_failed_init_can_be_retried(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    service.script_token(TokenReply(503, "try later"))
    session = make_session(http_retries=0)
    with pytest.raises(SessionTokenError):
        session.init()
    session.init()  # the default reply: a token
    session.start()
    assert service.connection().request_headers["X-Session-Key"] == service.issued_tokens[0]


# --------------------------------------------------------------------------------------------------
# parse_token_response (pure)
# --------------------------------------------------------------------------------------------------


def test_parse_success() -> None:
    assert parse_token_response(200, b'{"sessionToken": "tok-1"}') == "tok-1"


def test_parse_errors_list_with_status_as_string() -> None:
    body = json.dumps({"errors": [{"status": "429", "code": "RESOURCE_EXHAUSTED", "title": "Too Many"}]})
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(200, body.encode())
    assert info.value.http_status == 429
    assert info.value.code is C.concurrencyLimit
    assert info.value.retryable is True


def test_parse_errors_list_without_status_keeps_http_status() -> None:
    body = json.dumps({"errors": [{"code": "INVALID_ARGUMENT", "detail": "expireAt out of range"}]})
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(400, body.encode())
    assert info.value.http_status == 400
    assert info.value.code is C.invalidRequest
    assert info.value.server_detail == "expireAt out of range"


def test_parse_non_200_status_wins_over_document_status() -> None:
    body = json.dumps({"errors": [{"status": 400, "code": "X"}]})
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(503, body.encode())
    assert info.value.http_status == 503
    assert info.value.code is C.serverError


def test_parse_non_200_even_with_a_token() -> None:
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(500, b'{"sessionToken": "tok-1"}')
    assert info.value.code is C.serverError


def test_parse_redacts_secrets() -> None:
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(401, b"bad key sk-SECRET-9 given", secrets=("sk-SECRET-9", ""))
    err = info.value
    assert err.raw_body == "bad key *** given"
    assert err.server_detail == "bad key *** given"
    assert "sk-SECRET-9" not in str(err)


def test_parse_keeps_at_most_64_kib_of_raw_body() -> None:
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(500, b"e" * (100 * 1024))
    assert info.value.raw_body == "e" * (64 * 1024)


def test_parse_non_utf8() -> None:
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(200, b"\xff\xfe\x00junk")
    assert info.value.code is C.protocolError
    assert info.value.raw_body is not None
    assert info.value.raw_body.startswith("\ufffd\ufffd")


def test_parse_token_with_control_characters_not_echoed() -> None:
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(200, json.dumps({"sessionToken": "secret-tok\r\n"}).encode())
    assert info.value.code is C.protocolError
    assert "secret-tok" not in str(info.value)


def test_a_secret_occurring_inside_the_json_does_not_break_parsing() -> None:
    """Secrets are removed from what an error keeps, never from the body before it is parsed."""
    assert parse_token_response(200, b'{"sessionToken": "tok-1"}', secrets=("k", "o")) == "tok-1"
    body = json.dumps(jsonapi_error(429, "RATE_LIMITED", "Too Many Requests", "slow down, key k")).encode()
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(429, body, secrets=("k",))
    err = info.value
    assert (err.code, err.retryable, err.server_code) == (AvatarSDKErrorCode.concurrencyLimit, True, "RATE_LIMITED")
    assert err.server_detail == "slow down, ***ey ***"
    assert err.raw_body is not None and "k" not in err.raw_body


# --------------------------------------------------------------------------------------------------
# Retries: connection failures, 5xx and 429 (Retry-After honoured), never another 4xx; within a deadline
# --------------------------------------------------------------------------------------------------


def test_5xx_and_429_are_retried_until_a_token_comes(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    service.script_token(TokenReply(503, "busy"))
    service.script_token(TokenReply(429, jsonapi_error(429, "RATE", "Too Many Requests"), headers={"Retry-After": "0"}))
    make_session(http_retries=2).init()
    assert len(service.token_requests) == 3


def test_retry_after_is_honoured(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    service.script_token(TokenReply(429, "slow down", headers={"Retry-After": "0.6"}))
    began = time.monotonic()
    make_session(http_retries=1).init()
    assert time.monotonic() - began >= 0.6  # the server's wish is a lower bound
    assert len(service.token_requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
def test_other_4xx_are_never_retried(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession], status: int
) -> None:
    service.script_token(TokenReply(status, jsonapi_error(status, "NOPE", "No")))
    err = init_error(make_session, http_retries=5)
    assert err.http_status == status and "attempt" not in err.message
    assert len(service.token_requests) == 1


def test_retries_are_counted_and_reported(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    for _ in range(3):
        service.script_token(TokenReply(502, "bad gateway"))
    err = init_error(make_session, http_retries=2)
    assert (err.http_status, err.retryable) == (502, True)
    assert "(after 3 attempts)" in err.message
    assert len(service.token_requests) == 3


def test_the_retry_deadline_bounds_waiting(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    service.script_token(TokenReply(503, "later", headers={"Retry-After": "30"}))
    began = time.monotonic()
    err = init_error(make_session, http_retries=3, http_retry_deadline=1.0)
    assert time.monotonic() - began < 2  # it did not wait the 30 s the server asked for
    assert "retry deadline" in err.message and len(service.token_requests) == 1


def test_connection_failures_are_retried(make_session: Callable[..., AvatarSession]) -> None:
    port = unused_port()
    began = time.monotonic()
    err = init_error(make_session, console_endpoint_url=f"http://127.0.0.1:{port}", http_retries=2)
    assert (err.code, err.retryable) == (AvatarSDKErrorCode.connectionFailed, True)
    assert "(after 3 attempts)" in err.message
    assert time.monotonic() - began < 10  # capped backoff
