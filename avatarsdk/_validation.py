"""Checks on single values of user input, run before any I/O. Each failure names the field and what was expected.

The checks of a whole :class:`~avatarsdk.SessionConfig` are in ``_config_checks``; these depend on nothing else
in the package, so every module may use them.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Tuple, Union
from urllib.parse import urlsplit

PCM_SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
OGG_OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
MAX_TOKEN_LIFETIME = timedelta(hours=24)
DEFAULT_TOKEN_LIFETIME = timedelta(hours=1)  # a token call's expireAt when expire_at is None
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


def token_expiry(value: Any, *, now: Optional[datetime] = None) -> datetime:
    """The ``expireAt`` of a token call made ``now``: ``value`` checked, or one hour ahead when it is ``None``."""
    if value is None:
        return (now or datetime.now(timezone.utc)) + DEFAULT_TOKEN_LIFETIME
    return check_expire_at(value, now=now)


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
