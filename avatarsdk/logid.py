"""Request and connection log ids: ``YYYYMMDDHHMMSS_<12-character nanoid>`` (UTC timestamp)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Optional

__all__ = ["generate_log_id"]

LOG_ID_TIME_FORMAT = "%Y%m%d%H%M%S"
LOG_ID_NANOID_LENGTH = 12
# nanoid's URL-safe alphabet: 64 symbols, so a random byte masked to 6 bits picks one without bias.
_ALPHABET = "_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def generate_log_id(now: Optional[datetime] = None) -> str:
    """Return a new log id such as ``"20231215143022_AbC123XyZ456"``.

    Args:
        now: The time to stamp (default: the current UTC time). A naive value is taken as UTC.

    Thread-safety: safe from any thread.
    """
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    suffix = "".join(_ALPHABET[b & 63] for b in os.urandom(LOG_ID_NANOID_LENGTH))
    return f"{now.strftime(LOG_ID_TIME_FORMAT)}_{suffix}"
