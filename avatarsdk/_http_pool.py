"""The token call's kept-alive HTTPS connections, shared by the process's sessions.

:func:`shared_session` gives one ``requests.Session`` per console origin (scheme, host, port) and network
configuration (trust, client certificate, proxy): its connections stay open between calls (at most
:data:`POOL_SIZE` kept per origin; a call beyond them opens one more, closed after use), so a later session's
token call costs one round trip instead of three (TCP, TLS, request). Its TLS context is the process's shared one
(``_tls``): no CA bundle is loaded per connection.

A kept-alive connection the server closed while idle is noticed by urllib3 before reuse (a new one is opened).
When the server closes it just as a request goes out (no answer, the connection was reused), the request is
sent once more on a new connection, transparently. That is the only repeat: a token call is not billed and a
second one only mints another token (the unused one expires), so repeating it after it may have reached the
server is safe; a fresh connection's failure is never repeated here (the token call's ``http_retries`` decide).

Thread-safety: the sessions are shared by threads (urllib3's pools are thread-safe; cookies are not kept, so one
API key's calls never carry another's). Fork-safety: a forked child starts with no session (it never uses the
parent's sockets); the parent's objects are dropped in the child without being shut down.
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Dict, Hashable
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from ._network import NetworkOptions
from ._tls import HTTP, cert_reqs_name

logger = logging.getLogger(__name__)

POOL_SIZE = 4  # kept-alive connections per console origin and configuration

_lock = threading.Lock()
_sessions: Dict[Hashable, requests.Session] = {}


def _reset_after_fork() -> None:
    global _lock, _sessions
    _lock = threading.Lock()
    _sessions = {}  # the parent's sockets are not this process's to use


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def shared_session(url: str, network: NetworkOptions) -> requests.Session:
    """The process's session for calls to ``url``'s origin under ``network`` (made at the first call).

    Raises:
        requests.exceptions.SSLError: a CA bundle or client certificate would not load (as requests reports it).
    """
    parts = urlsplit(url)
    key = (parts.scheme.lower(), parts.netloc.lower(), network)
    session = _sessions.get(key)
    if session is not None:
        return session
    with _lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = _new_session(network, secure=parts.scheme.lower() == "https")
    return session


def close_all() -> None:
    """Close every shared session's connections (for tests and benchmarks: the next call opens new ones)."""
    with _lock:
        sessions = list(_sessions.values())
        _sessions.clear()
    for session in sessions:
        session.close()


def _new_session(network: NetworkOptions, *, secure: bool) -> requests.Session:
    session = requests.Session()
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # keep no cookie
    if secure:
        try:
            context = network.tls_context(HTTP)
        except (OSError, ValueError) as exc:
            raise requests.exceptions.SSLError(exc) from exc
        adapter: HTTPAdapter = _TrustAdapter(context)
    else:
        adapter = _ReusingAdapter()
    session.mount("https://", adapter)
    session.mount("http://", _ReusingAdapter() if secure else adapter)
    return session


class _ReusingAdapter(HTTPAdapter):
    """An adapter with a small pool per origin that repeats a request once when a reused connection turns out
    closed (see the module documentation)."""

    def __init__(self, **pool_kwargs: Any) -> None:
        self._extra = pool_kwargs
        super().__init__(pool_connections=4, pool_maxsize=POOL_SIZE)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs, **self._extra)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return super().proxy_manager_for(proxy, **proxy_kwargs, **self._extra)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        made = self._connections_made()
        try:
            return super().send(request, *args, **kwargs)
        except requests.ConnectionError as exc:
            if not _closed_by_peer(exc) or self._connections_made() != made:
                raise  # not a stale connection: a new one was opened for this request
        logger.debug("a kept-alive connection was closed by the server; sending once more on a new one")
        return super().send(request, *args, **kwargs)

    def _connections_made(self) -> int:
        """Connections opened by this adapter's pools so far (a request that opened none reused one)."""
        managers = [self.poolmanager, *self.proxy_manager.values()]
        total = 0
        for manager in managers:
            pools = manager.pools
            for key in list(pools.keys()):
                pool = pools.get(key)
                total += getattr(pool, "num_connections", 0) if pool is not None else 0
        return total


class _TrustAdapter(_ReusingAdapter):
    """HTTPS with the process's shared context: urllib3 is given no CA file or certificate (they would be
    loaded again per connection), and the context's own verify mode."""

    def __init__(self, context: Any) -> None:
        self._cert_reqs = cert_reqs_name(context)
        super().__init__(ssl_context=context)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        conn.cert_reqs = self._cert_reqs
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> Any:
        """(requests 2.32.2 and later) The pool's key without CA file or certificate: they are in the context."""
        host_params, _ = super().build_connection_pool_key_attributes(request, True, None)
        return host_params, {"cert_reqs": self._cert_reqs}


def _closed_by_peer(exc: BaseException) -> bool:
    """Whether the server closed the connection without answering (not a timeout, refusal or TLS failure)."""
    seen: Any = exc
    for _ in range(16):  # causes, contexts and urllib3's wrapped reasons, innermost last
        if seen is None:
            return False
        if isinstance(seen, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
            return True
        args = getattr(seen, "args", ())
        nested = [a for a in args if isinstance(a, BaseException)]
        seen = seen.__cause__ or seen.__context__ or (nested[-1] if nested else None)
    return False
