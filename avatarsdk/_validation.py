"""Checks on user input, run before any I/O. Each failure names the field and what was expected."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Tuple, Union
from urllib.parse import urlsplit

from .audio import is_wav
from .session_config import AgoraEgressConfig, AudioFormat, LiveKitEgressConfig, OggOpusEncoderConfig, SessionConfig

PCM_SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
OGG_OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
MAX_TOKEN_LIFETIME = timedelta(hours=24)
MAX_TIMEOUT = 24 * 3600.0  # seconds; a session cannot outlive its 24 h token, and sockets refuse huge values

HttpTimeout = Union[float, Tuple[float, float], None]


def _fail(field: str, expected: str, value: Any, *, secret: bool = False) -> ValueError:
    shown = "<redacted>" if secret else repr(value)
    return ValueError(f"{field}: expected {expected}, got {shown}")


def check_text(field: str, value: Any, *, secret: bool = False, header: bool = False) -> str:
    """A non-empty string without control characters or surrounding whitespace; printable ASCII when it
    travels in an HTTP header (``header``)."""
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected a str, got {type(value).__name__}")
    if not value.strip():
        raise _fail(field, "a non-empty string", value, secret=secret)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise _fail(field, "no control characters (CR, LF, ...)", value, secret=secret)
    if value != value.strip():
        raise _fail(field, "no leading or trailing whitespace", value, secret=secret)
    if header and not value.isascii():
        raise _fail(field, "printable ASCII (it is sent in an HTTP header)", value, secret=secret)
    return value


def check_url(field: str, value: Any, schemes: Tuple[str, ...]) -> str:
    """An absolute URL with one of ``schemes`` and a host."""
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected a URL string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{field}: expected a URL ({'/'.join(schemes)}), got an empty string")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError(f"{field}: malformed URL {value!r} ({exc})") from None
    if parts.scheme.lower() not in schemes:
        raise ValueError(
            f"{field}: expected a URL with scheme {' or '.join(schemes)}, got {parts.scheme or 'none'!r} in {value!r}"
        )
    if not parts.hostname:
        raise ValueError(f"{field}: expected a URL with a host, got {value!r}")
    return value


def check_expire_at(value: Any, *, now: Optional[datetime] = None) -> datetime:
    """A timezone-aware datetime in the future and at most 24 h ahead."""
    if value is None:
        raise ValueError("expire_at: expected a timezone-aware datetime at most 24 h ahead, got None")
    if not isinstance(value, datetime):
        raise TypeError(f"expire_at: expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"expire_at: expected a timezone-aware datetime (e.g. datetime.now(timezone.utc) + timedelta(hours=1)), "
            f"got naive {value.isoformat()}"
        )
    now = now or datetime.now(timezone.utc)
    if value <= now:
        raise ValueError(f"expire_at: expected a time in the future, got {value.isoformat()} (now {now.isoformat()})")
    if value - now > MAX_TOKEN_LIFETIME:
        raise ValueError(f"expire_at: expected at most 24 h ahead, got {value.isoformat()} (now {now.isoformat()})")
    return value


def check_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field}: expected an int, got {type(value).__name__}")
    return value


def check_callback(field: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{field}: expected a callable or None, got {type(value).__name__}")


def check_timeout(field: str, value: Any) -> Optional[float]:
    """A positive, finite number of seconds, or ``None`` for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field}: expected seconds as a number or None, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{field}: expected a positive, finite number of seconds or None, got {value!r}")
    if value > MAX_TIMEOUT:
        raise ValueError(f"{field}: expected at most {MAX_TIMEOUT:.0f} seconds (None for no limit), got {value!r}")
    return float(value)


def check_http_timeout(value: Any) -> Union[Tuple[Optional[float], Optional[float]], None]:
    """``seconds`` or ``(connect, read)`` seconds, as requests takes them."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"http_timeout: expected seconds or a (connect, read) pair, got {value!r}")
        connect = check_timeout("http_timeout[0] (connect)", value[0])
        return connect, check_timeout("http_timeout[1] (read)", value[1])
    seconds = check_timeout("http_timeout", value)
    return None if seconds is None else (seconds, seconds)


def check_config(config: Any) -> SessionConfig:
    """Check every field of a :class:`SessionConfig` that can be checked without I/O."""
    if not isinstance(config, SessionConfig):
        raise TypeError(f"config: expected a SessionConfig, got {type(config).__name__}")
    check_text("avatar_id", config.avatar_id)
    check_text("api_key", config.api_key, secret=True, header=True)
    check_text("app_id", config.app_id, header=True)
    if not isinstance(config.use_query_auth, bool):
        raise TypeError(f"use_query_auth: expected a bool, got {type(config.use_query_auth).__name__}")
    check_expire_at(config.expire_at)
    check_url("console_endpoint_url", config.console_endpoint_url, ("http", "https"))
    check_url("ingress_endpoint_url", config.ingress_endpoint_url, ("http", "https", "ws", "wss"))
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
    return config


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
