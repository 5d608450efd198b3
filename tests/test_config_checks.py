"""Checks of a whole SessionConfig and of each chunk of audio (avatarsdk/_config_checks.py), without I/O: every
field's refusal with its exact message, the egress and Ogg Opus encoder rules, the session's own copy of the
configuration, and the list of its secrets."""

from __future__ import annotations

import dataclasses
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Type

import pytest
from conftest import valid_config

from avatarsdk._config_checks import check_audio, check_config, copy_config, secrets_of
from avatarsdk._validation import OGG_OPUS_SAMPLE_RATES, PCM_SAMPLE_RATES
from avatarsdk.session_config import (
    AgoraEgressConfig,
    AudioFormat,
    LiveKitEgressConfig,
    OggOpusEncoderConfig,
    SessionConfig,
)

PCM = AudioFormat.PCM_S16LE
OPUS = AudioFormat.OGG_OPUS
CALLBACKS = ("transport_frames", "on_error", "on_close", "on_playback_state", "on_encoded_audio", "on_reconnect")
WAV_HEADER = b"RIFF\x24\x00\x00\x00WAVEfmt "  # 16 bytes: a WAV file's start


config = valid_config


def livekit(**changes: Any) -> LiveKitEgressConfig:
    fields: dict = {"url": "wss://lk.example", "room_name": "room-1", "api_token": "lk-token"}  # type: ignore[type-arg]
    fields.update(changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # api_key/api_secret are deprecated; some tests use them
        return LiveKitEgressConfig(**fields)


def agora(**changes: Any) -> AgoraEgressConfig:
    fields: dict = {"channel_name": "chan-1", "token": "ag-token", "uid": 7}  # type: ignore[type-arg]
    fields.update(changes)
    return AgoraEgressConfig(**fields)


def message(kind: Type[Exception], call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The message of the ``kind`` that ``call(*args, **kwargs)`` raises (exactly that type)."""
    with pytest.raises(kind) as info:
        call(*args, **kwargs)
    assert type(info.value) is kind
    return str(info.value)


def refused(kind: Type[Exception], cfg: SessionConfig) -> str:
    return message(kind, check_config, cfg)


# --------------------------------------------------------------------------------------------------
# check_config: the configuration and its plain fields
# --------------------------------------------------------------------------------------------------


def test_a_valid_configuration_is_returned_as_it_is() -> None:
    cfg = config()
    assert check_config(cfg) is cfg


@pytest.mark.parametrize(("value", "name"), [(None, "NoneType"), ({"avatar_id": "a"}, "dict"), ("cfg", "str")])
def test_check_config_takes_only_a_session_config(value: Any, name: str) -> None:
    assert message(TypeError, check_config, value) == f"config: expected a SessionConfig, got {name}"


def test_avatar_id() -> None:
    assert refused(ValueError, config(avatar_id="")) == "avatar_id: expected a non-empty string, got ''"
    assert refused(TypeError, config(avatar_id=None)) == "avatar_id: expected a str, got NoneType"
    assert refused(ValueError, config(avatar_id="a\nb")) == (
        "avatar_id: expected no control characters (CR, LF, ...), got 'a\\nb'"
    )
    # Not a header: any printable text.
    assert check_config(config(avatar_id="avatar-\u00e9")).avatar_id == "avatar-\u00e9"


def test_api_key_is_never_shown_and_must_fit_a_header() -> None:
    assert refused(ValueError, config(api_key="")) == "api_key: expected a non-empty string, got <redacted>"
    assert refused(ValueError, config(api_key=" sk-live-1")) == (
        "api_key: expected no leading or trailing whitespace, got <redacted>"
    )
    assert refused(ValueError, config(api_key="sk-\u00e9")) == (
        "api_key: expected printable ASCII (it is sent in an HTTP header), got <redacted>"
    )
    assert refused(TypeError, config(api_key=b"sk")) == "api_key: expected a str, got bytes"


def test_app_id_is_shown_and_must_fit_a_header() -> None:
    assert refused(ValueError, config(app_id="")) == "app_id: expected a non-empty string, got ''"
    assert refused(ValueError, config(app_id="app-\u00e9")) == (
        "app_id: expected printable ASCII (it is sent in an HTTP header), got 'app-\u00e9'"
    )


@pytest.mark.parametrize(("value", "name"), [(1, "int"), ("true", "str"), (None, "NoneType")])
def test_use_query_auth_is_a_bool(value: Any, name: str) -> None:
    assert refused(TypeError, config(use_query_auth=value)) == f"use_query_auth: expected a bool, got {name}"


def test_use_query_auth_true_is_accepted() -> None:
    assert check_config(config(use_query_auth=True)).use_query_auth is True


def test_expire_at() -> None:
    assert check_config(config(expire_at=None)).expire_at is None  # an hour after each token call
    assert refused(TypeError, config(expire_at="tomorrow")) == "expire_at: expected a datetime, got str"
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    assert refused(ValueError, config(expire_at=past)).startswith("expire_at: expected a time in the future, got ")
    far = datetime.now(timezone.utc) + timedelta(hours=25)
    assert refused(ValueError, config(expire_at=far)).startswith("expire_at: expected at most 24 h ahead, got ")


def test_console_endpoint_url_is_http_or_https() -> None:
    assert check_config(config(console_endpoint_url="http://localhost:8080")).console_endpoint_url
    assert refused(ValueError, config(console_endpoint_url="wss://console.example")) == (
        "console_endpoint_url: expected a URL with scheme http or https, got 'wss' in 'wss://console.example'"
    )
    assert refused(ValueError, config(console_endpoint_url="")) == (
        "console_endpoint_url: expected a URL (http/https) or a region, got an empty string"
    )


@pytest.mark.parametrize("scheme", ["http", "https", "ws", "wss"])
def test_ingress_endpoint_url_takes_four_schemes(scheme: str) -> None:
    url = f"{scheme}://ingress.example/v2/driveningress"
    assert check_config(config(ingress_endpoint_url=url)).ingress_endpoint_url == url


def test_ingress_endpoint_url_refusals() -> None:
    assert refused(ValueError, config(ingress_endpoint_url="ftp://h")) == (
        "ingress_endpoint_url: expected a URL with scheme http or https or ws or wss, got 'ftp' in 'ftp://h'"
    )
    assert refused(ValueError, config(ingress_endpoint_url="wss://")) == (
        "ingress_endpoint_url: expected a URL with a host, got 'wss://'"
    )
    assert refused(TypeError, config(ingress_endpoint_url=None)) == (
        "ingress_endpoint_url: expected a URL string, got NoneType"
    )


def test_audio_format_must_be_the_enum() -> None:
    cfg = config()
    cfg.audio_format = "pcm_s16le"  # type: ignore[assignment]  # set after __post_init__, which coerces
    assert refused(TypeError, cfg) == "audio_format: expected an AudioFormat, got str"


@pytest.mark.parametrize("rate", PCM_SAMPLE_RATES)
def test_pcm_sample_rates(rate: int) -> None:
    assert check_config(config(sample_rate=rate)).sample_rate == rate


@pytest.mark.parametrize("rate", OGG_OPUS_SAMPLE_RATES)
def test_ogg_opus_sample_rates(rate: int) -> None:
    assert check_config(config(audio_format=OPUS, sample_rate=rate)).sample_rate == rate


def test_a_sample_rate_of_the_other_format_is_refused_with_the_list() -> None:
    assert refused(ValueError, config(sample_rate=12000)) == (
        "sample_rate: expected one of 8000, 16000, 22050, 24000, 32000, 44100, 48000 Hz for pcm_s16le, got 12000"
    )
    assert refused(ValueError, config(audio_format=OPUS, sample_rate=44100)) == (
        "sample_rate: expected one of 8000, 12000, 16000, 24000, 48000 Hz for ogg_opus, got 44100"
    )


def test_sample_rate_is_an_int() -> None:
    assert refused(TypeError, config(sample_rate=16000.0)) == "sample_rate: expected an int, got float"
    assert refused(TypeError, config(sample_rate=True)) == "sample_rate: expected an int, got bool"


def test_bitrate() -> None:
    assert check_config(config(bitrate=0)).bitrate == 0
    assert check_config(config(audio_format=OPUS, bitrate=1)).bitrate == 1
    assert refused(ValueError, config(bitrate=-1)) == "bitrate: expected 0 or a positive bitrate, got -1"
    assert refused(TypeError, config(bitrate=32000.0)) == "bitrate: expected an int, got float"


@pytest.mark.parametrize("name", CALLBACKS)
def test_each_callback_is_callable_or_none(name: str) -> None:
    assert check_config(config(**{name: print})) is not None
    assert check_config(config(**{name: None})) is not None
    assert refused(TypeError, config(**{name: "print"})) == f"{name}: expected a callable or None, got str"


# --------------------------------------------------------------------------------------------------
# check_config: the Ogg Opus encoder
# --------------------------------------------------------------------------------------------------


def test_ogg_opus_encoder_with_ogg_opus() -> None:
    cfg = config(audio_format=OPUS, ogg_opus_encoder=OggOpusEncoderConfig())
    assert check_config(cfg) is cfg


def test_ogg_opus_encoder_must_be_its_config_type() -> None:
    cfg = config(audio_format=OPUS, ogg_opus_encoder={"frame_duration_ms": 20})
    assert refused(TypeError, cfg) == "ogg_opus_encoder: expected an OggOpusEncoderConfig, got dict"
    # The type is checked first, whatever the format.
    assert refused(TypeError, config(ogg_opus_encoder=True)) == (
        "ogg_opus_encoder: expected an OggOpusEncoderConfig, got bool"
    )


def test_ogg_opus_encoder_needs_the_ogg_opus_format() -> None:
    assert refused(ValueError, config(ogg_opus_encoder=OggOpusEncoderConfig())) == (
        "ogg_opus_encoder: expected audio_format=OGG_OPUS (PCM sessions send PCM as it is)"
    )


# --------------------------------------------------------------------------------------------------
# check_config: egress
# --------------------------------------------------------------------------------------------------


def test_at_most_one_egress() -> None:
    assert refused(ValueError, config(livekit_egress=livekit(), agora_egress=agora())) == (
        "livekit_egress, agora_egress: expected at most one egress, got both"
    )
    # Told before either is looked into.
    assert refused(ValueError, config(livekit_egress=livekit(url=""), agora_egress=agora(uid=-1))) == (
        "livekit_egress, agora_egress: expected at most one egress, got both"
    )


def test_livekit_egress_valid() -> None:
    cfg = config(livekit_egress=livekit(extra_attributes={"role": "avatar"}, idle_timeout=30))
    assert check_config(cfg) is cfg


def test_livekit_egress_type() -> None:
    assert refused(TypeError, config(livekit_egress=agora())) == (
        "livekit_egress: expected a LiveKitEgressConfig, got AgoraEgressConfig"
    )


@pytest.mark.parametrize("url", ["ws://lk.example", "wss://lk.example", "http://lk.example", "https://lk.example"])
def test_livekit_egress_url_schemes(url: str) -> None:
    assert check_config(config(livekit_egress=livekit(url=url))) is not None


def test_livekit_egress_url_refusals() -> None:
    assert refused(ValueError, config(livekit_egress=livekit(url=""))) == (
        "livekit_egress.url: expected a URL (ws/wss/http/https), got an empty string"
    )
    assert refused(ValueError, config(livekit_egress=livekit(url="ftp://lk"))) == (
        "livekit_egress.url: expected a URL with scheme ws or wss or http or https, got 'ftp' in 'ftp://lk'"
    )


def test_livekit_egress_room_name() -> None:
    assert refused(ValueError, config(livekit_egress=livekit(room_name=""))) == (
        "livekit_egress.room_name: expected a non-empty string, got ''"
    )
    assert check_config(config(livekit_egress=livekit(room_name="salle-\u00e9"))) is not None  # not a header


def test_livekit_egress_credentials() -> None:
    expected = "livekit_egress: expected api_token (or the deprecated api_key and api_secret), got none"
    assert refused(ValueError, config(livekit_egress=livekit(api_token=""))) == expected
    assert refused(ValueError, config(livekit_egress=livekit(api_token="", api_key="k"))) == expected
    assert refused(ValueError, config(livekit_egress=livekit(api_token="", api_secret="s"))) == expected
    assert check_config(config(livekit_egress=livekit(api_token="", api_key="k", api_secret="s"))) is not None
    assert check_config(config(livekit_egress=livekit(api_token="t"))) is not None


@pytest.mark.parametrize("attributes", [["role", "avatar"], {"role": 1}, {1: "avatar"}, {"a": "b", "role": None}, None])
def test_livekit_egress_extra_attributes_are_str_to_str(attributes: Any) -> None:
    assert refused(TypeError, config(livekit_egress=livekit(extra_attributes=attributes))) == (
        "livekit_egress.extra_attributes: expected a dict of str to str"
    )


def test_livekit_egress_idle_timeout() -> None:
    assert check_config(config(livekit_egress=livekit(idle_timeout=0))) is not None
    assert refused(ValueError, config(livekit_egress=livekit(idle_timeout=-1))) == (
        "livekit_egress.idle_timeout: expected seconds >= 0, got -1"
    )
    assert refused(TypeError, config(livekit_egress=livekit(idle_timeout=1.5))) == (
        "livekit_egress.idle_timeout: expected an int, got float"
    )


def test_agora_egress_valid_and_its_uid_range() -> None:
    for uid in (0, 1, 2**32 - 1):
        assert check_config(config(agora_egress=agora(uid=uid))) is not None
    assert check_config(config(agora_egress=agora(token=""))) is not None  # test projects have no token
    for uid in (-1, 2**32):
        assert refused(ValueError, config(agora_egress=agora(uid=uid))) == (
            f"agora_egress.uid: expected 0 to 4294967295, got {uid}"
        )


def test_agora_egress_refusals() -> None:
    assert refused(TypeError, config(agora_egress=livekit())) == (
        "agora_egress: expected an AgoraEgressConfig, got LiveKitEgressConfig"
    )
    assert refused(ValueError, config(agora_egress=agora(channel_name=""))) == (
        "agora_egress.channel_name: expected a non-empty string, got ''"
    )
    assert check_config(config(agora_egress=agora(channel_name="canal-\u00e9"))) is not None  # not a header
    assert refused(TypeError, config(agora_egress=agora(uid="7"))) == "agora_egress.uid: expected an int, got str"


# --------------------------------------------------------------------------------------------------
# check_audio
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "audio", [b"\x01\x02\x03\x04", bytearray(b"\x01\x02\x03\x04"), memoryview(b"\x01\x02\x03\x04")]
)
def test_check_audio_returns_bytes(audio: Any) -> None:
    data = check_audio(audio, PCM)
    assert type(data) is bytes
    assert data == b"\x01\x02\x03\x04"


def test_check_audio_empty_is_fine() -> None:
    assert check_audio(b"", PCM) == b""
    assert check_audio(b"", OPUS, pcm=True) == b""


@pytest.mark.parametrize(("audio", "name"), [("abcd", "str"), ([0, 0], "list"), (None, "NoneType"), (4, "int")])
def test_check_audio_types(audio: Any, name: str) -> None:
    assert message(TypeError, check_audio, audio, PCM) == (
        f"audio: expected bytes, bytearray or memoryview, got {name}"
    )
    assert message(TypeError, check_audio, audio, OPUS) == (
        f"audio: expected bytes, bytearray or memoryview, got {name}"
    )


@pytest.mark.parametrize(("audio_format", "pcm"), [(PCM, False), (PCM, True), (OPUS, True)])
def test_check_audio_pcm_has_an_even_length(audio_format: AudioFormat, pcm: bool) -> None:
    assert message(ValueError, check_audio, b"\x00\x00\x00", audio_format, pcm=pcm) == (
        "audio: expected PCM s16le (an even number of bytes), got 3 bytes"
    )
    assert message(ValueError, check_audio, b"\x00", audio_format, pcm=pcm) == (
        "audio: expected PCM s16le (an even number of bytes), got 1 bytes"
    )


@pytest.mark.parametrize(("audio_format", "pcm"), [(PCM, False), (PCM, True), (OPUS, True)])
def test_check_audio_pcm_is_not_a_wav_file(audio_format: AudioFormat, pcm: bool) -> None:
    assert message(ValueError, check_audio, WAV_HEADER + b"\x00" * 8, audio_format, pcm=pcm) == (
        "audio: expected raw PCM s16le samples, got a WAV file (RIFF header): its header would play as noise;"
        " convert it with avatarsdk.load_audio(...) and send the PCM it returns"
    )


def test_check_audio_odd_wav_is_refused_for_its_length_first() -> None:
    assert message(ValueError, check_audio, WAV_HEADER + b"\x00", PCM) == (
        "audio: expected PCM s16le (an even number of bytes), got 17 bytes"
    )


def test_check_audio_ogg_opus_bytes_are_left_alone() -> None:
    page = b"OggS\x00\x02" + b"\x00" * 21  # 27 bytes: odd
    assert check_audio(page, OPUS) == page
    assert check_audio(bytearray(page), OPUS) == page
    # Not PCM: a RIFF header is none of this check's business either.
    assert check_audio(WAV_HEADER, OPUS) == WAV_HEADER


# --------------------------------------------------------------------------------------------------
# copy_config
# --------------------------------------------------------------------------------------------------


def test_copy_config_is_an_equal_new_object() -> None:
    original = config(on_error=print)
    copied = copy_config(original)
    assert copied is not original
    assert copied == original
    assert copied.livekit_egress is None
    assert copied.agora_egress is None


def test_copy_config_later_changes_to_the_original_do_not_reach_the_copy() -> None:
    original = config()
    copied = copy_config(original)
    original.avatar_id = "avatar-2"
    original.sample_rate = 24000
    assert copied.avatar_id == "avatar-1"
    assert copied.sample_rate == 16000


def test_copy_config_copies_livekit_and_its_attributes() -> None:
    attributes = {"role": "avatar"}
    original = config(livekit_egress=livekit(extra_attributes=attributes))
    copied = copy_config(original)
    assert copied.livekit_egress is not original.livekit_egress
    assert copied.livekit_egress == original.livekit_egress
    assert copied.livekit_egress is not None and original.livekit_egress is not None
    assert copied.livekit_egress.extra_attributes is not attributes
    # The original keeps its own dict.
    assert original.livekit_egress.extra_attributes is attributes
    original.livekit_egress.room_name = "room-2"
    attributes["role"] = "changed"
    attributes["new"] = "x"
    assert copied.livekit_egress.room_name == "room-1"
    assert copied.livekit_egress.extra_attributes == {"role": "avatar"}


def test_copy_config_copies_agora() -> None:
    original = config(agora_egress=agora())
    copied = copy_config(original)
    assert copied.agora_egress is not original.agora_egress
    assert copied.agora_egress == original.agora_egress
    assert original.agora_egress is not None
    original.agora_egress.uid = 99
    original.agora_egress.channel_name = "chan-2"
    assert copied.agora_egress == agora()


def test_copy_config_shares_the_callbacks() -> None:
    def on_error(err: Any) -> None: ...

    callbacks = {name: (lambda *args: None) for name in CALLBACKS}
    callbacks["on_error"] = on_error
    original = config(**callbacks)
    copied = copy_config(original)
    for name in CALLBACKS:
        assert getattr(copied, name) is callbacks[name]


def test_copy_config_copies_the_ogg_opus_encoder() -> None:
    encoder = OggOpusEncoderConfig(frame_duration_ms=20)
    original = config(audio_format=OPUS, ogg_opus_encoder=encoder)
    copied = copy_config(original)
    encoder.frame_duration_ms = 60
    assert copied.ogg_opus_encoder == OggOpusEncoderConfig(frame_duration_ms=20)


# --------------------------------------------------------------------------------------------------
# secrets_of
# --------------------------------------------------------------------------------------------------


def test_secrets_of_the_api_key_and_the_token() -> None:
    cfg = config(api_key="sk-1")
    assert secrets_of(cfg) == ("sk-1",)
    assert secrets_of(cfg, "tok-1") == ("tok-1", "sk-1")
    assert type(secrets_of(cfg)) is tuple


def test_secrets_of_livekit_every_credential_in_order() -> None:
    cfg = config(api_key="sk-1", livekit_egress=livekit(api_token="lk-t", api_secret="lk-s", api_key="lk-k"))
    assert secrets_of(cfg, "tok-1") == ("tok-1", "sk-1", "lk-t", "lk-s", "lk-k")


def test_secrets_of_agora_token() -> None:
    cfg = config(api_key="sk-1", agora_egress=agora(token="ag-t"))
    assert secrets_of(cfg, "tok-1") == ("tok-1", "sk-1", "ag-t")


def test_secrets_of_leaves_empty_ones_out() -> None:
    assert secrets_of(config(api_key="")) == ()
    assert secrets_of(config(api_key="", agora_egress=agora(token="")), "") == ()
    cfg = config(api_key="sk-1", livekit_egress=livekit(api_token="", api_secret="lk-s", api_key=""))
    assert secrets_of(cfg) == ("sk-1", "lk-s")
    cfg = config(api_key="sk-1", livekit_egress=livekit(api_token="lk-t"))
    assert secrets_of(cfg, "tok-1") == ("tok-1", "sk-1", "lk-t")


def test_secrets_of_both_egresses_livekit_first() -> None:
    # Not a valid configuration (check_config refuses it), but the list still holds every secret.
    cfg = config(api_key="sk-1", livekit_egress=livekit(api_token="lk-t"), agora_egress=agora(token="ag-t"))
    assert secrets_of(cfg, "tok-1") == ("tok-1", "sk-1", "lk-t", "ag-t")


def test_secrets_of_does_not_change_the_config() -> None:
    cfg = config(livekit_egress=livekit())
    before = dataclasses.asdict(cfg)
    secrets_of(cfg, "tok")
    assert dataclasses.asdict(cfg) == before
