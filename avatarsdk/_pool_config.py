"""A pool's arguments, checked once when it is made: its size, token times and retirement times, and its
sessions' template.

:class:`PoolConfig` is what every :class:`~avatarsdk._pool_lender.Lender` of a pool is made from (one per
process: a forked child's pool makes its own from the same config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

from ._config_checks import check_config, copy_config
from ._ingress import ingress_for
from ._network import NetworkOptions, warn_insecure_transport
from ._options import Options
from ._sender import AudioOut
from ._validation import check_int
from .session_config import ErrorCallback, SessionConfig

MAX_TOKEN_LIFETIME = 86400.0


@dataclass(frozen=True)
class PoolConfig:
    """A pool's settings, checked.

    Attributes:
        max_size, min_idle: As given to the pool.
        lifetime, margin: ``token_lifetime`` and ``refresh_margin``, in seconds.
        max_idle, max_age: ``max_idle_time`` and ``max_session_age``, in seconds (``None``: no limit).
        template: Every session's configuration (``expire_at``, ``on_error`` and ``on_close`` are set per session).
        options: Every session's options.
        on_error: The pool's ``on_error`` (``None``: none).
        number: The pool's number, for its thread's name and its log.
    """

    max_size: int
    min_idle: int
    lifetime: float
    margin: float
    template: SessionConfig
    options: Options
    on_error: Optional[ErrorCallback]
    number: int
    max_idle: Optional[float] = None
    max_age: Optional[float] = None


def check_limits(max_size: int, min_idle: int, token_lifetime: object, refresh_margin: object) -> Tuple[float, float]:
    """Check the pool's size and token times; the token lifetime and the refresh margin, in seconds."""
    if check_int("max_size", max_size) < 1:
        raise ValueError(f"max_size: expected at least 1, got {max_size!r}")
    if not 0 <= check_int("min_idle", min_idle) <= max_size:
        raise ValueError(f"min_idle: expected 0 to max_size ({max_size}), got {min_idle!r}")
    lifetime = _seconds("token_lifetime", token_lifetime)
    if not 1 <= lifetime <= MAX_TOKEN_LIFETIME:
        raise ValueError(f"token_lifetime: expected 1 to {MAX_TOKEN_LIFETIME:.0f} seconds, got {token_lifetime!r}")
    margin = _seconds("refresh_margin", refresh_margin)
    if not 0 <= margin < lifetime:
        raise ValueError(
            f"refresh_margin: expected 0 or more seconds, less than token_lifetime ({lifetime:g}),"
            f" got {refresh_margin!r}"
        )
    return lifetime, margin


def check_retirement(max_idle_time: object, max_session_age: object) -> Tuple[Optional[float], Optional[float]]:
    """Check the times after which the pool closes a session; both in seconds, or ``None`` for no limit."""
    max_idle = None if max_idle_time is None else _seconds("max_idle_time", max_idle_time, " or None")
    if max_idle is not None and max_idle < 0:
        raise ValueError(f"max_idle_time: expected 0 or more seconds, or None, got {max_idle_time!r}")
    max_age = None if max_session_age is None else _seconds("max_session_age", max_session_age, " or None")
    if max_age is not None and max_age <= 0:
        raise ValueError(f"max_session_age: expected more than 0 seconds, or None, got {max_session_age!r}")
    return max_idle, max_age


def session_template(config: SessionConfig, network: Optional[NetworkOptions] = None) -> SessionConfig:
    """The sessions' configuration checked once, with its warnings (no I/O); a copy, so that later changes to
    the caller's objects do not reach it. The TLS contexts of ``network`` are built here, as a session's are."""
    template = copy_config(check_config(config))
    ingress_for(template)  # v1's limits (and its deprecation, said once, here)
    AudioOut(template)  # the Ogg Opus encoder needs PyAV: fail here, before I/O
    warn_insecure_transport(
        template.console_endpoint_url, template.ingress_endpoint_url, use_query_auth=template.use_query_auth
    )
    if network is not None:
        network.prepare_tls(template.console_endpoint_url or None, template.ingress_endpoint_url or None)
    return template


def _seconds(field: str, value: object, alternative: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field}: expected seconds as a number{alternative}, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{field}: expected a finite number of seconds, got {value!r}")
    return float(value)
