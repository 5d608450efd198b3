"""The session token call (PROTOCOL.md section 1) against the stand-in service over real HTTP on loopback,
through AvatarSession.init() and through request_session_token() itself (the messages users see, Retry-After as
seconds and as an HTTP date, the 1 MiB cap, requests' own failures, the debug log), and parse_token_response()
for the pure cases."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict

import pytest
import requests
from conftest import RawServer, optional, unused_port

from avatarsdk import AvatarSDKError, AvatarSDKErrorCode, AvatarSession, SessionTokenError
from avatarsdk._backoff import NO_RETRIES, Backoff
from avatarsdk._token import MAX_BODY_BYTES, _retry_after, parse_token_response, request_session_token
from avatarsdk.testing import FakeAvatarService, TokenReply, jsonapi_error

C = AvatarSDKErrorCode
MiB = 1 << 20
NO_TOKEN = "session token response has no sessionToken, sessionKey, token, session_token (top level or in data)"


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
    assert body == {"appId": service.app_id, "expireAt": int(expire_at.timestamp())}
    assert list(body) == ["appId", "expireAt"]  # in the official SDK's order; never modelVersion
    assert request.path == "/session-tokens"
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
    assert service.token_requests[0].json == {"appId": service.app_id, "expireAt": int(expire_at.timestamp())}


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
        {"accessToken": "tok"},
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


# --------------------------------------------------------------------------------------------------
# request_session_token() itself (no AvatarSession, no http= of its own unless a test gives one): the messages
# users see, Retry-After as seconds and as an HTTP date, the 1 MiB cap, requests' other failures, the debug log
# --------------------------------------------------------------------------------------------------

QUICK = Backoff(initial=0.01, cap=0.01, jitter=0.0)  # exact 10 ms waits between attempts
TOKEN_LOGGER = "avatarsdk._token"


def call_token(url: str, api_key: str = "key", **overrides: Any) -> str:
    """request_session_token() with short timeouts and no retries unless ``overrides`` says otherwise."""
    kwargs: Dict[str, Any] = {
        "api_key": api_key,
        "expire_at": datetime.now(timezone.utc) + timedelta(minutes=30),
        "timeout": (2.0, 2.0),
        "retry": NO_RETRIES,
        **overrides,
    }
    return request_session_token(url, **kwargs)


def token_error(url: str, api_key: str = "key", **overrides: Any) -> SessionTokenError:
    with pytest.raises(SessionTokenError) as info:
        call_token(url, api_key, **overrides)
    assert info.value.phase == "session_token"
    return info.value


def host_of(service: FakeAvatarService) -> str:
    return service.console_url.split("://", 1)[1]


def http_date(when: datetime) -> str:
    return email.utils.format_datetime(when.astimezone(timezone.utc), usegmt=True)


def test_a_direct_call_returns_the_issued_token(service: FakeAvatarService) -> None:
    assert call_token(service.console_url, service.api_key) == service.issued_tokens[0]
    request = service.token_requests[0]
    assert (request.headers["accept"], request.headers["content-type"]) == ("application/json", "application/json")
    assert request.headers["x-api-key"] == service.api_key


def test_the_debug_log_names_the_host_never_the_token(
    service: FakeAvatarService, caplog: pytest.LogCaptureFixture
) -> None:
    service.script_token(TokenReply(503, "busy"))
    expire_at = datetime.now(timezone.utc) + timedelta(minutes=5)
    with caplog.at_level(logging.DEBUG, logger=TOKEN_LOGGER):
        token = call_token(service.console_url, service.api_key, expire_at=expire_at, retry=replace(QUICK, retries=1))
    host, stamp = host_of(service), int(expire_at.timestamp())
    assert [r.getMessage() for r in caplog.records if r.name == TOKEN_LOGGER] == [
        f"requesting a session token from {host} (expireAt={stamp})",
        "token call failed (serverError); retry 1 in 0.01s",
        f"requesting a session token from {host} (expireAt={stamp})",
        f"session token obtained from {host} ({len(token)} characters)",
    ]
    assert all(token not in r.getMessage() and service.api_key not in r.getMessage() for r in caplog.records)


def test_an_http_session_given_is_used_for_every_attempt(service: FakeAvatarService) -> None:
    class CountingSession(requests.Session):
        posts = 0

        def post(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
            self.posts += 1
            return super().post(*args, **kwargs)

    service.script_token(TokenReply(502, "bad gateway"))
    with CountingSession() as http:
        assert call_token(service.console_url, service.api_key, http=http, retry=replace(QUICK, retries=1))
        assert http.posts == 2
        assert call_token(service.console_url, service.api_key, http=http)  # still open: it is the caller's
        assert http.posts == 3
    assert len(service.token_requests) == 3


def test_request_options_reach_requests(service: FakeAvatarService) -> None:
    location = service.console_url + "/session-tokens"
    service.script_token(TokenReply(307, "", headers={"Location": location}))
    err = token_error(service.console_url, service.api_key, request_options={"allow_redirects": False})
    assert (err.http_status, err.message) == (307, "session token request failed (HTTP 307)")
    assert len(service.token_requests) == 1
    service.script_token(TokenReply(307, "", headers={"Location": location}))
    assert call_token(service.console_url, service.api_key, request_options={})  # redirects followed: a token
    assert len(service.token_requests) == 3


def test_a_refused_connection_names_the_host_and_the_exception_classes() -> None:
    port = unused_port()
    err = token_error(f"http://127.0.0.1:{port}/")
    assert (
        err.message == f"could not reach 127.0.0.1:{port} for a session token (ConnectionError: ConnectionRefusedError)"
    )
    assert (err.code, err.retryable, err.http_status) == (C.connectionFailed, True, None)
    assert isinstance(err.__cause__, requests.ConnectionError)


def test_a_timeout_names_the_host_and_the_exception_class(service: FakeAvatarService) -> None:
    service.script_token(TokenReply(200, {"sessionToken": "late"}, delay=2.0))
    err = token_error(service.console_url, service.api_key, timeout=(2.0, 0.2))
    assert err.message == f"token call to {host_of(service)} timed out (ReadTimeout)"
    assert (err.code, err.retryable) == (C.connectionFailed, True)
    assert isinstance(err.__cause__, requests.ReadTimeout)


@pytest.mark.parametrize(
    ("url", "message", "cause"),
    [
        (
            "http://127.0.0.1:99999",
            "token call to 127.0.0.1:99999 failed: InvalidURL: LocationParseError",
            "InvalidURL",
        ),
        ("ftp://127.0.0.1:21", "token call to 127.0.0.1:21 failed: InvalidSchema", "InvalidSchema"),
    ],
    ids=["port-out-of-range", "scheme"],
)
def test_a_url_requests_refuses_is_a_connection_failure_never_retried(url: str, message: str, cause: str) -> None:
    err = token_error(url, retry=replace(QUICK, retries=3))
    assert err.message == message  # the innermost cause's class after the exception's own, never their texts
    assert (err.code, err.retryable, err.http_status) == (C.connectionFailed, False, None)
    assert type(err.__cause__).__name__ == cause and isinstance(err.__cause__, requests.RequestException)


def test_a_redirect_loop_is_a_connection_failure_named_by_its_class(service: FakeAvatarService) -> None:
    location = service.console_url + "/session-tokens"
    for _ in range(2):
        service.script_token(TokenReply(307, "", headers={"Location": location}))
    with requests.Session() as http:
        http.max_redirects = 1
        err = token_error(service.console_url, service.api_key, http=http, retry=replace(QUICK, retries=3))
    assert err.message == f"token call to {host_of(service)} failed: TooManyRedirects"
    assert (err.code, err.retryable) == (C.connectionFailed, False)
    assert isinstance(err.__cause__, requests.TooManyRedirects)
    assert len(service.token_requests) == 2  # the call and the one redirect allowed: no retry


def test_messages_count_the_attempts(service: FakeAvatarService) -> None:
    service.script_token(TokenReply(502, "bad gateway"))
    single = token_error(service.console_url, service.api_key)
    assert single.message == "session token request failed (HTTP 502): bad gateway"  # one attempt: nothing added
    for _ in range(2):
        service.script_token(TokenReply(502, "bad gateway"))
    err = token_error(service.console_url, service.api_key, retry=replace(QUICK, retries=1))
    assert err.message == "session token request failed (HTTP 502): bad gateway (after 2 attempts)"
    assert str(err) == "serverError: session token request failed (HTTP 502): bad gateway (after 2 attempts)"
    for _ in range(3):
        service.script_token(TokenReply(502, "bad gateway"))
    err = token_error(service.console_url, service.api_key, retry=replace(QUICK, retries=2))
    assert err.message == "session token request failed (HTTP 502): bad gateway (after 3 attempts)"
    assert (err.http_status, err.retryable, err.raw_body) == (502, True, "bad gateway")
    assert len(service.token_requests) == 1 + 2 + 3


def test_a_refused_connection_retried_counts_its_attempts() -> None:
    port = unused_port()
    err = token_error(f"http://127.0.0.1:{port}", retry=replace(QUICK, retries=2))
    assert err.message == (
        f"could not reach 127.0.0.1:{port} for a session token (ConnectionError: ConnectionRefusedError)"
        " (after 3 attempts)"
    )
    assert isinstance(err.__cause__, requests.ConnectionError)


def test_the_deadline_message_after_one_attempt(service: FakeAvatarService) -> None:
    service.script_token(TokenReply(503, "later", headers={"Retry-After": "5"}))
    began = time.monotonic()
    err = token_error(service.console_url, service.api_key, retry=replace(QUICK, retries=3, deadline=1.0))
    assert time.monotonic() - began < 0.5  # nothing waited: the wait asked for would pass the deadline
    assert err.message == (
        "session token request failed (HTTP 503): later (after 1 attempt; the next would pass the retry deadline)"
    )
    assert len(service.token_requests) == 1


def test_the_deadline_message_after_two_attempts(service: FakeAvatarService) -> None:
    service.script_token(TokenReply(503, "later"))
    service.script_token(TokenReply(503, "later", headers={"Retry-After": "5"}))
    err = token_error(service.console_url, service.api_key, retry=replace(QUICK, deadline=1.0))
    assert err.message == (
        "session token request failed (HTTP 503): later (after 2 attempts; the next would pass the retry deadline)"
    )


@pytest.mark.parametrize("status", [500, 503, 599])
def test_5xx_from_500_up_are_retried(service: FakeAvatarService, status: int) -> None:
    service.script_token(TokenReply(status, "server trouble"))
    assert call_token(service.console_url, service.api_key, retry=replace(QUICK, retries=1))
    assert len(service.token_requests) == 2


def test_a_4xx_classified_retryable_is_still_never_retried(service: FakeAvatarService) -> None:
    service.script_token(TokenReply(409, "driven server request failed"))  # upstreamError: retryable
    err = token_error(service.console_url, service.api_key, retry=replace(QUICK, retries=3))
    assert (err.code, err.retryable, err.http_status) == (C.upstreamError, True, 409)
    assert err.message == "session token request failed (HTTP 409): driven server request failed"
    assert len(service.token_requests) == 1


@pytest.mark.parametrize("value", ["0", "-3", "0.0"])
def test_retry_after_zero_or_less_retries_after_the_backoff_only(service: FakeAvatarService, value: str) -> None:
    service.script_token(TokenReply(503, "busy", headers={"Retry-After": value}))
    began = time.monotonic()
    assert call_token(service.console_url, service.api_key, retry=replace(QUICK, retries=1, deadline=0.5))
    assert time.monotonic() - began < 0.5
    assert len(service.token_requests) == 2


def test_retry_after_longer_than_the_backoff_is_waited_for(service: FakeAvatarService) -> None:
    service.script_token(TokenReply(429, "slow down", headers={"Retry-After": "0.2"}))
    began = time.monotonic()
    assert call_token(service.console_url, service.api_key, retry=replace(QUICK, retries=1, deadline=1.0))
    assert 0.2 <= time.monotonic() - began < 1.0
    assert len(service.token_requests) == 2


def test_retry_after_as_a_past_http_date_retries_at_once(service: FakeAvatarService) -> None:
    past = http_date(datetime.now(timezone.utc) - timedelta(hours=1))
    service.script_token(TokenReply(503, "busy", headers={"Retry-After": past}))
    began = time.monotonic()
    assert call_token(service.console_url, service.api_key, retry=replace(QUICK, retries=1, deadline=0.5))
    assert time.monotonic() - began < 0.5
    assert len(service.token_requests) == 2


def test_retry_after_as_a_future_http_date_is_honoured(service: FakeAvatarService) -> None:
    future = http_date(datetime.now(timezone.utc) + timedelta(hours=1))
    service.script_token(TokenReply(503, "busy", headers={"Retry-After": future}))
    began = time.monotonic()
    err = token_error(service.console_url, service.api_key, retry=replace(QUICK, retries=1, deadline=60.0))
    assert time.monotonic() - began < 0.5  # an hour away is past the deadline: no wait, no second attempt
    assert err.message.endswith(" (after 1 attempt; the next would pass the retry deadline)")
    assert len(service.token_requests) == 1


def test_retry_after_values() -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    soon = now + timedelta(seconds=30)
    assert _retry_after(None) is None
    assert _retry_after("") is None
    assert _retry_after("soon") is None
    assert _retry_after("Sun, 99 Nov 1994 08:49:37 GMT") is None
    assert _retry_after("0") == 0.0
    assert _retry_after("-2") == 0.0
    assert _retry_after("0.25") == 0.25
    assert _retry_after("120") == 120.0
    assert _retry_after(http_date(now - timedelta(hours=1))) == 0.0
    assert _retry_after("Sun, 06 Nov 1994 08:49:37 GMT") == 0.0
    assert 28.5 < optional(_retry_after(http_date(soon))) <= 30.0
    # An offset is honoured; a date of no zone ("-0000", asctime) is taken as UTC.
    in_two_hours_east = soon.astimezone(timezone(timedelta(hours=2)))
    assert 28.5 < optional(_retry_after(email.utils.format_datetime(in_two_hours_east))) <= 30.0
    naive = email.utils.format_datetime(soon.replace(tzinfo=None))  # "... -0000"
    assert naive.endswith(" -0000")
    assert 28.5 < optional(_retry_after(naive)) <= 30.0
    assert 28.5 < optional(_retry_after(soon.strftime("%a %b %d %H:%M:%S %Y"))) <= 30.0


def padded_token_body(size: int) -> bytes:
    """A token response of exactly ``size`` bytes."""
    head = b'{"sessionToken": "tok-1", "padding": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_a_body_of_exactly_one_mib_is_read(service: FakeAvatarService) -> None:
    body = padded_token_body(MAX_BODY_BYTES)
    assert len(body) == MiB
    service.script_token(TokenReply(200, body))
    assert call_token(service.console_url, service.api_key) == "tok-1"


def test_a_body_one_byte_over_one_mib_is_refused(service: FakeAvatarService) -> None:
    service.script_token(TokenReply(200, padded_token_body(MAX_BODY_BYTES + 1)))
    err = token_error(service.console_url, service.api_key, retry=replace(QUICK, retries=2))
    assert err.message == f"token response from {host_of(service)} is larger than 1048576 bytes"
    assert (err.code, err.retryable, err.http_status, err.raw_body) == (C.protocolError, False, 200, None)
    assert len(service.token_requests) == 1


def test_a_body_of_many_chunks_is_joined_as_sent(service: FakeAvatarService) -> None:
    token = "t" * 200_000  # past several 64 KiB chunks
    service.script_token(TokenReply(200, {"sessionToken": token}))
    assert call_token(service.console_url, service.api_key) == token


def endless_body() -> RawServer:
    """A server that answers one request with a 64 MiB Content-Length, sends a little more than 1 MiB of it,
    then holds the connection open (until ``close()``)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (64 * MiB)
    return RawServer(lambda _: [head + b"x" * (MAX_BODY_BYTES + 4 * 65536)], drain=False)


def test_a_body_past_the_cap_is_not_read_to_its_end() -> None:
    server = endless_body()
    try:
        began = time.monotonic()
        err = token_error(f"http://{server.address}", timeout=(1.0, 1.0))
        elapsed = time.monotonic() - began
    finally:
        server.close()
    host = server.address
    assert err.message == f"token response from {host} is larger than 1048576 bytes"
    assert elapsed < 0.9  # it stopped at the cap; it did not wait for the rest (the server holds it back)


def test_parse_accepts_every_visible_ascii_character() -> None:
    visible = "".join(chr(c) for c in range(0x21, 0x7F)).replace('"', "").replace("\\", "")
    assert parse_token_response(200, json.dumps({"sessionToken": visible}).encode()) == visible
    assert parse_token_response(200, json.dumps({"sessionToken": "!"}).encode()) == "!"
    assert parse_token_response(200, json.dumps({"sessionToken": "~"}).encode()) == "~"


@pytest.mark.parametrize("bad", [" ", "\x20tok", "tok\x7f", "\x1f", "tok\x00x"])
def test_parse_refuses_a_token_with_whitespace_or_control_characters(bad: str) -> None:
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(200, json.dumps({"sessionToken": bad}).encode())
    err = info.value
    assert err.message == "session token contains whitespace or control characters"
    assert (err.code, err.http_status, err.raw_body, err.retryable) == (C.protocolError, 200, None, False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "session token response is not a JSON object"),
        (b"not json", "session token response is not a JSON object"),
        (b'{"accessToken": "t"}', NO_TOKEN),
        (b'{"sessionToken": ""}', NO_TOKEN),
        (b'{"data": {"sessionToken": 5}, "token": null}', NO_TOKEN),
    ],
)
def test_parse_an_unusable_200_keeps_its_body(body: bytes, message: str) -> None:
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(200, body)
    err = info.value
    assert (err.message, err.code, err.http_status, err.retryable) == (message, C.protocolError, 200, False)
    assert err.raw_body == body.decode()


def test_parse_an_empty_200_keeps_no_body() -> None:
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(200, b"")
    assert (info.value.message, info.value.raw_body) == ("session token response is not a JSON object", None)


def test_parse_a_rejection_says_what_failed() -> None:
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(500, b"internal failure")
    assert info.value.message == "session token request failed (HTTP 500): internal failure"
    assert str(info.value) == "serverError: session token request failed (HTTP 500): internal failure"
