"""How a session gets a connection: the token call (after resolving ``region="auto"``, at the first), then the
WebSocket and the handshake (for ``init()`` and ``start()``, and for each reconnect)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable, Optional, Tuple
from urllib.parse import urlsplit

import requests

from . import _upgrade
from ._backoff import NO_RETRIES, Backoff
from ._bootstrap import auto_region, region_endpoints
from ._config_checks import endpoint_fields, secrets_of
from ._connection import Connection
from ._core import Core
from ._faults import connect_failed, describe
from ._http_pool import shared_session
from ._lifecycle import State
from ._preconnect import Ahead, Outcome, Preconnect, close_outcome
from ._token import reason_of, request_session_token, transport_error
from ._validation import token_expiry
from .errors import PHASE_SESSION_TOKEN, AvatarSDKError, AvatarSDKErrorCode
from .regions import AUTO_REGION

logger = logging.getLogger(__name__)


class Connector:
    """Token calls (over the process's kept-alive connections to the console, ``_http_pool``) and connects,
    for one session; the ingress connection opened ahead while a token call runs (``_preconnect``)."""

    __slots__ = ("_auto", "_core", "ahead")

    def __init__(self, core: Core) -> None:
        self._core = core
        self.ahead = Ahead()  # the connection opened by token(), taken by the next connect
        config = core.config
        self._auto = config.region == AUTO_REGION and not (config.console_endpoint_url and config.ingress_endpoint_url)

    def token(self, retry: Backoff) -> str:
        """A session token from the console (``ValueError``: ``expire_at`` has passed), valid until
        ``expire_at`` or, without one, for an hour from now. The ingress connection is opened meanwhile (not
        upgraded: nothing is billed) for the next :meth:`connect`; a failed call closes it."""
        config = self._core.config
        given = None if config.expire_at is None else token_expiry(config.expire_at)  # passed: fails before I/O
        if self._auto:
            self._resolve_region()
        self._preconnect()
        try:
            telemetry = self._core.telemetry
            if telemetry is not None:
                url = config.console_endpoint_url
                return telemetry.session_init(url, lambda on_attempt: self._token(retry, given, on_attempt))
            return self._token(retry, given, None)
        except BaseException:
            self.discard()
            raise

    def _preconnect(self) -> None:
        """Open the ingress connection ahead (replacing one not taken), where websocket-client's connect can be
        given one."""
        self.discard()
        core = self._core
        if not _upgrade.OWN_UPGRADE or core.forked():
            return
        options = core.options
        url = core.ingress.target("-")[0].split("?", 1)[0]
        try:
            ws_options = options.network.websocket_options(secure=url.startswith("wss:"))
        except (OSError, ValueError):
            return  # start() reports it
        self.ahead.swap(
            Preconnect(
                url,
                lambda target, timeout: _upgrade.preconnect(target, timeout, ws_options),
                options.connect_timeout,
                f"avatarsdk-preconnect-{core.number}",
            )
        )

    def discard(self) -> None:
        """Close the connection opened ahead, if any was not taken."""
        self.ahead.discard()

    def _http(self, url: str) -> requests.Session:
        """The process's kept-alive session for ``url`` (``SessionTokenError``: its TLS files would not load)."""
        try:
            return shared_session(url, self._core.options.network)
        except requests.RequestException as exc:
            host = urlsplit(url).netloc
            raise transport_error(f"could not reach {host} for a session token ({reason_of(exc)})", exc) from None

    def _token(self, retry: Backoff, given: Optional[datetime], on_attempt: Optional[Callable[[int], None]]) -> str:
        config, options = self._core.config, self._core.options
        return request_session_token(
            config.console_endpoint_url,
            api_key=config.api_key,
            app_id=config.app_id,
            route=config.token_route or "console",
            expire_at=given or token_expiry(None),  # an hour from this call
            timeout=options.http_timeout,
            retry=retry,
            http=self._http(config.console_endpoint_url),
            request_options=options.network.requests_kwargs(),
            on_attempt=on_attempt,
        )

    def _resolve_region(self) -> None:
        """``region="auto"``: ask the bootstrap service (or its cache) and fill in the URLs not given, once."""
        core = self._core
        config, options = core.config, core.options
        region = auto_region(
            config.app_id,
            url=options.bootstrap_url,
            http=self._http(options.bootstrap_url),
            request_options=options.network.requests_kwargs(),
        )
        endpoints = region_endpoints(region)
        with core.lock:
            fields = endpoint_fields(config, endpoints)
            for name, value in fields.items():
                setattr(config, name, value)
            self._auto = False
        logger.debug("session #%d: region %s (%s)", core.number, region, ", ".join(sorted(fields)) or "no URL taken")

    def reconnect_token(self) -> str:
        """A session token for a reconnect (the reconnect's own backoff stands in for the token call's retries)."""
        try:
            return self.token(NO_RETRIES)
        except ValueError:
            raise AvatarSDKError(
                AvatarSDKErrorCode.sessionTokenExpired,
                "cannot reconnect: the session's expire_at has passed",
                phase=PHASE_SESSION_TOKEN,
            ) from None

    def connect(self, token: str, state: State) -> Tuple[Connection, Tuple[str, Tuple[str, ...]]]:
        """:meth:`_connect`, in a span if traced."""
        telemetry = self._core.telemetry
        if telemetry is not None:
            return telemetry.session_start(lambda: self._connect(token, state))
        return self._connect(token, state)

    def _connect(self, token: str, state: State) -> Tuple[Connection, Tuple[str, Tuple[str, ...]]]:
        """Open a connection with ``token`` and complete the handshake (for ``start()`` and reconnects, while the
        session is in ``state``); return it with what its confirmation said: its id and the server's
        capabilities. A ``close()`` meanwhile
        shuts the connection down (the handshake then fails) or, before it is open, makes this raise
        ``ValueError``."""
        core = self._core
        options = core.options
        url, headers = core.ingress.target(token)
        pre = self.ahead.swap(None)
        preconnected: Outcome = None
        if pre is not None:
            timeout = options.connect_timeout
            preconnected = pre.take(url, None if timeout is None else timeout + 1.0)
        try:
            ws_options = options.network.websocket_options(secure=url.startswith("wss:"))
        except (OSError, ValueError) as exc:
            close_outcome(preconnected)
            raise connect_failed(f"could not connect to {urlsplit(url).netloc}: {describe(exc)}") from exc
        conn = Connection.open(
            url,
            headers,
            connect_timeout=options.connect_timeout,
            secrets=secrets_of(core.config, token),
            max_message_size=options.max_message_size,
            options=ws_options,
            keepalive=options.keepalive,
            preconnected=preconnected,
        )
        with core.lock:
            closing = core.state is not state
            if not closing:
                core.conn = conn  # close() meanwhile shuts it down, cutting the handshake short
        if closing:
            conn.close()
            raise ValueError("the session was closed while connecting")
        try:
            confirmed = core.ingress.handshake(conn, options.handshake_timeout)
            conn.set_timeout(options.send_timeout)
        except BaseException:
            conn.close()
            raise
        return conn, confirmed

    def close(self) -> None:
        """Release what the session holds beyond its connections: the connection opened ahead, if not taken
        (the token calls' kept-alive connections are the process's, shared)."""
        self.discard()
