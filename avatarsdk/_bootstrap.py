"""``region="auto"``: the bootstrap call that names an app's region, and the process-wide cache of its answers.

:func:`auto_region` asks ``POST {bootstrap}`` with ``{"app_id", "sdk_version", "region": "auto", "platform":
"python"}`` and reads ``region.current``. :class:`RegionCache` keeps each answer 300 s per bootstrap URL and app
id, lets one call run at a time per key (threads arriving meanwhile share its outcome), and on a failure falls
back to the last answer, else to ``us-west``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, Hashable, Optional, Tuple
from urllib.parse import urlsplit

import requests

from ._token import read_limited, reason_of
from ._version import __version__
from .regions import AUTO_REGION, DEFAULT_REGION, REGION_NAME, REGIONS, Endpoints

logger = logging.getLogger(__name__)

BOOTSTRAP_TIMEOUT = 5.0  # seconds to connect, and seconds for the answer
CACHE_SECONDS = 300.0
MAX_ANSWER_BYTES = 64 * 1024


class _Entry:
    """One key's answers: the last good one and when it came, and the last call's outcome."""

    __slots__ = ("calls", "lock", "outcome", "region", "waiting", "when")

    def __init__(self) -> None:
        self.lock = threading.Lock()  # one call at a time for this key
        self.region: Optional[str] = None
        self.when = 0.0
        self.calls = 0
        self.waiting = 0  # callers between arriving and taking ``lock`` (under the cache's lock)
        self.outcome: Tuple[str, str] = ("", "")


class RegionCache:
    """The bootstrap's answers by key, each fresh for ``ttl`` seconds of ``clock``.

    Thread-safety: :meth:`resolve` may be called from any thread; a key's call runs under that key's lock,
    so concurrent callers of one key wait for it (at most its timeout) instead of calling again.
    """

    def __init__(self, ttl: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()  # over _entries
        self._entries: Dict[Hashable, _Entry] = {}

    def resolve(self, key: Hashable, call: Callable[[], Optional[str]]) -> Tuple[str, str]:
        """The region for ``key`` and where it came from: a fresh answer, else ``call()`` (``None``: it
        failed), else the outcome of a call made while this one waited, else the last answer, else
        ``us-west``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            calls_before = entry.calls
            entry.waiting += 1
        with entry.lock:
            with self._lock:
                entry.waiting -= 1
            if entry.region is not None and self._clock() - entry.when < self._ttl:
                return entry.region, "cached"
            if entry.calls != calls_before:
                return entry.outcome  # a call failed while this one waited: no second call
            answer = call()
            entry.calls += 1
            if answer is not None:
                entry.region, entry.when = answer, self._clock()
                entry.outcome = (answer, "bootstrap")
            elif entry.region is not None:
                entry.outcome = (entry.region, "the last answer, after a failed call")
            else:
                entry.outcome = (DEFAULT_REGION, "the default, after a failed call")
            return entry.outcome

    def waiting(self, key: Hashable) -> int:
        """How many callers of ``key`` wait for its lock now (for tests and debugging)."""
        with self._lock:
            entry = self._entries.get(key)
            return 0 if entry is None else entry.waiting

    def after_fork(self) -> None:
        """In a forked child: new locks (the parent's may have been held at the fork), the answers kept."""
        self._lock = threading.Lock()
        for entry in self._entries.values():
            entry.lock = threading.Lock()


CACHE = RegionCache()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=CACHE.after_fork)


def auto_region(
    app_id: str,
    *,
    url: str,
    http: Optional[requests.Session] = None,
    request_options: Optional[Dict[str, Any]] = None,
    timeout: float = BOOTSTRAP_TIMEOUT,
    cache: RegionCache = CACHE,
) -> str:
    """The region the bootstrap service at ``url`` names for ``app_id`` (see the module documentation).

    Never raises for the call's failures: they are logged at DEBUG and the fallback is returned.
    """
    region, source = cache.resolve(
        (url, app_id), lambda: _ask(url, app_id, http=http, options=request_options or {}, timeout=timeout)
    )
    logger.debug("region auto: %s (%s)", region, source)
    return region


def region_endpoints(region: str) -> Endpoints:
    """The endpoints of a region the bootstrap named: the table's, else the documented pattern's."""
    return REGIONS.get(region) or Endpoints.of_region(region)


def _ask(
    url: str, app_id: str, *, http: Optional[requests.Session], options: Dict[str, Any], timeout: float
) -> Optional[str]:
    """One bootstrap call: the region it names, or ``None`` (logged) when it failed."""
    host = urlsplit(url).netloc
    payload = {"app_id": app_id, "sdk_version": __version__, "region": AUTO_REGION, "platform": "python"}
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    logger.debug("region auto: asking %s", host)
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            client = http if http is not None else stack.enter_context(requests.Session())
            resp = stack.enter_context(
                client.post(
                    url, data=json.dumps(payload), headers=headers, timeout=(timeout, timeout), stream=True, **options
                )
            )
            status = resp.status_code
            body = read_limited(resp, MAX_ANSWER_BYTES)
    except requests.RequestException as exc:
        logger.debug("region auto: the call to %s failed (%s)", host, reason_of(exc))
        return None
    took = time.monotonic() - started
    if status != 200:
        logger.debug("region auto: %s answered HTTP %d in %.3fs", host, status, took)
        return None
    region = _region_of(body)
    if region is None:
        logger.debug("region auto: %s answered without a usable region.current (%s)", host, _shape(body))
    else:
        logger.debug("region auto: %s named %r in %.3fs", host, region, took)
    return region


def _region_of(body: Optional[bytes]) -> Optional[str]:
    """``region.current`` of an answer, if it is a region name."""
    try:
        document = json.loads(body or b"")
    except ValueError:
        return None
    region = document.get("region") if isinstance(document, dict) else None
    current = region.get("current") if isinstance(region, dict) else None
    if isinstance(current, str) and REGION_NAME.fullmatch(current):
        return current
    return None


def _shape(body: Optional[bytes]) -> str:
    """What an unusable answer was, without its content."""
    if body is None:
        return f"over {MAX_ANSWER_BYTES} bytes"
    return f"{len(body)} bytes"
