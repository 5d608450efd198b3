"""What the hosting server must allow: a uWSGI worker without threads never runs a session's threads.

uWSGI runs Python without threads unless started with ``--enable-threads`` (or ``--threads N``): the reader
and dispatcher threads of a session are then created but never scheduled between requests, so frames stall
and keepalive pings go unanswered. There is no error to catch; :func:`check_server` logs a warning, once per
process, when it finds itself inside such a worker.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Mapping

logger = logging.getLogger("avatarsdk")

_warned = False
_OFF = {"", "0", "false", "no", "off"}


def check_server() -> None:
    """Warn (once) when running in a uWSGI worker whose Python threads are off."""
    global _warned
    uwsgi = sys.modules.get("uwsgi")  # only importable inside uWSGI, which imports it first
    if _warned or uwsgi is None:
        return
    if threads_enabled(getattr(uwsgi, "opt", {})):
        return
    _warned = True
    logger.warning(
        "uWSGI runs this worker without Python threads: avatarsdk sessions need them (their reader and"
        " dispatcher threads would not run). Start uWSGI with --enable-threads (or --threads N)"
    )


def threads_enabled(opt: Mapping[str, Any]) -> bool:
    """Whether uWSGI's options (``uwsgi.opt``: names to ``True`` or bytes values) turn Python threads on."""
    if _flag(opt.get("enable-threads")):
        return True
    threads = opt.get("threads")
    if isinstance(threads, (list, tuple)):
        threads = threads[-1] if threads else None
    try:
        return threads is not None and int(threads.decode() if isinstance(threads, bytes) else threads) > 0
    except (TypeError, ValueError):
        return False


def _flag(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else None
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text.strip().lower() not in _OFF
