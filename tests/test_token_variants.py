"""The token call's newer forms (PROTOCOL.md section 6) against the stand-in over real HTTP: the body with
``appId``, the token under each key the console may use (top level or inside ``data``) and which one wins, and
``expire_at`` left out (an hour after each token call: ``init()``, a reconnect, each pooled session)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, List

import pytest
from conftest import FAST_RECONNECT, Recorder, pcm

from avatarsdk import AvatarSession, SessionConfigBuilder, SessionPool, SessionTokenError
from avatarsdk._token import TOKEN_KEYS, parse_token_response, request_session_token
from avatarsdk._validation import token_expiry
from avatarsdk.testing import FakeAvatarService, TokenReply

HOUR = 3600


# ----------------------------------------------------------------------------------------- the body


def test_a_direct_call_without_an_app_id_sends_expire_at_alone(service: FakeAvatarService) -> None:
    expire_at = datetime.now(timezone.utc) + timedelta(minutes=5)
    request_session_token(service.console_url, api_key=service.api_key, expire_at=expire_at, timeout=(2, 2))
    request_session_token(
        service.console_url, api_key=service.api_key, expire_at=expire_at, timeout=(2, 2), app_id="app-7"
    )
    first, second = (r.body for r in service.token_requests)
    assert json.loads(first) == {"expireAt": int(expire_at.timestamp())}
    assert second == json.dumps({"appId": "app-7", "expireAt": int(expire_at.timestamp())}).encode()
    assert b"modelVersion" not in first + second


# --------------------------------------------------------------------------------- the answer's shape


@pytest.mark.parametrize("in_data", [False, True], ids=["top-level", "in-data"])
@pytest.mark.parametrize("key", TOKEN_KEYS)
def test_the_token_under_each_key_opens_the_websocket(key: str, in_data: bool) -> None:
    recorder = Recorder()
    with FakeAvatarService(token_key=key, token_in_data=in_data) as service:
        with AvatarSession(
            SessionConfigBuilder()
            .with_avatar_id(service.avatar_id)
            .with_api_key(service.api_key)
            .with_app_id(service.app_id)
            .with_console_endpoint_url(service.console_url)
            .with_ingress_endpoint_url(service.ingress_url)
            .with_transport_frames(recorder.transport_frames)
            .build()
        ) as session:
            session.send_audio(pcm(0.08), end=True)
            recorder.wait_last()
        # the stand-in accepts only the tokens it issued, once each: the one read is the one answered
        assert service.connection(0).request_headers["X-Session-Key"] == service.issued_tokens[0]


@pytest.mark.parametrize(
    ("document", "token"),
    [
        ({"token": "c", "sessionKey": "b", "sessionToken": "a", "session_token": "d"}, "a"),
        ({"session_token": "d", "token": "c", "sessionKey": "b"}, "b"),
        ({"session_token": "d", "token": "c"}, "c"),
        ({"data": {"sessionToken": "in-data"}, "session_token": "top"}, "top"),  # the top level first
        ({"data": {"token": "c", "sessionKey": "b"}}, "b"),
        ({"sessionToken": "", "token": None, "data": {"session_token": "d"}}, "d"),  # empty or not text: skipped
        ({"data": "sessionToken", "token": "c"}, "c"),
    ],
)
def test_which_token_is_taken(document: Any, token: str) -> None:
    assert parse_token_response(200, json.dumps(document).encode()) == token


def test_a_token_in_data_of_a_failed_answer_is_kept_secret() -> None:
    body = json.dumps({"errors": [{"status": 403, "detail": "revoked tok-in-data"}], "data": {"token": "tok-in-data"}})
    with pytest.raises(SessionTokenError) as info:
        parse_token_response(200, body.encode())
    err = info.value
    assert err.http_status == 403
    assert "tok-in-data" not in f"{err} {err.raw_body} {err.server_detail}"


def test_an_answer_with_none_of_the_keys_is_a_protocol_error(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    service.script_token(TokenReply(200, {"data": {"access_token": "t"}}))
    with pytest.raises(SessionTokenError) as info:
        make_session(http_retries=0).init()
    assert info.value.message.startswith("session token response has no sessionToken, sessionKey, token, session_token")


# ---------------------------------------------------------------------------------- expire_at default


def expire_ats(service: FakeAvatarService) -> List[int]:
    return [r.json["expireAt"] for r in service.token_requests]


def test_without_expire_at_each_token_call_asks_an_hour_from_then(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    session = make_session(expire_at=None, reconnect=FAST_RECONNECT)
    before = time.time()
    session.init()
    session.start()
    assert before + HOUR - 1 <= expire_ats(service)[0] <= time.time() + HOUR
    assert session.config.expire_at is None  # nothing fixed: a later call computes its own
    dropped = time.time()
    service.connection(0).drop()
    service.wait_for_connection(1)
    assert dropped + HOUR - 1 <= expire_ats(service)[1] <= time.time() + HOUR  # the reconnect's own token


def test_a_pool_keeps_its_token_lifetime(service: FakeAvatarService) -> None:
    kwargs = service.credentials()
    with SessionPool(**kwargs, token_lifetime=600, refresh_margin=60) as pool:
        before = time.time()
        pool.collect(pcm(0.04), timeout=10)
    assert before + 599 <= expire_ats(service)[0] <= time.time() + 600


def test_the_default_is_computed_at_the_call() -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert token_expiry(None, now=now) == now + timedelta(hours=1)
    later = now + timedelta(hours=5)
    assert token_expiry(None, now=later) == later + timedelta(hours=1)
    given = now + timedelta(minutes=5)
    assert token_expiry(given, now=now) is given
    with pytest.raises(ValueError, match="expire_at: expected a timezone-aware datetime"):
        token_expiry(datetime(2030, 1, 2, 4), now=now)  # naive: the clear error of old


def test_a_naive_expire_at_is_still_refused_when_the_session_is_made(service: FakeAvatarService) -> None:
    builder = SessionConfigBuilder().with_avatar_id("a").with_api_key("k").with_app_id("app")
    config = builder.with_region("us-west").with_expire_at(datetime.now() + timedelta(hours=1)).build()
    with pytest.raises(ValueError, match=r"expected a timezone-aware datetime .* got naive"):
        AvatarSession(config)
    assert service.token_requests == []
