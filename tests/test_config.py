"""Misuse fails fast: bad configuration and calls in the wrong state raise ValueError/TypeError naming the field,
before anything is sent (the stand-in service records no token call and no upgrade)."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterator, Type

import pytest
from conftest import Recorder, pcm, started

from avatarsdk import (
    AgoraEgressConfig,
    AudioFormat,
    AvatarSession,
    InsecureTransportWarning,
    LiveKitEgressConfig,
    SessionConfig,
    SessionConfigBuilder,
    new_avatar_session,
)
from avatarsdk.testing import FakeAvatarService

SECRET_KEY = "sk-live-SECRET-5f2a9c"


def assert_no_io(service: FakeAvatarService) -> None:
    assert service.token_requests == []
    assert service.upgrade_attempts == 0


def rejects(service: FakeAvatarService, exc: Type[Exception], field: str, **overrides: Any) -> Exception:
    """new_avatar_session(**overrides) raises ``exc`` naming ``field``, and nothing reached the service."""
    with pytest.raises(exc) as info:
        new_avatar_session(**service.session_kwargs(**overrides))
    assert field in str(info.value), f"{field!r} not named in {info.value!r}"
    assert_no_io(service)
    return info.value


def accepts(service: FakeAvatarService, **overrides: Any) -> AvatarSession:
    session = new_avatar_session(**service.session_kwargs(**overrides))
    session.close()  # never initialised: nothing to tear down
    assert_no_io(service)
    return session


@pytest.fixture(scope="module")
def idle_service() -> Iterator[FakeAvatarService]:
    """One stand-in service for the tests that must never reach it (rejected or unused configurations).

    Every check asserts it recorded nothing so far, so a single stray request fails that test and the rest.
    Tests that do talk to the service use the per-test ``service`` fixture instead.
    """
    with FakeAvatarService() as svc:
        yield svc


def now() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------------------
# Identity fields
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["avatar_id", "app_id", "api_key"])
@pytest.mark.parametrize(
    ("value", "exc"),
    [
        ("", ValueError),
        ("   ", ValueError),
        ("\t\n", ValueError),
        (None, TypeError),
        (12345, TypeError),
        (b"bytes-id", TypeError),
    ],
)
def test_identity_field_empty_or_not_a_string(
    idle_service: FakeAvatarService, field: str, value: Any, exc: Type[Exception]
) -> None:
    rejects(idle_service, exc, field, **{field: value})


@pytest.mark.parametrize("field", ["avatar_id", "app_id", "api_key"])
@pytest.mark.parametrize("value", ["abc\r\nX-Injected: 1", "abc\n", "a\rb", "a\x00b", "a\x7fb"])
def test_identity_field_with_control_characters(idle_service: FakeAvatarService, field: str, value: str) -> None:
    rejects(idle_service, ValueError, field, **{field: value})


@pytest.mark.parametrize(
    "value",
    [" ", f"{SECRET_KEY}\r\nX-Injected: 1", f"{SECRET_KEY}\n", f"\x00{SECRET_KEY}"],
)
def test_api_key_value_never_appears_in_the_message(idle_service: FakeAvatarService, value: str) -> None:
    err = rejects(idle_service, ValueError, "api_key", api_key=value)
    assert SECRET_KEY not in str(err)
    assert SECRET_KEY not in repr(err)
    assert repr(value) not in str(err)


@pytest.mark.parametrize("value", ["key\u2122", "\u4e2d\u6587-key"])
def test_api_key_that_cannot_travel_in_a_header(idle_service: FakeAvatarService, value: str) -> None:
    """The key goes in the X-Api-Key header (ISO-8859-1 at most): like control characters, fail fast."""
    err = rejects(idle_service, ValueError, "api_key", api_key=value)
    assert value not in str(err)


@pytest.mark.parametrize("value", [" " + SECRET_KEY, SECRET_KEY + " "])
def test_api_key_with_surrounding_whitespace_fails_fast(idle_service: FakeAvatarService, value: str) -> None:
    """A header value cannot start or end with whitespace: a configuration mistake, not a network failure."""
    err = rejects(idle_service, ValueError, "api_key", api_key=value)
    assert SECRET_KEY not in str(err)
    assert "whitespace" in str(err)


def test_api_key_of_wrong_type_not_shown(idle_service: FakeAvatarService) -> None:
    err = rejects(idle_service, TypeError, "api_key", api_key=987654321)
    assert "987654321" not in str(err)


# --------------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "exc"),
    [
        ("ftp://console.example", ValueError),
        ("ws://console.example", ValueError),
        ("wss://console.example", ValueError),
        ("console.example", ValueError),
        ("https://", ValueError),
        ("", ValueError),
        ("https://console.example:port", ValueError),
        (None, TypeError),
    ],
)
def test_console_url(idle_service: FakeAvatarService, value: Any, exc: Type[Exception]) -> None:
    rejects(idle_service, exc, "console_endpoint_url", console_endpoint_url=value)


@pytest.mark.parametrize(
    ("value", "exc"),
    [
        ("ftp://ingress.example/v2/driveningress", ValueError),
        ("file:///v2/driveningress", ValueError),
        ("http:///v2/driveningress", ValueError),
        ("wss://", ValueError),
        ("", ValueError),
        (42, TypeError),
    ],
)
def test_ingress_url(idle_service: FakeAvatarService, value: Any, exc: Type[Exception]) -> None:
    rejects(idle_service, exc, "ingress_endpoint_url", ingress_endpoint_url=value)


@pytest.mark.parametrize("scheme", ["http", "https", "ws", "wss"])
def test_ingress_url_schemes_accepted(idle_service: FakeAvatarService, scheme: str) -> None:
    url = f"{scheme}://ingress.example/v2/driveningress"
    if scheme in ("http", "ws"):  # accepted, but the session token would travel unencrypted
        with pytest.warns(InsecureTransportWarning, match="unencrypted"):
            accepts(idle_service, ingress_endpoint_url=url)
    else:
        accepts(idle_service, ingress_endpoint_url=url)


# --------------------------------------------------------------------------------------------------
# expire_at
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "exc"),
    [
        (lambda: datetime.now() + timedelta(hours=1), ValueError),  # naive
        (lambda: now() - timedelta(minutes=1), ValueError),
        (lambda: now() + timedelta(hours=24, minutes=5), ValueError),
        (lambda: now() + timedelta(days=3), ValueError),
        (lambda: (now() + timedelta(hours=1)).isoformat(), TypeError),
        (lambda: int((now() + timedelta(hours=1)).timestamp()), TypeError),
        (lambda: date.today() + timedelta(days=1), TypeError),
    ],
    ids=["naive", "past", "over-24h", "days", "string", "timestamp", "date"],
)
def test_expire_at_rejected(idle_service: FakeAvatarService, make: Callable[[], Any], exc: Type[Exception]) -> None:
    rejects(idle_service, exc, "expire_at", expire_at=make())


def test_expire_at_just_under_24h_is_accepted(service: FakeAvatarService) -> None:
    expire_at = now() + timedelta(hours=24) - timedelta(minutes=1)
    session = new_avatar_session(**service.session_kwargs(expire_at=expire_at))
    try:
        session.init()  # and the service agrees
    finally:
        session.close()
    assert len(service.token_requests) == 1
    assert service.token_requests[0].json == {"appId": service.app_id, "expireAt": int(expire_at.timestamp())}


def test_expire_at_other_timezone_is_accepted(idle_service: FakeAvatarService) -> None:
    tz = timezone(timedelta(hours=-7))
    accepts(idle_service, expire_at=datetime.now(tz) + timedelta(hours=2))


# --------------------------------------------------------------------------------------------------
# Audio settings
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 32000, 44100, 48000])
def test_pcm_sample_rates_accepted(idle_service: FakeAvatarService, rate: int) -> None:
    accepts(idle_service, sample_rate=rate)


@pytest.mark.parametrize("rate", [12000, 11025, 96000, 0, -16000])
def test_pcm_sample_rate_rejected(idle_service: FakeAvatarService, rate: int) -> None:
    rejects(idle_service, ValueError, "sample_rate", sample_rate=rate)


@pytest.mark.parametrize("rate", [8000, 12000, 16000, 24000, 48000])
def test_ogg_opus_sample_rates_accepted(idle_service: FakeAvatarService, rate: int) -> None:
    accepts(idle_service, sample_rate=rate, audio_format=AudioFormat.OGG_OPUS, bitrate=24000)


@pytest.mark.parametrize("rate", [44100, 22050, 32000])
def test_ogg_opus_sample_rate_rejected(idle_service: FakeAvatarService, rate: int) -> None:
    rejects(idle_service, ValueError, "sample_rate", sample_rate=rate, audio_format=AudioFormat.OGG_OPUS)


@pytest.mark.parametrize("value", [True, False, 16000.0, "16000", None])
def test_sample_rate_not_an_int(idle_service: FakeAvatarService, value: Any) -> None:
    rejects(idle_service, TypeError, "sample_rate", sample_rate=value)


def test_negative_bitrate(idle_service: FakeAvatarService) -> None:
    rejects(idle_service, ValueError, "bitrate", bitrate=-1)


def test_bitrate_not_an_int(idle_service: FakeAvatarService) -> None:
    rejects(idle_service, TypeError, "bitrate", bitrate="32k")


def test_audio_format_invalid_string_lists_allowed_values(idle_service: FakeAvatarService) -> None:
    err = rejects(idle_service, ValueError, "audio_format", audio_format="mp3")
    assert "'mp3'" in str(err)
    assert "pcm_s16le" in str(err)
    assert "ogg_opus" in str(err)
    with pytest.raises(ValueError, match="audio_format"):
        SessionConfig(audio_format="mp3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="audio_format"):
        SessionConfigBuilder().with_audio_format("mp3")


def test_audio_format_string_accepted(idle_service: FakeAvatarService) -> None:
    session = accepts(idle_service, audio_format="ogg_opus", sample_rate=48000)
    assert session.config.audio_format is AudioFormat.OGG_OPUS


# --------------------------------------------------------------------------------------------------
# Callbacks and egress
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["transport_frames", "on_error", "on_close"])
@pytest.mark.parametrize("value", ["not callable", 42, [print]])
def test_callbacks_must_be_callable(idle_service: FakeAvatarService, field: str, value: Any) -> None:
    rejects(idle_service, TypeError, field, **{field: value})


def livekit(**overrides: Any) -> LiveKitEgressConfig:
    kwargs: Dict[str, Any] = {"url": "wss://livekit.example", "api_token": "lk-token", "room_name": "room-1"}
    kwargs.update(overrides)
    return LiveKitEgressConfig(**kwargs)


def test_livekit_and_agora_are_exclusive(idle_service: FakeAvatarService) -> None:
    err = rejects(
        idle_service,
        ValueError,
        "livekit_egress",
        livekit_egress=livekit(),
        agora_egress=AgoraEgressConfig(channel_name="chan"),
    )
    assert "agora_egress" in str(err)


def test_livekit_with_token_accepted(idle_service: FakeAvatarService) -> None:
    accepts(idle_service, livekit_egress=livekit())


def test_livekit_deprecated_key_and_secret_warn_and_are_accepted(idle_service: FakeAvatarService) -> None:
    with pytest.warns(FutureWarning, match="api_token"):
        config = LiveKitEgressConfig(url="wss://lk.example", api_key="lk-key", api_secret="lk-secret", room_name="r")
    accepts(idle_service, livekit_egress=config)


def test_livekit_without_credentials_rejected(idle_service: FakeAvatarService) -> None:
    err = rejects(idle_service, ValueError, "livekit_egress", livekit_egress=livekit(api_token=""))
    assert "api_token" in str(err)


def test_livekit_with_key_but_no_secret_rejected(idle_service: FakeAvatarService) -> None:
    with pytest.warns(FutureWarning, match="api_token"):
        config = livekit(api_token="", api_key="lk-key")
    rejects(idle_service, ValueError, "livekit_egress", livekit_egress=config)


@pytest.mark.parametrize(
    ("overrides", "exc", "field"),
    [
        ({"url": "ftp://lk.example"}, ValueError, "livekit_egress.url"),
        ({"url": ""}, ValueError, "livekit_egress.url"),
        ({"room_name": ""}, ValueError, "livekit_egress.room_name"),
        ({"idle_timeout": -1}, ValueError, "livekit_egress.idle_timeout"),
        ({"extra_attributes": {"k": 1}}, TypeError, "livekit_egress.extra_attributes"),
    ],
)
def test_livekit_fields(
    idle_service: FakeAvatarService, overrides: Dict[str, Any], exc: Type[Exception], field: str
) -> None:
    rejects(idle_service, exc, field, livekit_egress=livekit(**overrides))


@pytest.mark.parametrize(("uid", "exc"), [(-1, ValueError), (2**32, ValueError), (True, TypeError), ("7", TypeError)])
def test_agora_uid_out_of_range(idle_service: FakeAvatarService, uid: Any, exc: Type[Exception]) -> None:
    rejects(idle_service, exc, "agora_egress.uid", agora_egress=AgoraEgressConfig(channel_name="chan", uid=uid))


@pytest.mark.parametrize("uid", [0, 2**32 - 1])
def test_agora_uid_bounds_accepted(idle_service: FakeAvatarService, uid: int) -> None:
    accepts(idle_service, agora_egress=AgoraEgressConfig(channel_name="chan", uid=uid))


def test_agora_channel_required(idle_service: FakeAvatarService) -> None:
    rejects(idle_service, ValueError, "agora_egress.channel_name", agora_egress=AgoraEgressConfig(channel_name=""))


def test_egress_of_wrong_type(idle_service: FakeAvatarService) -> None:
    rejects(idle_service, TypeError, "livekit_egress", livekit_egress={"url": "wss://lk.example"})
    rejects(idle_service, TypeError, "agora_egress", agora_egress={"channel_name": "chan"})


# --------------------------------------------------------------------------------------------------
# Session arguments
# --------------------------------------------------------------------------------------------------

TIMEOUTS = ["http_timeout", "connect_timeout", "handshake_timeout", "send_timeout", "close_timeout"]


@pytest.mark.parametrize("name", TIMEOUTS)
@pytest.mark.parametrize(
    ("value", "exc"),
    [
        (0, ValueError),
        (-1, ValueError),
        (-0.5, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("5", TypeError),
        (True, TypeError),
    ],
)
def test_bad_timeout(idle_service: FakeAvatarService, name: str, value: Any, exc: Type[Exception]) -> None:
    rejects(idle_service, exc, name, **{name: value})


@pytest.mark.parametrize("name", TIMEOUTS)
def test_timeout_none_accepted(idle_service: FakeAvatarService, name: str) -> None:
    accepts(idle_service, **{name: None})


@pytest.mark.parametrize("name", TIMEOUTS)
def test_huge_timeout_fails_fast(idle_service: FakeAvatarService, name: str) -> None:
    """1e10 s (~317 years) is positive and finite, but sockets and thread joins refuse it: reject it up front,
    naming the parameter and the limit (24 h; None means no limit)."""
    err = rejects(idle_service, ValueError, name, **{name: 1e10})
    assert "86400" in str(err) and "None" in str(err)


@pytest.mark.parametrize("name", TIMEOUTS)
def test_a_day_is_the_longest_timeout(idle_service: FakeAvatarService, name: str) -> None:
    accepts(idle_service, **{name: 86400})
    rejects(idle_service, ValueError, name, **{name: 86400.5})


@pytest.mark.parametrize("value", [(1.0, 2.0, 3.0), (1.0,), ()])
def test_http_timeout_tuple_of_wrong_length(idle_service: FakeAvatarService, value: Any) -> None:
    rejects(idle_service, ValueError, "http_timeout", http_timeout=value)


@pytest.mark.parametrize(
    ("value", "exc"), [((0, 1.0), ValueError), ((1.0, math.nan), ValueError), ((1, "2"), TypeError)]
)
def test_http_timeout_pair_elements_checked(idle_service: FakeAvatarService, value: Any, exc: Type[Exception]) -> None:
    rejects(idle_service, exc, "http_timeout", http_timeout=value)


def test_http_timeout_pair_accepted(idle_service: FakeAvatarService) -> None:
    accepts(idle_service, http_timeout=(1.0, 2))
    accepts(idle_service, http_timeout=(None, 2.5))


@pytest.mark.parametrize(("value", "exc"), [(0, ValueError), (-3, ValueError), (True, TypeError), (2.5, TypeError)])
def test_max_queued_frames(idle_service: FakeAvatarService, value: Any, exc: Type[Exception]) -> None:
    rejects(idle_service, exc, "max_queued_frames", max_queued_frames=value)


@pytest.mark.parametrize("keyword", ["sampleRate", "timeout", "region"])
def test_unknown_keyword(idle_service: FakeAvatarService, keyword: str) -> None:
    rejects(idle_service, TypeError, keyword, **{keyword: 1})


def test_config_of_wrong_type() -> None:
    with pytest.raises(TypeError, match="config"):
        AvatarSession({"avatar_id": "a"})  # type: ignore[arg-type]


def test_avatar_session_with_bad_config(idle_service: FakeAvatarService) -> None:
    config = SessionConfig(**{**idle_service.session_kwargs(), "app_id": "  "})
    with pytest.raises(ValueError, match="app_id"):
        AvatarSession(config)
    assert_no_io(idle_service)


# --------------------------------------------------------------------------------------------------
# Builder, reprs, copying
# --------------------------------------------------------------------------------------------------


def on_frame(frame: bytes, last: bool) -> None:
    pass


def on_error(err: Any) -> None:
    pass


def on_close() -> None:
    pass


def test_builder_builds_the_same_config_as_keywords() -> None:
    expire_at = now() + timedelta(hours=2)
    lk = livekit(extra_attributes={"a": "b"}, idle_timeout=30)
    built = (
        SessionConfigBuilder()
        .with_avatar_id("av-1")
        .with_api_key("key-1")
        .with_app_id("app-1")
        .with_use_query_auth(True)
        .with_expire_at(expire_at)
        .with_sample_rate(24000)
        .with_bitrate(32000)
        .with_audio_format("ogg_opus")
        .with_transport_frames(on_frame)
        .with_on_error(on_error)
        .with_on_close(on_close)
        .with_console_endpoint_url("https://console.example")
        .with_ingress_endpoint_url("https://ingress.example/v2/driveningress")
        .with_livekit_egress(lk)
        .build()
    )
    keywords = SessionConfig(
        avatar_id="av-1",
        api_key="key-1",
        app_id="app-1",
        use_query_auth=True,
        expire_at=expire_at,
        sample_rate=24000,
        bitrate=32000,
        audio_format=AudioFormat.OGG_OPUS,
        transport_frames=on_frame,
        on_error=on_error,
        on_close=on_close,
        console_endpoint_url="https://console.example",
        ingress_endpoint_url="https://ingress.example/v2/driveningress",
        livekit_egress=lk,
    )
    assert built == keywords
    assert built.audio_format is AudioFormat.OGG_OPUS
    with pytest.warns(InsecureTransportWarning, match="URL query"):
        session = AvatarSession(built)
    try:
        assert session.config == keywords
    finally:
        session.close()


def test_builder_with_agora() -> None:
    agora = AgoraEgressConfig(channel_name="chan", token="ag-token", uid=7, publisher_id="p")
    built = SessionConfigBuilder().with_avatar_id("av").with_agora_egress(agora).build()
    assert built == SessionConfig(avatar_id="av", agora_egress=agora)


def test_builder_defaults_match_session_config() -> None:
    assert SessionConfigBuilder().build() == SessionConfig()


def test_reprs_never_contain_secrets(idle_service: FakeAvatarService) -> None:
    secrets = {
        "api_key": "sk-SESSION-KEY-111",
        "lk_key": "LK-KEY-222",
        "lk_secret": "LK-SECRET-333",
        "lk_token": "LK-TOKEN-444",
        "agora_token": "AGORA-TOKEN-555",
    }
    with pytest.warns(FutureWarning):
        lk = LiveKitEgressConfig(
            url="wss://lk.example",
            api_key=secrets["lk_key"],
            api_secret=secrets["lk_secret"],
            api_token=secrets["lk_token"],
            room_name="room-1",
        )
    agora = AgoraEgressConfig(channel_name="chan-1", token=secrets["agora_token"], uid=5)
    with_lk = SessionConfig(**idle_service.session_kwargs(api_key=secrets["api_key"], livekit_egress=lk))
    with_agora = SessionConfig(**idle_service.session_kwargs(api_key=secrets["api_key"], agora_egress=agora))
    session = AvatarSession(with_lk)
    try:
        texts = [repr(lk), repr(agora), repr(with_lk), repr(with_agora), repr(session), str(with_lk)]
    finally:
        session.close()
    for text in texts:
        for secret in secrets.values():
            assert secret not in text, f"{secret} in {text}"
    assert "room-1" in repr(lk)
    assert "chan-1" in repr(agora)
    assert idle_service.avatar_id in repr(session)


def test_session_copies_its_config(idle_service: FakeAvatarService) -> None:
    config = SessionConfig(**idle_service.session_kwargs())
    session = AvatarSession(config)
    try:
        config.avatar_id = "changed"
        config.sample_rate = 12345
        config.api_key = "other"
        assert session.config is not config
        assert session.config.avatar_id == idle_service.avatar_id
        assert session.config.sample_rate == 16000
        assert session.config.api_key == idle_service.api_key
    finally:
        session.close()


def test_session_copies_nested_egress_config(idle_service: FakeAvatarService) -> None:
    """The docstring promises later changes to the config have no effect; that includes its egress part."""
    config = SessionConfig(**idle_service.session_kwargs(livekit_egress=livekit(extra_attributes={"a": "b"})))
    session = AvatarSession(config)
    try:
        assert config.livekit_egress is not None
        config.livekit_egress.room_name = ""  # would not even pass validation
        config.livekit_egress.extra_attributes["injected"] = "x"
        copied = session.config.livekit_egress
        assert copied is not None
        assert copied.room_name == "room-1"
        assert copied.extra_attributes == {"a": "b"}
    finally:
        session.close()


# --------------------------------------------------------------------------------------------------
# Calls in the wrong state (with the stand-in idle_service)
# --------------------------------------------------------------------------------------------------


def test_send_audio_before_start(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    session = make_session()
    with pytest.raises(ValueError, match="start"):
        session.send_audio(pcm(0.02))
    session.init()
    with pytest.raises(ValueError, match="start"):
        session.send_audio(pcm(0.02), end=True)
    assert service.upgrade_attempts == 0


def test_start_before_init(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    session = make_session()
    with pytest.raises(ValueError, match="init"):
        session.start()
    assert_no_io(service)


def test_interrupt_before_any_audio(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    session = make_session()
    with pytest.raises(ValueError):
        session.interrupt()  # not even started
    session.init()
    session.start()
    with pytest.raises(ValueError, match="audio"):
        session.interrupt()


def test_calls_after_close_of_a_new_session(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession], recorder: Recorder
) -> None:
    session = make_session()
    session.close()
    assert session.closed
    assert recorder.closes == 1
    with pytest.raises(ValueError, match="closed"):
        session.init()
    with pytest.raises(ValueError, match="closed"):
        session.start()
    with pytest.raises(ValueError, match="closed"):
        session.send_audio(pcm(0.02))
    with pytest.raises(ValueError, match="closed"):
        session.interrupt()
    assert_no_io(service)


def test_calls_after_close_of_a_started_session(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession], recorder: Recorder
) -> None:
    session = started(make_session)
    session.close()
    recorder.wait_closed()
    with pytest.raises(ValueError, match="closed"):
        session.init()
    with pytest.raises(ValueError, match="closed"):
        session.start()
    with pytest.raises(ValueError, match="closed"):
        session.send_audio(pcm(0.02), end=True)
    with pytest.raises(ValueError, match="closed"):
        session.interrupt()
    assert len(service.token_requests) == 1
    assert service.upgrade_attempts == 1


def test_send_audio_argument_types(service: FakeAvatarService, make_session: Callable[..., AvatarSession]) -> None:
    session = started(make_session)
    with pytest.raises(TypeError, match="audio"):
        session.send_audio("\x00\x00")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="audio"):
        session.send_audio([0, 0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="audio"):
        session.send_audio(b"\x00\x00\x00")
    with pytest.raises(TypeError, match="end"):
        session.send_audio(pcm(0.02), end="yes")  # type: ignore[arg-type]
    # None of those went out: the first message the service sees is the valid chunk below.
    req_id = session.send_audio(bytearray(pcm(0.02)), end=True)
    conn = service.connection()
    request = conn.wait_for_request(req_id)
    assert request.chunks == 1
    assert bytes(request.audio) == pcm(0.02)
    assert [m.client_audio_input.req_id for m in conn.messages] == [req_id]
