"""A pool's arguments, checked once when it is made (avatarsdk/_pool_config.py), without I/O: its size and token
times (types, boundaries, the exact messages), the sessions' template (checked, copied, with its warnings) and
the PoolConfig record."""

from __future__ import annotations

import dataclasses
import math
import warnings
from datetime import timedelta
from typing import Any, Callable, Type

import pytest
from conftest import needs_pyav, valid_config

from avatarsdk import InsecureTransportWarning
from avatarsdk._options import Options
from avatarsdk._pool_config import MAX_TOKEN_LIFETIME, PoolConfig, check_limits, check_retirement, session_template
from avatarsdk.session_config import (
    AgoraEgressConfig,
    AudioFormat,
    LiveKitEgressConfig,
    OggOpusEncoderConfig,
    SessionConfig,
)

V1_URL = "https://ingress.example/v1/driveningress"


config = valid_config


def message(kind: Type[Exception], call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The message of the ``kind`` that ``call(*args, **kwargs)`` raises (exactly that type)."""
    with pytest.raises(kind) as info:
        call(*args, **kwargs)
    assert type(info.value) is kind
    return str(info.value)


def quiet_template(cfg: SessionConfig) -> SessionConfig:
    """session_template, failing on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return session_template(cfg)


# --------------------------------------------------------------------------------------------------
# check_limits
# --------------------------------------------------------------------------------------------------


def test_max_token_lifetime_is_24_hours() -> None:
    assert MAX_TOKEN_LIFETIME == 86400.0


def test_check_limits_returns_the_times_as_floats() -> None:
    lifetime, margin = check_limits(4, 1, 3600, 300)
    assert (lifetime, margin) == (3600.0, 300.0)
    assert type(lifetime) is float and type(margin) is float
    assert check_limits(1, 0, 1.5, 0.25) == (1.5, 0.25)


def test_max_size_at_least_one() -> None:
    assert check_limits(1, 0, 60, 0) == (60.0, 0.0)
    assert message(ValueError, check_limits, 0, 0, 60, 0) == "max_size: expected at least 1, got 0"
    assert message(ValueError, check_limits, -2, 0, 60, 0) == "max_size: expected at least 1, got -2"


@pytest.mark.parametrize(("value", "name"), [(True, "bool"), (2.0, "float"), ("2", "str"), (None, "NoneType")])
def test_max_size_is_an_int(value: Any, name: str) -> None:
    assert message(TypeError, check_limits, value, 0, 60, 0) == f"max_size: expected an int, got {name}"


def test_min_idle_from_zero_to_max_size() -> None:
    assert check_limits(3, 0, 60, 0) == (60.0, 0.0)
    assert check_limits(3, 3, 60, 0) == (60.0, 0.0)
    assert message(ValueError, check_limits, 3, -1, 60, 0) == "min_idle: expected 0 to max_size (3), got -1"
    assert message(ValueError, check_limits, 3, 4, 60, 0) == "min_idle: expected 0 to max_size (3), got 4"


@pytest.mark.parametrize(("value", "name"), [(False, "bool"), (1.0, "float"), ("1", "str"), (None, "NoneType")])
def test_min_idle_is_an_int(value: Any, name: str) -> None:
    assert message(TypeError, check_limits, 3, value, 60, 0) == f"min_idle: expected an int, got {name}"


def test_max_size_is_checked_before_min_idle() -> None:
    assert message(ValueError, check_limits, 0, "x", "y", "z") == "max_size: expected at least 1, got 0"
    assert message(TypeError, check_limits, 2, "x", "y", "z") == "min_idle: expected an int, got str"


def test_token_lifetime_from_one_second_to_24_hours() -> None:
    assert check_limits(1, 0, 1, 0) == (1.0, 0.0)
    assert check_limits(1, 0, 86400, 0) == (86400.0, 0.0)
    for value, shown in ((0, "0"), (0.999, "0.999"), (-5, "-5"), (86401, "86401")):
        assert message(ValueError, check_limits, 1, 0, value, 0) == (
            f"token_lifetime: expected 1 to 86400 seconds, got {shown}"
        )
    over = math.nextafter(86400.0, math.inf)
    assert message(ValueError, check_limits, 1, 0, over, 0) == (
        f"token_lifetime: expected 1 to 86400 seconds, got {over!r}"
    )
    under = math.nextafter(1.0, 0.0)
    assert message(ValueError, check_limits, 1, 0, under, 0) == (
        f"token_lifetime: expected 1 to 86400 seconds, got {under!r}"
    )


@pytest.mark.parametrize(
    ("value", "name"), [(True, "bool"), ("3600", "str"), (None, "NoneType"), (timedelta(hours=1), "timedelta")]
)
def test_token_lifetime_is_a_number(value: Any, name: str) -> None:
    assert message(TypeError, check_limits, 1, 0, value, 0) == (
        f"token_lifetime: expected seconds as a number, got {name}"
    )


@pytest.mark.parametrize(("value", "shown"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_token_lifetime_is_finite(value: float, shown: str) -> None:
    assert message(ValueError, check_limits, 1, 0, value, 0) == (
        f"token_lifetime: expected a finite number of seconds, got {shown}"
    )


def test_refresh_margin_from_zero_to_less_than_the_lifetime() -> None:
    assert check_limits(1, 0, 3600, 0) == (3600.0, 0.0)
    assert check_limits(1, 0, 3600, 3599.5) == (3600.0, 3599.5)
    below = math.nextafter(3600.0, 0.0)
    assert check_limits(1, 0, 3600, below) == (3600.0, below)
    for value, shown in ((3600, "3600"), (3600.0, "3600.0"), (-0.001, "-0.001"), (5000, "5000")):
        assert message(ValueError, check_limits, 1, 0, 3600, value) == (
            f"refresh_margin: expected 0 or more seconds, less than token_lifetime (3600), got {shown}"
        )


def test_refresh_margin_message_shows_the_lifetime_briefly() -> None:
    assert message(ValueError, check_limits, 1, 0, 1.5, 2) == (
        "refresh_margin: expected 0 or more seconds, less than token_lifetime (1.5), got 2"
    )
    assert message(ValueError, check_limits, 1, 0, 86400, 86400) == (
        "refresh_margin: expected 0 or more seconds, less than token_lifetime (86400), got 86400"
    )


@pytest.mark.parametrize(("value", "name"), [(False, "bool"), ("60", "str"), (None, "NoneType")])
def test_refresh_margin_is_a_number(value: Any, name: str) -> None:
    assert message(TypeError, check_limits, 1, 0, 3600, value) == (
        f"refresh_margin: expected seconds as a number, got {name}"
    )


@pytest.mark.parametrize(("value", "shown"), [(math.nan, "nan"), (math.inf, "inf")])
def test_refresh_margin_is_finite(value: float, shown: str) -> None:
    assert message(ValueError, check_limits, 1, 0, 3600, value) == (
        f"refresh_margin: expected a finite number of seconds, got {shown}"
    )


def test_token_lifetime_is_checked_before_refresh_margin() -> None:
    assert message(ValueError, check_limits, 1, 0, 0, "x") == "token_lifetime: expected 1 to 86400 seconds, got 0"


# --------------------------------------------------------------------------------------------------
# check_retirement
# --------------------------------------------------------------------------------------------------


def test_check_retirement_returns_seconds_as_floats_or_none() -> None:
    assert check_retirement(30, 540) == (30.0, 540.0)
    max_idle, max_age = check_retirement(1, 2)
    assert type(max_idle) is float and type(max_age) is float
    assert check_retirement(None, None) == (None, None)
    assert check_retirement(0, 0.001) == (0.0, 0.001)  # 0: an idle session beyond min_idle goes at once


def test_max_idle_time_is_zero_or_more() -> None:
    for value, shown in ((-1, "-1"), (-0.001, "-0.001")):
        assert message(ValueError, check_retirement, value, 540) == (
            f"max_idle_time: expected 0 or more seconds, or None, got {shown}"
        )


def test_max_session_age_is_more_than_zero() -> None:
    for value, shown in ((0, "0"), (-5.5, "-5.5")):
        assert message(ValueError, check_retirement, 30, value) == (
            f"max_session_age: expected more than 0 seconds, or None, got {shown}"
        )


@pytest.mark.parametrize("field", ["max_idle_time", "max_session_age"])
@pytest.mark.parametrize(("value", "name"), [(True, "bool"), ("60", "str"), ([1], "list")])
def test_retirement_times_are_numbers_or_none(field: str, value: Any, name: str) -> None:
    args = {"max_idle_time": 30, "max_session_age": 540, field: value}
    assert message(TypeError, check_retirement, *args.values()) == (
        f"{field}: expected seconds as a number or None, got {name}"
    )


@pytest.mark.parametrize("field", ["max_idle_time", "max_session_age"])
@pytest.mark.parametrize(("value", "shown"), [(math.nan, "nan"), (math.inf, "inf")])
def test_retirement_times_are_finite(field: str, value: float, shown: str) -> None:
    args = {"max_idle_time": 30, "max_session_age": 540, field: value}
    assert message(ValueError, check_retirement, *args.values()) == (
        f"{field}: expected a finite number of seconds, got {shown}"
    )


# --------------------------------------------------------------------------------------------------
# session_template
# --------------------------------------------------------------------------------------------------


def test_session_template_is_a_checked_copy() -> None:
    original = config(livekit_egress=LiveKitEgressConfig(url="wss://lk", room_name="r", api_token="t"))
    template = quiet_template(original)
    assert template is not original
    assert template == original
    assert template.livekit_egress is not original.livekit_egress
    assert original.livekit_egress is not None
    original.livekit_egress.room_name = "r2"
    original.avatar_id = "avatar-2"
    assert template.livekit_egress is not None and template.livekit_egress.room_name == "r"
    assert template.avatar_id == "avatar-1"


def test_session_template_copies_agora_too() -> None:
    original = config(agora_egress=AgoraEgressConfig(channel_name="c", uid=1))
    template = quiet_template(original)
    assert template.agora_egress is not original.agora_egress
    assert template.agora_egress == original.agora_egress


def test_session_template_refuses_what_check_config_refuses() -> None:
    assert message(TypeError, session_template, {"avatar_id": "a"}) == "config: expected a SessionConfig, got dict"
    assert message(ValueError, session_template, config(avatar_id="")) == (
        "avatar_id: expected a non-empty string, got ''"
    )
    assert message(ValueError, session_template, config(sample_rate=12000)).startswith("sample_rate: expected one of")


def test_session_template_checks_v1_and_says_its_deprecation() -> None:
    with pytest.warns(DeprecationWarning) as caught:
        template = session_template(config(ingress_endpoint_url=V1_URL))
    assert [str(w.message) for w in caught] == [
        "the v1 ingress (/v1/driveningress) is deprecated by the service; use /v2/driveningress"
    ]
    assert template.ingress_endpoint_url == V1_URL
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert message(ValueError, session_template, config(ingress_endpoint_url=V1_URL, use_query_auth=True)) == (
            "use_query_auth: the v1 ingress takes its credentials in headers only"
        )


@needs_pyav
def test_session_template_makes_the_encoder_once_before_any_io() -> None:
    good = config(audio_format=AudioFormat.OGG_OPUS, ogg_opus_encoder=OggOpusEncoderConfig(frame_duration_ms=40))
    assert quiet_template(good).ogg_opus_encoder == OggOpusEncoderConfig(frame_duration_ms=40)
    bad = config(audio_format=AudioFormat.OGG_OPUS, ogg_opus_encoder=OggOpusEncoderConfig(frame_duration_ms=7))
    assert message(ValueError, session_template, bad) == (
        "frame_duration_ms: expected one of 2.5, 5, 10, 20, 40, 60, got 7"
    )
    # check_config takes any bitrate >= 0; the encoder knows its own range.
    bad = config(audio_format=AudioFormat.OGG_OPUS, bitrate=100, ogg_opus_encoder=OggOpusEncoderConfig())
    assert message(ValueError, session_template, bad).startswith("bitrate: expected 0 (the libopus default) or ")
    # Without the encoder, Ogg Opus bytes are sent as they are: nothing to make.
    assert quiet_template(config(audio_format=AudioFormat.OGG_OPUS, bitrate=100)).bitrate == 100


def test_session_template_warns_about_plain_http_to_another_host() -> None:
    with pytest.warns(InsecureTransportWarning) as caught:
        session_template(
            config(console_endpoint_url="http://console.example", ingress_endpoint_url="ws://ingress.example/v2")
        )
    assert [str(w.message) for w in caught] == [
        "console_endpoint_url: the API key would travel unencrypted (http://) to console.example; use https://",
        "ingress_endpoint_url: the session token would travel unencrypted (ws://) to ingress.example; use https://",
    ]


def test_session_template_warns_about_query_auth() -> None:
    with pytest.warns(InsecureTransportWarning) as caught:
        session_template(config(use_query_auth=True))
    assert [str(w.message) for w in caught] == [
        "use_query_auth=True: the session token travels in the URL query, where proxies and servers may log it;"
        " header auth (the default) keeps it out of URLs"
    ]


def test_session_template_loopback_http_is_quiet() -> None:
    cfg = config(console_endpoint_url="http://127.0.0.1:8080", ingress_endpoint_url="ws://localhost:8081/v2")
    assert quiet_template(cfg).console_endpoint_url == "http://127.0.0.1:8080"


@needs_pyav
def test_session_template_is_out_of_reach_of_the_callers_encoder() -> None:
    encoder = OggOpusEncoderConfig(frame_duration_ms=20)
    template = quiet_template(config(audio_format=AudioFormat.OGG_OPUS, ogg_opus_encoder=encoder))
    encoder.frame_duration_ms = 7  # after the pool was made
    assert template.ogg_opus_encoder == OggOpusEncoderConfig(frame_duration_ms=20)


# --------------------------------------------------------------------------------------------------
# PoolConfig
# --------------------------------------------------------------------------------------------------


def test_pool_config_holds_the_checked_settings_in_order() -> None:
    template = quiet_template(config())
    options = Options.checked({})
    on_error = print
    pool = PoolConfig(4, 1, 3600.0, 300.0, template, options, on_error, 7)
    assert (pool.max_size, pool.min_idle, pool.lifetime, pool.margin) == (4, 1, 3600.0, 300.0)
    assert pool.template is template
    assert pool.options is options
    assert pool.on_error is print
    assert pool.number == 7
    assert (pool.max_idle, pool.max_age) == (None, None)  # no retirement unless given
    assert [f.name for f in dataclasses.fields(PoolConfig)] == [
        "max_size",
        "min_idle",
        "lifetime",
        "margin",
        "template",
        "options",
        "on_error",
        "number",
        "max_idle",
        "max_age",
    ]
    retiring = PoolConfig(4, 1, 3600.0, 300.0, template, options, on_error, 7, 30.0, 540.0)
    assert (retiring.max_idle, retiring.max_age) == (30.0, 540.0)


def test_pool_config_is_frozen() -> None:
    pool = PoolConfig(1, 0, 60.0, 0.0, quiet_template(config()), Options.checked({}), None, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pool.max_size = 2  # type: ignore[misc]
