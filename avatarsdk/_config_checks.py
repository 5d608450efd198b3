"""Checks of a whole :class:`~avatarsdk.SessionConfig` and of each chunk of audio, run before any I/O.

Each failure names the field and what was expected. The copy a session keeps (:func:`copy_config`) and the
list of a session's secrets (:func:`secrets_of`) are here too: both follow the configuration's fields.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Dict, Mapping, Tuple

from ._validation import (
    OGG_OPUS_SAMPLE_RATES,
    PCM_SAMPLE_RATES,
    check_callback,
    check_expire_at,
    check_int,
    check_text,
    check_url,
)
from .audio import is_wav
from .regions import AUTO_REGION, TOKEN_ROUTES, Endpoints, endpoints_for
from .session_config import AgoraEgressConfig, AudioFormat, LiveKitEgressConfig, OggOpusEncoderConfig, SessionConfig


def check_config(config: Any) -> SessionConfig:
    """Check every field of a :class:`SessionConfig` that can be checked without I/O."""
    if not isinstance(config, SessionConfig):
        raise TypeError(f"config: expected a SessionConfig, got {type(config).__name__}")
    check_text("avatar_id", config.avatar_id)
    check_text("api_key", config.api_key, secret=True, header=True)
    check_text("app_id", config.app_id, header=True)
    if not isinstance(config.use_query_auth, bool):
        raise TypeError(f"use_query_auth: expected a bool, got {type(config.use_query_auth).__name__}")
    if config.expire_at is not None:
        check_expire_at(config.expire_at)
    _check_endpoints(config)
    if not isinstance(config.audio_format, AudioFormat):
        raise TypeError(f"audio_format: expected an AudioFormat, got {type(config.audio_format).__name__}")
    rate = check_int("sample_rate", config.sample_rate)
    rates = PCM_SAMPLE_RATES if config.audio_format is AudioFormat.PCM_S16LE else OGG_OPUS_SAMPLE_RATES
    if rate not in rates:
        raise ValueError(
            f"sample_rate: expected one of {', '.join(map(str, rates))} Hz for {config.audio_format.value},"
            f" got {rate!r}"
        )
    if check_int("bitrate", config.bitrate) < 0:
        raise ValueError(f"bitrate: expected 0 or a positive bitrate, got {config.bitrate!r}")
    for name in ("transport_frames", "on_error", "on_close", "on_playback_state", "on_encoded_audio", "on_reconnect"):
        check_callback(name, getattr(config, name))
    encoder = config.ogg_opus_encoder
    if encoder is not None:
        if not isinstance(encoder, OggOpusEncoderConfig):
            raise TypeError(f"ogg_opus_encoder: expected an OggOpusEncoderConfig, got {type(encoder).__name__}")
        if config.audio_format is not AudioFormat.OGG_OPUS:
            raise ValueError("ogg_opus_encoder: expected audio_format=OGG_OPUS (PCM sessions send PCM as it is)")
    _check_egress(config)
    check_extra_params(config.extra_params)
    return config


def check_extra_params(params: Any) -> Dict[str, str]:
    """Session parameters: a mapping of non-empty str keys to str values, both valid UTF-8."""
    if not isinstance(params, Mapping):
        raise TypeError(f"extra_params: expected a dict of str to str, got {type(params).__name__}")
    for key, value in params.items():
        if not isinstance(key, str):
            raise TypeError(f"extra_params: expected str keys, got {type(key).__name__} {key!r}")
        if not key:
            raise ValueError("extra_params: expected non-empty keys, got ''")
        if not isinstance(value, str):
            raise TypeError(f"extra_params[{key!r}]: expected a str, got {type(value).__name__}")
        for text in (key, value):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"extra_params[{key!r}]: expected text encodable as UTF-8, got {text!r}") from None
    return dict(params)


def _check_endpoints(config: SessionConfig) -> None:
    """The URLs (either may be left empty when a region is given), the region and the token route."""
    region, route = config.region, config.token_route
    if region is not None and region != AUTO_REGION:
        endpoints_for(region)
    if route is not None and route not in TOKEN_ROUTES:
        routes = " or ".join(repr(name) for name in TOKEN_ROUTES)
        raise ValueError(f"token_route: expected {routes} (or None), got {route!r}")
    for name, url, schemes in (
        ("console_endpoint_url", config.console_endpoint_url, ("http", "https")),
        ("ingress_endpoint_url", config.ingress_endpoint_url, ("http", "https", "ws", "wss")),
    ):
        if region is None and url == "":
            raise ValueError(f"{name}: expected a URL ({'/'.join(schemes)}) or a region, got an empty string")
        if region is None or url:
            check_url(name, url, schemes)


def endpoint_fields(config: SessionConfig, endpoints: Endpoints) -> Dict[str, Any]:
    """The fields of ``config`` that a region's ``endpoints`` fill: each URL left empty, and the token route
    with the console URL it belongs to (unless a route was given)."""
    fields: Dict[str, Any] = {}
    if not config.ingress_endpoint_url:
        fields["ingress_endpoint_url"] = endpoints.ingress_endpoint_url
    if not config.console_endpoint_url:
        fields["console_endpoint_url"] = endpoints.console_endpoint_url
        if config.token_route is None:
            fields["token_route"] = endpoints.token_route
    return fields


def _check_egress(config: SessionConfig) -> None:
    livekit, agora = config.livekit_egress, config.agora_egress
    if livekit is not None and agora is not None:
        raise ValueError("livekit_egress, agora_egress: expected at most one egress, got both")
    if livekit is not None:
        if not isinstance(livekit, LiveKitEgressConfig):
            raise TypeError(f"livekit_egress: expected a LiveKitEgressConfig, got {type(livekit).__name__}")
        check_url("livekit_egress.url", livekit.url, ("ws", "wss", "http", "https"))
        check_text("livekit_egress.room_name", livekit.room_name)
        if not livekit.api_token and not (livekit.api_key and livekit.api_secret):
            raise ValueError("livekit_egress: expected api_token (or the deprecated api_key and api_secret), got none")
        if not isinstance(livekit.extra_attributes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in livekit.extra_attributes.items()
        ):
            raise TypeError("livekit_egress.extra_attributes: expected a dict of str to str")
        if check_int("livekit_egress.idle_timeout", livekit.idle_timeout) < 0:
            raise ValueError(f"livekit_egress.idle_timeout: expected seconds >= 0, got {livekit.idle_timeout!r}")
    if agora is not None:
        if not isinstance(agora, AgoraEgressConfig):
            raise TypeError(f"agora_egress: expected an AgoraEgressConfig, got {type(agora).__name__}")
        check_text("agora_egress.channel_name", agora.channel_name)
        uid = check_int("agora_egress.uid", agora.uid)
        if not 0 <= uid < 2**32:
            raise ValueError(f"agora_egress.uid: expected 0 to 4294967295, got {uid!r}")


def check_audio(audio: Any, audio_format: AudioFormat, *, pcm: bool = False) -> bytes:
    """Audio for one ``send_audio`` call, as bytes (``pcm``: PCM whatever the format, for the SDK's encoder)."""
    if not isinstance(audio, (bytes, bytearray, memoryview)):
        raise TypeError(f"audio: expected bytes, bytearray or memoryview, got {type(audio).__name__}")
    data = bytes(audio)
    if audio_format is AudioFormat.PCM_S16LE or pcm:
        if len(data) % 2:
            raise ValueError(f"audio: expected PCM s16le (an even number of bytes), got {len(data)} bytes")
        if is_wav(data):
            raise ValueError(
                "audio: expected raw PCM s16le samples, got a WAV file (RIFF header): its header would play as"
                " noise; convert it with avatarsdk.load_audio(...) and send the PCM it returns"
            )
    return data


def copy_config(config: SessionConfig) -> SessionConfig:
    """A copy the caller's later changes cannot reach (callbacks are shared, not copied), with the URLs of its
    ``region`` where none was given (``"auto"`` is left to ``init()``)."""
    livekit = copy.copy(config.livekit_egress)
    if livekit is not None:
        livekit.extra_attributes = dict(livekit.extra_attributes)
    region = config.region
    named = {} if region is None or region == AUTO_REGION else endpoint_fields(config, endpoints_for(region))
    return dataclasses.replace(
        config,
        livekit_egress=livekit,
        agora_egress=copy.copy(config.agora_egress),
        ogg_opus_encoder=copy.copy(config.ogg_opus_encoder),
        extra_params=dict(config.extra_params),
        **named,
    )


def secrets_of(config: SessionConfig, token: str = "") -> Tuple[str, ...]:
    """Every credential of a session (and its ``token``), to be removed from texts the service sends back."""
    values = [token, config.api_key]
    if config.livekit_egress is not None:
        values += [config.livekit_egress.api_token, config.livekit_egress.api_secret, config.livekit_egress.api_key]
    if config.agora_egress is not None:
        values.append(config.agora_egress.token)
    return tuple(v for v in values if v)
